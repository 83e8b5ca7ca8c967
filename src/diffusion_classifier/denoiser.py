"""The class-conditional denoiser: a diffusers UNet2DModel with one class embedding per class plus a
"null" label (index n_classes) for the unconditional prediction, together with its noise schedule.

`Denoiser` is the one interface the scoring engine, the explanation maps and the sampler use:
    encode(x)                 image -> the space the diffusion runs in (identity here; the VAE for Stable Diffusion)
    predict(x_t, u, labels)   the network's raw prediction (eps, v or x0, per schedule.prediction_type)
    forward(x_t, u, labels)   the same: training calls the module (through the DDP wrapper with several processes)
Checkpoints are diffusers folders (config.json + safetensors) plus `denoiser.json` with the schedule and
class names, and `checksums.json`: loading never unpickles, and refuses files changed since they were written.
"""

import json
from pathlib import Path

import torch
from diffusers import UNet2DModel

from .checkpointing import verify_manifest, write_manifest
from .errors import CheckpointError
from .schedules import build_schedule

META_FILE = "denoiser.json"


def build_unet(cfg: dict, in_channels: int, n_classes: int) -> UNet2DModel:
    u = cfg["unet"]
    n = len(u["block_out_channels"])
    attn = set(u["attention_levels"])
    down = tuple("AttnDownBlock2D" if i in attn else "DownBlock2D" for i in range(n))
    up = tuple("AttnUpBlock2D" if (n - 1 - i) in attn else "UpBlock2D" for i in range(n))
    return UNet2DModel(
        sample_size=cfg["data"]["resolution"],
        in_channels=in_channels,
        out_channels=in_channels,
        block_out_channels=tuple(u["block_out_channels"]),
        layers_per_block=u["layers_per_block"],
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=u["norm_num_groups"],
        dropout=u["dropout"],
        num_class_embeds=n_classes + 1,  # + the null label
    )


class Denoiser(torch.nn.Module):
    def __init__(self, unet: UNet2DModel, cfg: dict, class_names: list[str]):
        super().__init__()
        self.unet, self.cfg, self.class_names = unet, cfg, list(class_names)
        self.schedule = build_schedule(cfg)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def null_label(self) -> int:
        return self.n_classes

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def predict(self, x_t: torch.Tensor, u: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.unet(x_t, self.schedule.model_time(u), class_labels=labels).sample

    def forward(self, x_t, u, labels):
        return self.predict(x_t, u, labels)

    # ------------------------------------------------------------------ checkpoints
    def save(self, path) -> Path:
        path = Path(path)
        self.unet.save_pretrained(path, safe_serialization=True)
        meta = {
            "class_names": self.class_names,
            "cfg": {k: self.cfg[k] for k in ("data", "diffusion", "unet")},
            "profile": self.cfg.get("profile"),
            "task": self.cfg.get("task"),
        }
        (path / META_FILE).write_text(json.dumps(meta, indent=1))
        write_manifest(path)
        return path

    def load_trainable(self, path):
        """Load the weights of a checkpoint folder into this model (same architecture required)."""
        from safetensors.torch import load_file

        verify_manifest(path)
        files = sorted(Path(path).glob("*.safetensors"))
        if not files:
            raise CheckpointError(f"{path}: no safetensors weights found")
        try:
            weights = load_file(str(files[0]))
        except Exception as exc:
            raise CheckpointError(
                f"{files[0]}: unreadable safetensors ({type(exc).__name__}: {str(exc)[:200]})"
            ) from None
        try:
            self.unet.load_state_dict(weights)
        except Exception as exc:
            raise CheckpointError(
                f"{path}: does not match this configuration ({type(exc).__name__}: {str(exc)[:200]})"
            ) from None
        return self

    @classmethod
    def load(cls, path, expect_classes: list[str] | None = None) -> "Denoiser":
        path = Path(path)
        if not (path / META_FILE).exists() or not (path / "config.json").exists():
            hint = f"; the model is in {path / 'ema'}" if (path / "ema" / META_FILE).exists() else ""
            raise CheckpointError(f"{path}: not a denoiser checkpoint (needs {META_FILE} and config.json){hint}")
        verify_manifest(path)
        try:
            meta = json.loads((path / META_FILE).read_text())
            unet = UNet2DModel.from_pretrained(path, use_safetensors=True)
        except Exception as exc:  # diffusers raises many types for truncated or mismatched files
            raise CheckpointError(f"{path}: cannot load checkpoint ({type(exc).__name__}: {str(exc)[:200]})") from None
        if expect_classes is not None and list(expect_classes) != meta["class_names"]:
            raise CheckpointError(f"{path}: trained for classes {meta['class_names']}, not {list(expect_classes)}")
        cfg = dict(meta["cfg"], profile=meta.get("profile"), task=meta.get("task"))
        return cls(unet, cfg, meta["class_names"]).eval()
