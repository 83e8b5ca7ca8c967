"""The Stable Diffusion arm end to end on a tiny random pipeline: load -> fine-tune -> classify -> explain."""

import numpy as np
import pytest
import torch
from conftest import tiny_cfg
from tiny_sd import build_tiny_sd

from diffusion_classifier import decision, explain
from diffusion_classifier.errors import CheckpointError
from diffusion_classifier.foundation import FoundationDenoiser, foundation_cfg, prompts_for
from diffusion_classifier.scoring import ScoreSettings, ScoringEngine
from diffusion_classifier.training import train_denoiser


@pytest.fixture(scope="module")
def sd_path(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("sd") / "tiny-sd")


def test_missing_or_incomplete_weights_give_clear_errors(tmp_path, sd_path):
    with pytest.raises(CheckpointError, match="not found"):
        FoundationDenoiser(tmp_path / "nope", ["a", "b"], ["x", "y"])
    partial = tmp_path / "partial"
    (partial / "vae").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="missing unet, text_encoder, tokenizer, scheduler"):
        FoundationDenoiser(partial, ["a", "b"], ["x", "y"])


def test_load_finetune_classify_explain(tmp_path, sd_path, tiny_data):
    x, y = tiny_data
    names = ["normal", "pneumonia"]
    model = FoundationDenoiser(sd_path, names, prompts_for("pneumonia", names), resolution=16, lora_rank=4)
    assert model.prompt_embeds.shape[0] == 3  # two class prompts + the empty (null) prompt
    base_unet = {k: v.clone() for k, v in model.unet.state_dict().items() if "lora" not in k}
    cfg = tiny_cfg()
    cfg["foundation"]["train"].update(
        steps=4, batch_size=4, warmup_steps=1, checkpoint_every=2, mixed_precision="no", val_batches=1
    )
    tuned, history = train_denoiser(foundation_cfg(cfg), x, y, x, y, names, tmp_path / "ft", model=model)
    assert len(history) and np.isfinite(history.train_loss).all()
    assert list((tmp_path / "ft" / "final" / "ema").glob("lora.safetensors"))
    # LoRA leaves the base weights untouched
    for k, v in tuned.unet.state_dict().items():
        if k in base_unet:
            assert torch.equal(v, base_unet[k]), k
    # reload the fine-tuned arm through the same code path a GPU user runs
    again = FoundationDenoiser.for_task(sd_path, "pneumonia", names, {"resolution": 16, "lora_rank": 4})  # as 07 does
    assert again.prompts == model.prompts and (again.resolution, again.lora_rank) == (16, 4)
    again, _ = train_denoiser(foundation_cfg(cfg), x, y, x, y, names, tmp_path / "ft", model=again)
    for (k, a), (_, b) in zip(tuned.unet.state_dict().items(), again.unet.state_dict().items()):
        assert torch.equal(a, b), k

    engine = ScoringEngine(again, ScoreSettings(n_draws=4, batch_size=8, chunk_size=4, mixed_precision="no"), "cpu")
    scores = engine.score(x[:6], 2)
    assert scores.E.shape == (6, 2, 4) and np.isfinite(scores.E).all()
    for rule in decision.RULES:
        assert set(decision.predict(scores.E, rule)) <= {0, 1}
    maps = explain.class_error_maps(engine, x[:2], [0, 1], 2, 4)
    assert maps.shape == (2, 2, 8, 8)  # latent maps: the tiny VAE halves 16 px
    cf = explain.counterfactuals(engine, x[:2], [0, 1], 2, t=0.5)
    assert cf["one_step"].shape == (2, 2, 3, 16, 16)


def test_full_finetuning_checkpoint_round_trip(tmp_path, sd_path):
    m = FoundationDenoiser(sd_path, ["a", "b"], ["x", "y"], resolution=16, lora_rank=0)
    with torch.no_grad():
        next(m.unet.parameters()).add_(1.0)
    m.save(tmp_path / "ck")
    n = FoundationDenoiser(sd_path, ["a", "b"], ["x", "y"], resolution=16, lora_rank=0).load_trainable(tmp_path / "ck")
    for (k, a), (_, b) in zip(m.unet.state_dict().items(), n.unet.state_dict().items()):
        assert torch.equal(a, b), k
