"""The foundation-model arm: Stable Diffusion as a medical diffusion classifier.

Classes become text prompts; images are encoded once by the VAE and classified in latent space with the same
engine, draws, decision rules, maps and uncertainty as the pixel-space model. The only difference is the
conditioning: a prompt embedding through cross-attention instead of a class embedding. The empty prompt is the
null label. Weights come from a local folder (diffusers layout: vae/ unet/ text_encoder/ tokenizer/ scheduler/),
never from a hub. Fine-tuning trains LoRA adapters (peft) or the full UNet with the same training loop.
"""

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import load_file, save_file

from ..core.errors import CheckpointError
from ..data.tasks import TASKS
from ..profiles import merge
from .schedules import DiscreteSchedule

COMPONENTS = ("vae", "unet", "text_encoder", "tokenizer", "scheduler")
META_FILE = "foundation.json"

# Prompt per class and task (documented in the README). Other tasks fall back to TEMPLATE.
TEMPLATE = "a medical image of {}"


def prompts_for(task: str, class_names) -> list[str]:
    """The task's prompts from the task registry (`data.tasks.TASKS`), else a generic template per class."""
    prompts = TASKS[task].prompts if task in TASKS else ()
    return list(prompts) if prompts else [TEMPLATE.format(c) for c in class_names]


def check_weights(path) -> Path:
    path = Path(path) if path else None
    if path is None or not path.exists():
        raise CheckpointError(
            f"{path}: Stable Diffusion folder not found (set sd_weights / SD_WEIGHTS to a local "
            f"diffusers-format folder, e.g. a saved stable-diffusion-v1-5)"
        )
    missing = [c for c in COMPONENTS if not (path / c).is_dir()]
    if missing:
        raise CheckpointError(f"{path}: incomplete Stable Diffusion folder, missing {', '.join(missing)}/")
    return path


class FoundationDenoiser(torch.nn.Module):
    """Stable Diffusion components behind the `Denoiser` interface (encode, predict, schedule, null label)."""

    @classmethod
    def for_task(cls, weights, task: str, class_names, foundation: dict) -> "FoundationDenoiser":
        """The arm of one task: its prompts (`prompts_for`) at the resolution and LoRA rank of a profile's
        `foundation` section."""
        return cls(
            weights, class_names, prompts_for(task, class_names), foundation["resolution"], foundation["lora_rank"]
        )

    def __init__(self, weights, class_names, prompts, resolution: int = 512, lora_rank: int = 0):
        super().__init__()
        from transformers import CLIPTextModel, CLIPTokenizer  # optional: the `foundation` extra

        self.weights = check_weights(weights)
        try:
            load = dict(local_files_only=True)
            self.vae = AutoencoderKL.from_pretrained(self.weights, subfolder="vae", **load)
            self.unet = UNet2DConditionModel.from_pretrained(self.weights, subfolder="unet", **load)
            text_encoder = CLIPTextModel.from_pretrained(self.weights, subfolder="text_encoder", **load)
            tokenizer = CLIPTokenizer.from_pretrained(self.weights, subfolder="tokenizer", **load)
            sched_cfg = json.loads((self.weights / "scheduler" / "scheduler_config.json").read_text())
        except CheckpointError:
            raise
        except Exception as exc:
            raise CheckpointError(
                f"{self.weights}: cannot load Stable Diffusion ({type(exc).__name__}: {str(exc)[:200]})"
            ) from None
        self.class_names, self.prompts = list(class_names), list(prompts)
        self.resolution, self.lora_rank = resolution, lora_rank
        self.schedule = DiscreteSchedule.from_scheduler_config(sched_cfg)
        self.scaling = getattr(self.vae.config, "scaling_factor", 0.18215)
        with torch.no_grad():  # the prompts are fixed: embed them once, then drop the text encoder
            max_len = min(tokenizer.model_max_length, text_encoder.config.max_position_embeddings)
            ids = tokenizer(
                self.prompts + [""], padding="max_length", max_length=max_len, truncation=True, return_tensors="pt"
            ).input_ids
            self.register_buffer("prompt_embeds", text_encoder(ids)[0].float())
        self.vae.requires_grad_(False).eval()
        if lora_rank:
            from peft import LoraConfig  # optional: the `foundation` extra

            self.unet.requires_grad_(False)
            self.unet.add_adapter(
                LoraConfig(
                    r=lora_rank,
                    lora_alpha=lora_rank,
                    init_lora_weights="gaussian",
                    target_modules=["to_k", "to_q", "to_v", "to_out.0"],
                )
            )

    @property
    def n_classes(self):
        return len(self.class_names)

    @property
    def null_label(self):
        return self.n_classes

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images (grey or RGB, any size) -> scaled VAE latents (posterior mean: deterministic)."""
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        if x.shape[-1] != self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", antialias=True)
        with torch.no_grad():
            return self.vae.encode(x.to(self.vae.dtype)).latent_dist.mean * self.scaling

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.vae.decode(z / self.scaling).sample.clamp(-1, 1)

    def predict(self, z_t, u, labels):
        return self.unet(z_t, self.schedule.model_time(u), encoder_hidden_states=self.prompt_embeds[labels]).sample

    def forward(self, z_t, u, labels):  # training calls the model (through its DDP wrapper), not predict
        return self.predict(z_t, u, labels)

    # ------------------------------------------------------------------ fine-tuned weights
    def save(self, path):
        """LoRA: the adapter weights; full fine-tuning: the UNet. Safetensors plus a JSON of the prompts."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self.lora_rank:
            from peft.utils import get_peft_model_state_dict  # optional: the `foundation` extra

            save_file(
                {k: v.contiguous() for k, v in get_peft_model_state_dict(self.unet).items()},
                str(path / "lora.safetensors"),
            )
        else:
            self.unet.save_pretrained(path / "unet", safe_serialization=True)
        (path / META_FILE).write_text(
            json.dumps(
                {
                    "base": str(self.weights),
                    "class_names": self.class_names,
                    "prompts": self.prompts,
                    "lora_rank": self.lora_rank,
                    "resolution": self.resolution,
                },
                indent=1,
            )
        )
        return path

    def load_trainable(self, path):
        path = Path(path)
        try:
            if self.lora_rank:
                from peft.utils import set_peft_model_state_dict  # optional: the `foundation` extra

                result = set_peft_model_state_dict(self.unet, load_file(str(path / "lora.safetensors")))
                if getattr(result, "unexpected_keys", None):
                    raise ValueError(f"unexpected keys {result.unexpected_keys[:3]}")
            else:
                self.unet.load_state_dict(load_file(str(next((path / "unet").glob("*.safetensors")))))
        except Exception as exc:
            raise CheckpointError(
                f"{path}: cannot load fine-tuned weights ({type(exc).__name__}: {str(exc)[:200]})"
            ) from None
        return self


def foundation_cfg(cfg: dict) -> dict:
    """The training configuration of the foundation arm: the profile's `foundation` section over its defaults."""
    f = cfg["foundation"]
    return merge(cfg, {"train": f["train"], "diffusion": {"loss_weighting": "none"}})
