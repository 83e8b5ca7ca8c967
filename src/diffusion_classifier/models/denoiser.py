"""The class-conditional denoiser: a diffusers network that takes a class label, with one extra "null" label
(index n_classes) for the unconditional prediction, together with its noise schedule.

Backbones (the profile's `model.kind`, one entry of `BACKBONES`):
    unet       diffusers UNet2DModel, the label through a class embedding added to the time embedding (default)
    unet_cond  diffusers UNet2DConditionModel, the label as one cross-attention token (the authors' UNet)
    dit        diffusers DiTTransformer2DModel with adaLN-Zero, the label through its own label embedding (DiT-B/4)
Input space (the profile's `data.wavelet`): "none" (pixels) or "haar" (wavelet.py: the authors' one-level Haar
transform, 4x the channels at half the resolution). The network is built for that space.

`Denoiser` is the one interface the scoring engine, the explanation maps and the sampler use:
    encode(x)                 image -> the space the diffusion runs in (pixels or Haar coefficients; the VAE for
                              Stable Diffusion)
    decode(z)                 the way back (clipped to the image range [-1, 1] for Haar, as the VAE's decode)
    predict(x_t, u, labels)   the network's raw prediction (eps, v or x0, per schedule.prediction_type)
    forward(x_t, u, labels)   the same: training calls the module (through the DDP wrapper with several processes)
Checkpoints are diffusers folders (config.json + safetensors) plus `denoiser.json` with the backbone kind, the
schedule and class names, and `checksums.json`: loading never unpickles, and refuses files changed since they were
written. Checkpoints from before backbones had kinds are UNets in pixel space and still load.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DiTTransformer2DModel, UNet2DConditionModel, UNet2DModel

from ..core.checkpoints import verify_manifest, write_manifest
from ..core.errors import CheckpointError
from .schedules import build_schedule
from .stages import unet_stages
from .wavelet import haar_forward, haar_inverse

META_FILE = "denoiser.json"
WAVELETS = ("none", "haar")
DEFAULT_MODEL = {"kind": "unet"}  # what a checkpoint or profile without a "model" section holds


# ----------------------------------------------------------------------------- the input space


def wavelet_of(cfg: dict) -> str:
    wavelet = cfg["data"].get("wavelet", "none")
    if wavelet not in WAVELETS:
        raise ValueError(f"data.wavelet must be one of {WAVELETS}, got {wavelet!r}")
    return wavelet


def network_input(cfg: dict, image_channels: int) -> tuple[int, int]:
    """(channels, size) of what the network sees: the image's, or for Haar 4x the channels at half the size."""
    res = cfg["data"]["resolution"]
    if wavelet_of(cfg) == "none":
        return image_channels, res
    if res % 2:
        raise ValueError(f"data.wavelet 'haar' needs an even data.resolution, got {res}")
    return 4 * image_channels, res // 2


# ----------------------------------------------------------------------------- the backbones
# Every builder takes the *image* channels and sizes the network for the input space itself.


def _unet_args(cfg: dict, in_channels: int, down_attn: str, up_attn: str) -> dict:
    """The arguments both UNet classes share, from the `unet` section: input size and channels, widths, layers,
    norms, dropout, and the block types with `down_attn` / `up_attn` blocks at the attention levels."""
    u = cfg["unet"]
    channels, size = network_input(cfg, in_channels)
    n, attn = len(u["block_out_channels"]), set(u["attention_levels"])
    return {
        "sample_size": size,
        "in_channels": channels,
        "out_channels": channels,
        "block_out_channels": tuple(u["block_out_channels"]),
        "layers_per_block": u["layers_per_block"],
        "down_block_types": tuple(down_attn if i in attn else "DownBlock2D" for i in range(n)),
        "up_block_types": tuple(up_attn if (n - 1 - i) in attn else "UpBlock2D" for i in range(n)),
        "norm_num_groups": u["norm_num_groups"],
        "dropout": u["dropout"],
    }


def build_unet(cfg: dict, in_channels: int, n_classes: int) -> UNet2DModel:
    return UNet2DModel(
        **_unet_args(cfg, in_channels, "AttnDownBlock2D", "AttnUpBlock2D"),
        num_class_embeds=n_classes + 1,  # + the null label
    )


def build_unet_cond(cfg: dict, in_channels: int, n_classes: int) -> UNet2DConditionModel:
    """The `unet` section's channels, layers and norms; cross-attention blocks at its attention_levels (the middle
    block always has one, so the class reaches the network even without them).

    The class token: the authors embed the label with a table of n_classes + 1 vectors and pass that through the
    model's "text_proj" Linear. Here the one-hot label goes through that Linear, which *is* a learned table of
    n_classes + 1 tokens (its weight columns, plus a shared bias) and keeps the whole model one diffusers class
    and one checkpoint."""
    c = cfg["unet_cond"]
    return UNet2DConditionModel(
        **_unet_args(cfg, in_channels, "CrossAttnDownBlock2D", "CrossAttnUpBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        cross_attention_dim=c["cross_attention_dim"],
        # diffusers' `attention_head_dim` of this class is the number of heads (diffusers issue #2011)
        attention_head_dim=c["num_attention_heads"],
        encoder_hid_dim=n_classes + 1,  # the one-hot label, null label included
        encoder_hid_dim_type="text_proj",
    )


def set_dit_class_dropout(dit: DiTTransformer2DModel, p: float):
    """diffusers' DiT label embedding (LabelEmbedding inside every block's adaLN-Zero, built with a hard-coded
    class_dropout_prob 0.1) replaces labels by its null index in training mode, drawing from torch's global
    generator, independently in every block and in the output layer. Our training loop already drops labels to
    the null label, seeded, so this is off unless `dit.class_dropout` asks for it (the authors trained with 0.1)."""
    for block in dit.transformer_blocks:
        labels = block.norm1.emb.class_embedder
        if labels.embedding_table.num_embeddings != labels.num_classes + 1:
            raise RuntimeError("this diffusers DiT has no null-label row: the null label would be out of range")
        labels.dropout_prob = float(p)


def build_dit(cfg: dict, in_channels: int, n_classes: int) -> DiTTransformer2DModel:
    """Labels go in directly. num_embeds_ada_norm = n_classes makes diffusers' own null index (its extra table row)
    our null label n_classes, so the null label is a real, trained row, also for diffusers' dropout. (The authors
    set 1000: rows n_classes..999 then exist unused and diffusers' dropout trains row 1000, never used to score.)"""
    d = cfg["dit"]
    channels, size = network_input(cfg, in_channels)
    if size % d["patch_size"]:
        raise ValueError(f"the DiT input ({size} px) must be a multiple of dit.patch_size {d['patch_size']}")
    dit = DiTTransformer2DModel(
        num_attention_heads=d["num_attention_heads"],
        attention_head_dim=d["attention_head_dim"],
        in_channels=channels,
        out_channels=channels,  # this diffusers DiT has no learned sigma: its output is the prediction alone
        num_layers=d["num_layers"],
        dropout=d["dropout"],
        sample_size=size,
        patch_size=d["patch_size"],
        num_embeds_ada_norm=n_classes,
        norm_type="ada_norm_zero",
    )
    set_dit_class_dropout(dit, d["class_dropout"])
    return dit


def _unet_cond_stages(net) -> list:
    stages = unet_stages(net)
    name, modules = stages[-1]
    return stages[:-1] + [(name, modules + [net.encoder_hid_proj])]  # the class tokens are an input embedding


def _dit_stages(net) -> list:
    """Output layer, transformer blocks from the last to the first, patch embedding. Each block holds its own time
    and label embedding; the output layer reuses block 0's, so it changes again with the last stage."""
    stages = [("output", [net.proj_out_1, net.proj_out_2])]
    stages += [(f"transformer_blocks.{i}", [b]) for i, b in reversed(list(enumerate(net.transformer_blocks)))]
    return stages + [("input", [net.pos_embed])]


def _call_unet(net, x_t, time, labels):
    return net(x_t, time, class_labels=labels).sample


def _call_unet_cond(net, x_t, time, labels):
    token = F.one_hot(labels, net.config.encoder_hid_dim).to(x_t.dtype)[:, None]  # (B, 1, n_classes + 1)
    return net(x_t, time, encoder_hidden_states=token).sample


def _call_dit(net, x_t, time, labels):
    return net(x_t, timestep=time, class_labels=labels).sample


@dataclass(frozen=True)
class Backbone:
    network_class: type  # the diffusers class, which loads the checkpoint
    build: Callable  # (cfg, image channels, n_classes) -> network
    call: Callable  # (network, x_t, time input, labels) -> prediction
    stages: Callable  # network -> [(name, [modules])] from the output to the input (cascading randomisation)


BACKBONES = {
    "unet": Backbone(UNet2DModel, build_unet, _call_unet, unet_stages),
    "unet_cond": Backbone(UNet2DConditionModel, build_unet_cond, _call_unet_cond, _unet_cond_stages),
    "dit": Backbone(DiTTransformer2DModel, build_dit, _call_dit, _dit_stages),
}


def model_kind(cfg: dict) -> str:
    kind = cfg.get("model", DEFAULT_MODEL)["kind"]
    if kind not in BACKBONES:
        raise ValueError(f"model.kind must be one of {tuple(BACKBONES)}, got {kind!r}")
    return kind


def build_network(cfg: dict, in_channels: int, n_classes: int):
    """The profile's backbone (`model.kind`) for images of `in_channels` channels and n_classes classes + null."""
    return BACKBONES[model_kind(cfg)].build(cfg, in_channels, n_classes)


def _meta_sections(kind: str) -> tuple:
    return ("data", "diffusion", "unet", "model") + (() if kind == "unet" else (kind,))


def _with_defaults(cfg: dict) -> dict:
    """A checkpoint's settings with the defaults of sections added later (older checkpoints lack them)."""
    return dict(cfg, model=cfg.get("model", dict(DEFAULT_MODEL)), data={"wavelet": "none", **cfg["data"]})


# ----------------------------------------------------------------------------- the denoiser


class Denoiser(torch.nn.Module):
    def __init__(self, net, cfg: dict, class_names: list[str]):
        super().__init__()
        # The network keeps the attribute name `unet` whatever its kind: score caches fingerprint the state-dict
        # names ("unet.…"), so renaming it would orphan every existing cache. `net` is the kind-neutral alias.
        self.unet, self.cfg, self.class_names = net, cfg, list(class_names)
        self.kind, self.wavelet = model_kind(cfg), wavelet_of(cfg)
        if not isinstance(net, self.backbone.network_class):
            raise TypeError(f"model.kind {self.kind!r} needs a {self.backbone.network_class.__name__}, got {type(net)}")
        self.schedule = build_schedule(cfg)

    @property
    def net(self):
        return self.unet

    @property
    def backbone(self) -> Backbone:
        return BACKBONES[self.kind]

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def null_label(self) -> int:
        return self.n_classes

    @property
    def image_channels(self) -> int:
        return self.unet.config.in_channels // (4 if self.wavelet == "haar" else 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return haar_forward(x) if self.wavelet == "haar" else x

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        # Haar: the sampler and the explanations clip x0 estimates to [-1, 1] per coefficient (the authors' clip, a
        # box that holds every image), which still lets some blocks decode outside the image range: clamp after
        return haar_inverse(z).clamp(-1, 1) if self.wavelet == "haar" else z

    def noise_to_model(self, noise: torch.Tensor) -> torch.Tensor:
        """Standard Gaussian noise drawn in image shape -> standard Gaussian noise in the model's space: the
        orthonormal Haar transform (2x ours) maps white noise to white noise of the same variance."""
        return 2 * haar_forward(noise) if self.wavelet == "haar" else noise

    def map_to_image(self, maps: np.ndarray) -> np.ndarray:
        """Per-pixel error maps (..., h, w), channel means of squared eps errors in the model's space, onto the
        image's pixels. Haar: by Parseval, the mean over the 4C coefficients at a position equals the mean over the
        C channels and 2 x 2 pixels of its block of the squared error of the noise taken to pixels by the
        orthonormal inverse, `haar_inverse(e) / 2` (under which the noise is again standard white noise; with
        `haar_inverse` itself, which inverts the authors' halved transform, the pixel errors are 2x and their
        squares 4x these values). Each value is spread over its block: the result is that pixel-space error map
        averaged within 2 x 2 blocks, exactly (tests/test_backbones.py, test_haar_error_maps_obey_parseval)."""
        if self.wavelet == "none":
            return maps
        return np.repeat(np.repeat(maps, 2, axis=-2), 2, axis=-1)

    def predict(self, x_t: torch.Tensor, u: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.backbone.call(self.unet, x_t, self.schedule.model_time(u), labels)

    def forward(self, x_t, u, labels):
        return self.predict(x_t, u, labels)

    def stages(self) -> list:
        """The network's stages from the output to the input, for cascading randomisation (faithfulness.py)."""
        return self.backbone.stages(self.unet)

    # ------------------------------------------------------------------ checkpoints
    def save(self, path) -> Path:
        path = Path(path)
        self.unet.save_pretrained(path, safe_serialization=True)
        cfg = {k: self.cfg[k] for k in _meta_sections(self.kind) if k in self.cfg}
        meta = {
            "class_names": self.class_names,
            "cfg": _with_defaults(cfg),
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
            cfg = _with_defaults(meta["cfg"])
            kind = model_kind(cfg)
            net = BACKBONES[kind].network_class.from_pretrained(path, use_safetensors=True)
        except Exception as exc:  # diffusers raises many types for truncated or mismatched files
            raise CheckpointError(f"{path}: cannot load checkpoint ({type(exc).__name__}: {str(exc)[:200]})") from None
        if kind == "dit":  # from_pretrained rebuilds diffusers' default label dropout
            set_dit_class_dropout(net, cfg["dit"]["class_dropout"])
        if expect_classes is not None and list(expect_classes) != meta["class_names"]:
            raise CheckpointError(f"{path}: trained for classes {meta['class_names']}, not {list(expect_classes)}")
        cfg = dict(cfg, profile=meta.get("profile"), task=meta.get("task"))
        return cls(net, cfg, meta["class_names"]).eval()
