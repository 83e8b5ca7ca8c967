"""Pickle-free training state: tensors in safetensors, everything else in JSON, written atomically."""
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .errors import CheckpointError


def flatten_optimizer(state: dict) -> tuple[dict, dict]:
    tensors, meta = {}, {"param_groups": state["param_groups"], "scalars": {}}
    for pid, pstate in state["state"].items():
        for name, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{name}"] = value.contiguous()
            else:
                meta["scalars"][f"{pid}.{name}"] = value
    return tensors, meta


def unflatten_optimizer(tensors: dict, meta: dict) -> dict:
    state = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def atomic_dir_write(final: Path, write) -> Path:
    """Call write(tmp_dir), then swap tmp_dir into place, so a kill never leaves a half-written checkpoint."""
    final = Path(final)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    old = final.with_name(final.name + ".old")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def save_state(path: Path, optimizer: torch.optim.Optimizer, info: dict):
    tensors, meta = flatten_optimizer(optimizer.state_dict())
    save_file(tensors, str(path / "optimizer.safetensors"))
    (path / "optimizer.json").write_text(json.dumps(meta))
    (path / "train_state.json").write_text(json.dumps(info))


def load_state(path: Path, optimizer: torch.optim.Optimizer) -> dict:
    try:
        info = json.loads((path / "train_state.json").read_text())
        meta = json.loads((path / "optimizer.json").read_text())
        optimizer.load_state_dict(unflatten_optimizer(load_file(str(path / "optimizer.safetensors")), meta))
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot resume training state ({type(exc).__name__}: {str(exc)[:200]})") from None
    return info
