"""Pickle-free training state: tensors in safetensors, everything else in JSON, written atomically.

Every checkpoint folder carries `checksums.json` (size and sha256 of each file), so a truncated, edited or swapped
file is refused by name instead of being loaded. A folder being written is locked, so two processes never interleave.
"""

import hashlib
import json
import os
import shutil
import socket
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .errors import CheckpointError

MANIFEST = "checksums.json"
LOCK = ".lock"


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


# ----------------------------------------------------------------------------- checksums


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(folder: Path) -> list[str]:
    """Files a checksum covers: everything below `folder` but the manifest itself and hidden files (.lock)."""
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")
    )


def write_manifest(folder: Path):
    folder = Path(folder)
    files = {rel: {"bytes": (folder / rel).stat().st_size, "sha256": _sha256(folder / rel)} for rel in _files(folder)}
    (folder / MANIFEST).write_text(json.dumps(files, indent=1))


def verify_manifest(folder: Path):
    """Refuse a checkpoint whose files differ from what was written. Folders without a manifest (written before
    checksums existed) are accepted as they are."""
    folder = Path(folder)
    if not (folder / MANIFEST).exists():
        return
    try:
        files = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"{folder / MANIFEST}: unreadable ({type(exc).__name__}); the checkpoint is damaged"
        ) from None
    for rel, want in files.items():
        path = folder / rel
        if not path.exists():
            raise CheckpointError(f"{path}: missing from the checkpoint (listed in {MANIFEST})")
        size = path.stat().st_size
        if size != want["bytes"]:
            raise CheckpointError(f"{path}: {size} bytes but {want['bytes']} were written (truncated or replaced)")
        if _sha256(path) != want["sha256"]:
            raise CheckpointError(f"{path}: changed since the checkpoint was written (sha256 differs from {MANIFEST})")
    extra = [rel for rel in _files(folder) if rel not in files]
    if extra:
        raise CheckpointError(
            f"{folder / extra[0]}: not part of the checkpoint as written ({len(extra)} such files); "
            f"remove them or copy the checkpoint again"
        )


# ----------------------------------------------------------------------------- atomic folders


def recover(final: Path):
    """Finish an atomic_dir_write killed between its two renames: the previous checkpoint is complete in `.old`."""
    final = Path(final)
    old = final.with_name(final.name + ".old")
    if not final.exists() and old.exists():
        old.rename(final)


def atomic_dir_write(final: Path, write) -> Path:
    """Call write(tmp_dir), add its checksums, then swap tmp_dir into place, so a kill at any moment leaves either
    the old or the new checkpoint (`recover` completes a swap cut between its renames)."""
    final = Path(final)
    recover(final)
    tmp, old = final.with_name(final.name + ".tmp"), final.with_name(final.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    write_manifest(tmp)
    shutil.rmtree(old, ignore_errors=True)  # left by a kill during the last clean-up; `final` is complete
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


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable ({type(exc).__name__}: {str(exc)[:120]})") from None


def load_state(path: Path, optimizer: torch.optim.Optimizer) -> dict:
    """Optimizer state and train_state.json of a checkpoint (whose checksums the caller has verified)."""
    try:
        info = json.loads((path / "train_state.json").read_text())
        meta = json.loads((path / "optimizer.json").read_text())
        optimizer.load_state_dict(unflatten_optimizer(load_file(str(path / "optimizer.safetensors")), meta))
    except Exception as exc:
        raise CheckpointError(
            f"{path}: cannot resume training state ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None
    return info


# ----------------------------------------------------------------------------- locks


@contextmanager
def run_lock(folder: Path):
    """Hold `folder` exclusively while this process writes it; a second process gets a CheckpointError naming the
    holder. The kernel drops the lock when its holder ends in any way (SIGKILL included), so none goes stale.
    POSIX only (fcntl)."""
    import fcntl  # POSIX only: imported here, so that the module still imports where there is none

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise CheckpointError(
                f"{folder}: in use by {holder}; wait for it to finish or use another folder"
            ) from None
        f.truncate(0)
        f.write(f"process {os.getpid()} on {socket.gethostname()}")
        f.flush()
        yield


def process_rank() -> int:
    """This process's rank under torchrun, accelerate or MPI (0 when launched alone), read from the environment as
    accelerate does: asking accelerate would fix its distributed set-up before the caller's own Accelerator."""
    for var in ("RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK", "PMI_RANK"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def main_process_lock(folder: Path):
    """run_lock in the main process only: the other processes of one accelerate/torchrun job share its folder."""
    return run_lock(folder) if process_rank() == 0 else nullcontext()
