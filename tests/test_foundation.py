"""The Stable Diffusion arm end to end on a tiny random pipeline: load -> fine-tune -> classify -> explain."""

import numpy as np
import pytest
import torch
from conftest import tiny_cfg
from tiny_sd import build_tiny_sd

from diffusion_classifier.classifier import explain, rules
from diffusion_classifier.classifier.engine import ScoreSettings, ScoringEngine
from diffusion_classifier.core.errors import CheckpointError
from diffusion_classifier.models.stable_diffusion import FoundationDenoiser, foundation_cfg, prompts_for
from diffusion_classifier.training.diffusion import train_denoiser


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


def _fixed_inputs(model, x):
    """Latents noised to t = 0.5 with fixed noise, and labels 0, 1, 0, 1, ...: what a prediction is compared on."""
    z = model.encode(x)
    u = torch.full((len(x),), 0.5)
    z_t = model.schedule.add_noise(z, torch.randn(z.shape, generator=torch.Generator().manual_seed(0)), u)
    return z_t, u, torch.arange(len(x)) % 2


def test_load_finetune_classify_explain(tmp_path, sd_path, tiny_data):
    """Load, fine-tune, classify and explain through the package's code. Catches: a frozen LoRA adapter (the
    fine-tuned arm must predict otherwise than the base model, and the change must come from the adapter: its
    weights move, the base weights do not), a prompt-blind arm (per-class errors equal), and a zero one-step
    counterfactual."""
    x, y = tiny_data
    names = ["normal", "pneumonia"]
    model = FoundationDenoiser(sd_path, names, prompts_for("pneumonia", names), resolution=16, lora_rank=4)
    assert model.prompt_embeds.shape[0] == 3  # two class prompts + the empty (null) prompt
    base_unet = {k: v.clone() for k, v in model.unet.state_dict().items() if "lora" not in k}
    adapter = {k: v.clone() for k, v in model.unet.state_dict().items() if "lora" in k}
    assert adapter and all("lora_A" in k or "lora_B" in k for k in adapter)
    z_t, u, labels = _fixed_inputs(model, x[:4])
    with torch.no_grad():
        before = model.predict(z_t, u, labels)
    cfg = tiny_cfg()
    cfg["foundation"]["train"].update(
        steps=4, batch_size=4, warmup_steps=1, checkpoint_every=2, mixed_precision="no", val_batches=1
    )
    tuned, history = train_denoiser(foundation_cfg(cfg), x, y, x, y, names, tmp_path / "ft", model=model)
    assert len(history) and np.isfinite(history.train_loss).all()
    assert list((tmp_path / "ft" / "final" / "ema").glob("lora.safetensors"))
    # LoRA leaves the base weights untouched, and the adapter is what trained: every B matrix (zero at the start, so
    # that the adapter starts as the identity) has moved, and so have the predictions
    tuned_weights = tuned.unet.state_dict()
    for k, v in tuned_weights.items():
        if k in base_unet:
            assert torch.equal(v, base_unet[k]), k
    assert set(adapter) <= set(tuned_weights)
    moved = {k for k in adapter if not torch.equal(tuned_weights[k], adapter[k])}
    assert {k for k in adapter if "lora_B" in k} <= moved, sorted(set(adapter) - moved)[:3]
    with torch.no_grad():
        after = tuned.predict(z_t, u, labels)
    assert (after - before).abs().max() > 1e-4, "fine-tuning did not change the arm's predictions"
    # reload the fine-tuned arm through the same code path a GPU user runs
    again = FoundationDenoiser.for_task(sd_path, "pneumonia", names, {"resolution": 16, "lora_rank": 4})  # as 07 does
    assert again.prompts == model.prompts and (again.resolution, again.lora_rank) == (16, 4)
    again, _ = train_denoiser(foundation_cfg(cfg), x, y, x, y, names, tmp_path / "ft", model=again)
    for (k, a), (_, b) in zip(tuned.unet.state_dict().items(), again.unet.state_dict().items()):
        assert torch.equal(a, b), k

    engine = ScoringEngine(again, ScoreSettings(n_draws=4, batch_size=8, chunk_size=4, mixed_precision="no"), "cpu")
    scores = engine.score(x[:6], 2)
    assert scores.E.shape == (6, 2, 4) and np.isfinite(scores.E).all()
    # the same (image, draw) under the two prompts: a prompt-blind arm gives equal errors (here ~3e-3 of the error)
    assert np.abs(scores.E[:, 0] - scores.E[:, 1]).mean() > 1e-5 * scores.E.mean()
    for rule in rules.RULES:  # every rule runs on the arm's errors
        assert rules.predict(scores.E, rule).shape == (6,)
    maps = explain.class_error_maps(engine, x[:2], [0, 1], 2, 4)
    assert maps.shape == (2, 2, 8, 8)  # latent maps: the tiny VAE halves 16 px
    assert np.abs(maps[:, 0] - maps[:, 1]).mean() > 1e-5 * maps.mean()
    cf = explain.counterfactuals(engine, x[:2], [0, 1], 2, t=0.5)
    assert cf["one_step"].shape == (2, 2, 3, 16, 16)
    assert np.abs(cf["one_step"][:, 0] - cf["one_step"][:, 1]).mean() > 1e-3  # towards each prompt its own image


def test_one_step_counterfactual_in_latent_space_is_the_decoded_target(sd_path, tiny_data):
    """The Stable Diffusion arm's one-step counterfactual goes through its VAE and discrete schedule: with the exact
    eps-predictor of data where class c is one latent point z_c, x0_hat = z_c for any input and t, so the
    counterfactual towards c is decode(z_c) for every image. Catches: a zero one-step counterfactual (np.zeros passed
    the old shape check) or one not decoded from the latent estimate."""
    x, _ = tiny_data
    model = FoundationDenoiser(sd_path, ["a", "b"], ["x", "y"], resolution=16)
    points = model.encode(x[[0, 1]])  # one latent per class (labels 0 and 1 of the tiny data)

    def exact(z_t, u, labels):
        a, s = model.schedule.alpha_sigma(u)
        return (z_t - a.view(-1, 1, 1, 1) * points[labels]) / s.view(-1, 1, 1, 1)

    model.predict = exact  # this instance only: the point-mass denoiser behind the arm's encode/decode/schedule
    engine = ScoringEngine(model, ScoreSettings(n_draws=2, batch_size=8, chunk_size=4, mixed_precision="no"), "cpu")
    cf = explain.counterfactuals(engine, x[:4], [0, 1, 2, 3], 2, t=0.5)["one_step"]
    target = model.decode(points).numpy()  # (2, 3, 16, 16)
    assert np.abs(target).mean() > 0.01  # the random VAE's images are not ~0, so a zero counterfactual fails
    for c in (0, 1):
        np.testing.assert_allclose(cf[:, c], np.broadcast_to(target[c], cf[:, c].shape), atol=1e-4)


def test_full_finetuning_checkpoint_round_trip(tmp_path, sd_path):
    m = FoundationDenoiser(sd_path, ["a", "b"], ["x", "y"], resolution=16, lora_rank=0)
    with torch.no_grad():
        next(m.unet.parameters()).add_(1.0)
    m.save(tmp_path / "ck")
    n = FoundationDenoiser(sd_path, ["a", "b"], ["x", "y"], resolution=16, lora_rank=0).load_trainable(tmp_path / "ck")
    for (k, a), (_, b) in zip(m.unet.state_dict().items(), n.unet.state_dict().items()):
        assert torch.equal(a, b), k
