"""The denoiser's backbones (UNet, cross-attention UNet, DiT) and the Haar wavelet input space: each trains, round-trips
through a checkpoint, and classifies through the unchanged scoring engine; the default configuration keeps its
run folders."""

import json

import numpy as np
import pytest
import torch
from conftest import tiny_cfg, tiny_training_data

from diffusion_classifier import profiles, study
from diffusion_classifier.classifier import explain
from diffusion_classifier.classifier.engine import ScoreSettings, ScoringEngine
from diffusion_classifier.core.checkpoints import write_manifest
from diffusion_classifier.models.denoiser import BACKBONES, META_FILE, Denoiser, build_network
from diffusion_classifier.models.sampling import sample_from
from diffusion_classifier.models.wavelet import haar_forward, haar_inverse
from diffusion_classifier.training.diffusion import train_denoiser

KINDS = ("unet", "unet_cond", "dit")
TINY = {
    "unet_cond": {"cross_attention_dim": 8, "num_attention_heads": 2},
    "dit": {"num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 8, "patch_size": 2},
}


def backbone_cfg(kind: str, wavelet: str = "none", **train) -> dict:
    """tiny_cfg (8 px, 2 classes) with another backbone and input space."""
    cfg = tiny_cfg(**train)
    cfg["model"]["kind"] = kind
    cfg["data"]["wavelet"] = wavelet
    cfg["unet_cond"].update(TINY["unet_cond"])
    cfg["dit"].update(TINY["dit"])
    if kind == "unet_cond":
        cfg["unet"]["attention_levels"] = [1]  # a cross-attention block besides the middle one
    return cfg


def tiny_model(kind: str, wavelet: str = "none", **dit) -> Denoiser:
    torch.manual_seed(0)
    cfg = backbone_cfg(kind, wavelet)
    cfg["dit"].update(dit)
    return Denoiser(build_network(cfg, 1, 2), cfg, ["a", "b"])


def predictions(model: Denoiser, x: torch.Tensor) -> torch.Tensor:
    z = model.encode(x)
    g = torch.Generator().manual_seed(1)
    u = torch.rand(len(x), generator=g)
    x_t = model.schedule.add_noise(z, torch.randn(z.shape, generator=g), u)
    labels = torch.arange(len(x)) % (model.n_classes + 1)  # the null label too
    with torch.no_grad():
        return model.predict(x_t, u, labels)


# ----------------------------------------------------------------------------- the Haar transform


def test_haar_inverse_is_exact():
    x = torch.rand(2, 3, 16, 12, generator=torch.Generator().manual_seed(0)) * 2 - 1
    w = haar_forward(x)
    assert w.shape == (2, 12, 8, 6)
    assert (haar_inverse(w) - x).abs().max() < 1e-6


def test_haar_coefficients_by_hand():
    # one 2 x 2 block [[a, b], [c, d]] = [[1, 2], [3, 4]] per channel, the second channel 10x the first:
    # LL = (a+b+c+d)/4, LH = (a+b-c-d)/4 (top - bottom), HL = (a-b+c-d)/4 (left - right), HH = (a-b-c+d)/4
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    w = haar_forward(torch.stack([x, 10 * x])[None])
    assert w.flatten().tolist() == [2.5, -1.0, -0.5, 0.0, 25.0, -10.0, -5.0, 0.0]  # grouped per input channel
    # images in [-1, 1] have every coefficient in [-1, 1] (the division by 2 of the orthonormal transform)
    corners = haar_forward(torch.tensor([[[[1.0, 1.0], [1.0, 1.0]]], [[[1.0, -1.0], [-1.0, 1.0]]]]))
    assert corners.abs().max() == 1


def test_haar_model_space_and_maps():
    model = tiny_model("unet", "haar")
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    assert model.encode(x).shape == (3, 4, 4, 4) and model.image_channels == 1
    assert torch.allclose(model.decode(model.encode(x)), x, atol=1e-6)
    noise = model.noise_to_model(torch.randn(20_000, 1, 2, 2, generator=torch.Generator().manual_seed(0)))
    assert abs(noise.std().item() - 1) < 0.02  # white noise stays standard white noise
    maps = model.map_to_image(np.arange(4.0).reshape(1, 1, 2, 2))
    assert maps.shape == (1, 1, 4, 4) and (maps[0, 0, :2, :2] == 0).all() and (maps[0, 0, 2:, 2:] == 3).all()


def test_haar_error_maps_obey_parseval():
    """A coefficient-space error e_w (1, 4C, h, w) and its pixel-space error e_p = haar_inverse(e_w). haar_forward is
    the orthonormal Haar map H divided by 2, so haar_inverse = 2 H^T and, per 2 x 2 block and channel,
    sum(e_p^2) = 4 sum(e_w^2) (Parseval for H, times 2^2). The model's eps is H applied to pixel noise
    (`noise_to_model`), so its orthonormal inverse H^T = haar_inverse / 2 takes errors back to pixels with factor 1:
    map_to_image(mean over 4C of e_w^2) = 2 x 2-block mean over C of (haar_inverse(e_w) / 2)^2
                                        = 2 x 2-block mean over C of haar_inverse(e_w)^2 / 4."""
    C, h, w = 3, 5, 4
    model = tiny_model("unet", "haar")
    e_w = torch.randn(1, 4 * C, h, w, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    e_p = haar_inverse(e_w)
    assert e_p.shape == (1, C, 2 * h, 2 * w)
    coefficient_map = model.map_to_image(e_w.pow(2).mean(1).numpy())  # (1, 2h, 2w), each value over its block
    pixel_map = e_p.pow(2).mean(1)  # (1, 2h, 2w)
    block_mean = torch.nn.functional.avg_pool2d(pixel_map[None], 2)[0]  # mean over the C channels and 2 x 2 pixels
    block_map = block_mean.repeat_interleave(2, -2).repeat_interleave(2, -1).numpy()
    assert np.allclose(coefficient_map, block_map / 4, rtol=1e-12, atol=0)
    assert torch.allclose(e_w.pow(2).sum(), (haar_inverse(e_w) / 2).pow(2).sum(), rtol=1e-12)  # Parseval for H^T
    assert torch.allclose(e_w.pow(2).sum() * 4, e_p.pow(2).sum(), rtol=1e-12)  # and the factor 4 of haar_inverse
    assert not np.allclose(coefficient_map, pixel_map.numpy() / 4)  # block means: not the per-pixel map


# ----------------------------------------------------------------------------- every backbone, end to end


@pytest.mark.parametrize(
    "kind,wavelet", [(k, "none") for k in KINDS] + [(k, "haar") for k in KINDS], ids=lambda v: str(v)
)
def test_backbone_trains_round_trips_and_classifies(tmp_path, kind, wavelet):
    """Each backbone trains, round-trips and classifies; its errors, maps and samples depend on the class label (the
    same noise and time for every class: only the label differs). Catches: a label-blind network (e.g. a DiT whose
    class embedding is zeroed or fed a constant label) - its per-class errors, maps and samples coincide."""
    x, y = tiny_training_data()
    cfg = backbone_cfg(kind, wavelet, steps=3, checkpoint_every=3, log_every=1)
    model, history = train_denoiser(cfg, x, y, x, y, ["a", "b"], tmp_path / "run")
    assert isinstance(model.net, BACKBONES[kind].network_class) and model.kind == kind
    assert len(history) == 3 and np.isfinite(history.train_loss).all()

    loaded = Denoiser.load(model.save(tmp_path / "ckpt"), ["a", "b"])
    assert (loaded.kind, loaded.wavelet) == (kind, wavelet)
    # the weights round-trip exactly; the outputs to kernel precision (oneDNN may pick another convolution algorithm
    # for a freshly built network: ~4e-7 seen here on unet-haar)
    trained, reloaded = model.net.state_dict(), loaded.net.state_dict()
    assert trained.keys() == reloaded.keys() and all(torch.equal(trained[k], reloaded[k]) for k in trained)
    torch.testing.assert_close(predictions(model.eval(), x[:6]), predictions(loaded, x[:6]), rtol=0, atol=1e-5)
    again = Denoiser(build_network(cfg, 1, 2), cfg, ["a", "b"]).load_trainable(tmp_path / "ckpt").eval()
    assert torch.equal(predictions(again, x[:6]), predictions(loaded, x[:6]))

    engine = ScoringEngine(loaded, ScoreSettings(n_draws=3, batch_size=16, chunk_size=4, mixed_precision="no"), "cpu")
    scores = engine.score(x[:5], 2)
    assert scores.E.shape == (5, 2, 3) and np.isfinite(scores.E).all()
    # the same (image, draw) under the two labels: a label-blind network gives equal errors (differences ~1e-3 of
    # the error here, exactly 0 when blind)
    assert np.abs(scores.E[:, 0] - scores.E[:, 1]).mean() > 1e-5 * scores.E.mean()
    maps = explain.class_error_maps(engine, x[:2], [0, 1], 2, 2)
    assert maps.shape == (2, 2, 8, 8) and np.isfinite(maps).all()  # on the image's pixels, whatever the space
    assert np.abs(maps[:, 0] - maps[:, 1]).mean() > 1e-3 * maps.mean()
    noise = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    samples = [sample_from(loaded, noise, torch.full((3,), c), steps=2) for c in (0, 1, 2)]  # 2: the null label
    for s in samples:
        assert s.shape == (3, 1, 8, 8) and s.abs().max() <= 1
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert not torch.allclose(samples[a], samples[b], atol=1e-4), (a, b)  # same noise and seed, other label


@pytest.mark.parametrize("kind", KINDS)
def test_every_parameter_is_in_one_randomisation_stage(kind):
    model = tiny_model(kind)
    staged = [id(p) for _, modules in model.stages() for m in modules for p in m.parameters()]
    assert len(staged) == len(set(staged))
    assert set(staged) == {id(p) for p in model.net.parameters()}


def test_dit_has_no_hidden_label_dropout():
    """diffusers' DiT drops labels in training mode on its own (0.1 by default): off with class_dropout 0."""
    x = tiny_training_data()[0][:6]
    model = tiny_model("dit")
    assert torch.equal(predictions(model.train(), x), predictions(model.eval(), x))
    # diffusers' null row is our null label: with all labels dropped, train mode predicts as the null label
    dropping = tiny_model("dit", class_dropout=1.0)
    z = dropping.encode(x)
    u, labels = torch.full((6,), 0.5), torch.zeros(6, dtype=torch.long)
    with torch.no_grad():
        dropped = dropping.train().predict(z, u, labels)
        null = dropping.eval().predict(z, u, torch.full_like(labels, dropping.null_label))
    assert torch.equal(dropped, null)


def test_dit_dropout_setting_survives_loading(tmp_path):
    # from_pretrained rebuilds diffusers' default label dropout (0.1); loading sets the checkpoint's own again
    loaded = Denoiser.load(tiny_model("dit").save(tmp_path / "ckpt"))
    assert all(b.norm1.emb.class_embedder.dropout_prob == 0 for b in loaded.net.transformer_blocks)


def test_a_network_of_another_kind_is_refused():
    cfg = backbone_cfg("dit")
    with pytest.raises(TypeError, match="DiTTransformer2DModel"):
        Denoiser(build_network(backbone_cfg("unet"), 1, 2), cfg, ["a", "b"])


# ----------------------------------------------------------------------------- old checkpoints and run folders


def test_checkpoint_from_before_backbones_loads_as_a_pixel_unet(tmp_path):
    path = tiny_model("unet").save(tmp_path / "ckpt")
    meta = json.loads((path / META_FILE).read_text())
    del meta["cfg"]["model"], meta["cfg"]["data"]["wavelet"]
    (path / META_FILE).write_text(json.dumps(meta))
    (path / "checksums.json").unlink()
    write_manifest(path)
    loaded = Denoiser.load(path)
    assert (loaded.kind, loaded.wavelet) == ("unet", "none")


def test_default_configurations_keep_their_run_folders():
    # the run folders of the committed cpu and smoke runs (runs/<profile>/<task>/<hash>), from before backbones
    for profile, task, folder in [
        ("cpu", "pneumonia", "96e8734f05"),
        ("cpu", "melanoma_balanced", "ff4a3ea95e"),
        ("smoke", "pneumonia", "5abddbce46"),
    ]:
        assert study.config_hash(profiles.get_profile(profile, task, {"seed": 0})) == folder
    base = profiles.get_profile("cpu", "pneumonia", {"seed": 0})
    others = [
        profiles.get_profile("cpu", "pneumonia", {"seed": 0, "model": {"kind": "dit"}}),
        profiles.get_profile("cpu", "pneumonia", {"seed": 0, "model": {"kind": "dit"}, "dit": {"num_layers": 2}}),
        profiles.get_profile("cpu", "pneumonia", {"seed": 0, "model": {"kind": "unet_cond"}}),
        profiles.get_profile("cpu", "pneumonia", {"seed": 0, "data": {"wavelet": "haar"}}),
    ]
    assert len({study.config_hash(c) for c in [base, *others]}) == 5


def test_paper_backbones_are_the_authors():
    dit = profiles.get_profile("paper", "pneumonia", profiles.PAPER_DIT)
    unet = profiles.get_profile("paper", "pneumonia", profiles.PAPER_UNET_COND)
    with torch.device("meta"):  # the shapes without the memory
        dit_net, unet_net = build_network(dit, 3, 2), build_network(unet, 3, 2)
    assert (dit_net.config.in_channels, dit_net.config.sample_size, dit_net.config.patch_size) == (12, 128, 4)
    assert len(dit_net.transformer_blocks) == 12 and dit_net.inner_dim == 12 * 64
    assert (unet_net.config.in_channels, unet_net.config.sample_size) == (12, 128)
    assert list(unet_net.config.block_out_channels) == [128, 128, 256, 512, 1024]
    # cross-attention at 16 px (the fourth level of 128, 64, 32, 16, 8) and in the 8 px middle block
    assert [type(b).__name__.startswith("CrossAttn") for b in unet_net.down_blocks] == [False] * 3 + [True, False]
    assert type(unet_net.mid_block).__name__ == "UNetMidBlock2DCrossAttn"


def test_backbone_comparison_finds_a_planted_better_network():
    """Planted signal: the 'dit' errors separate the classes, the 'unet' errors are noise. The paired table must give
    unet - dit a negative AUC difference excluding 0 (order matters), and the verdicts must say so."""
    from diffusion_classifier.analyses import backbones

    rng = np.random.default_rng(0)
    n, K = 200, 11
    y = np.repeat([0, 1], n // 2)
    good = rng.normal(1.0, 0.3, (n, 2, K))
    good[np.arange(n), y] -= 0.5  # the true class explains the noise better in most draws
    errors = {"diffusion-unet": rng.normal(1.0, 0.3, (n, 2, K)), "diffusion-dit": good}
    proba = np.stack([1 - y * 0.8 - 0.1, y * 0.8 + 0.1], 1)  # a near-perfect baseline
    models = backbones.model_rows("toy", y, errors, proba, "vote", n_boot=200)
    assert list(models.model) == ["diffusion-unet", "diffusion-dit", "resnet18"]
    assert models.auc[1] > 0.9 and abs(models.auc[0] - 0.5) < 0.15
    assert models.majority_rate.eq(0.5).all()
    pairs = backbones.pairs_table("toy", y, errors, proba, "vote", n_boot=200)
    first = pairs.iloc[0]
    assert (first.a, first.b) == ("diffusion-unet", "diffusion-dit")
    assert first.auc_diff < 0 and first.auc_diff_ci_high < 0
    text = backbones.verdicts(models, pairs)
    assert "not testable" in text[0]  # the unet's AUC CI contains 0.5: no verdict on a model at chance
    dit_vs_resnet = text[2]
    assert "diffusion-dit − resnet18" in dit_vs_resnet and "not testable" not in dit_vs_resnet
    assert len(text) == len(pairs) + 1 and text[-1] == backbones.paper_gap()  # the paper's own gap comes last


def test_backbone_verdict_names_the_direction_between_two_working_networks():
    """Planted signal in both diffusion models, strong in one and weak but clear in the other (both AUC CIs above
    0.5): strong - weak must read **higher** and weak - strong **lower**, whichever order the models are given in."""
    from diffusion_classifier.analyses import backbones

    rng = np.random.default_rng(1)
    n, K = 400, 11
    y = np.repeat([0, 1], n // 2)

    def planted(gap):
        E = rng.normal(1.0, 0.3, (n, 2, K))
        E[np.arange(n), y] -= gap  # the true class explains the noise better, by `gap` on average
        return E

    strong, weak = planted(0.3), planted(0.1)
    proba = np.stack([1 - y * 0.8 - 0.1, y * 0.8 + 0.1], 1)
    for names, word, other in [
        (("diffusion-strong", "diffusion-weak"), "**higher**", "**lower**"),
        (("diffusion-weak", "diffusion-strong"), "**lower**", "**higher**"),
    ]:
        errors = {name: {"diffusion-strong": strong, "diffusion-weak": weak}[name] for name in names}
        models = backbones.model_rows("toy", y, errors, proba, "vote", n_boot=200)
        assert (models.auc_ci_low[:2] > 0.6).all() and models.auc[0] != models.auc[1]  # both above chance
        pairs = backbones.pairs_table("toy", y, errors, proba, "vote", n_boot=200)
        first = pairs.iloc[0]
        assert (first.a, first.b) == names
        line = backbones.pair_verdict(first, models)
        assert word in line and other not in line and "not testable" not in line, line
        text = backbones.verdicts(models, pairs)
        assert text[0] == line and len(text) == len(pairs) + 1 and text[-1] == backbones.paper_gap()


def test_backbone_runs_and_overrides_keep_the_users_and_set_the_kind():
    from diffusion_classifier import profiles
    from diffusion_classifier.analyses import backbones

    cfg = profiles.get_profile("cpu", "pneumonia")
    assert backbones.runs(cfg) == [("dit", None), ("dit", 1600)]  # the UNet's 800 steps, and 1600
    assert [backbones.model_name(k, s) for k, s in backbones.runs(cfg)] == ["diffusion-dit", "diffusion-dit-1600"]
    o = backbones.run_overrides("dit", 1600, {"train": {"lr": 1e-4}})
    assert o == {"train": {"lr": 1e-4, "steps": 1600}, "model": {"kind": "dit"}}
    assert profiles.get_profile("cpu", "pneumonia", o)["dit"]["patch_size"] == 4
    assert backbones.run_overrides("dit") == {"model": {"kind": "dit"}}


def test_other_n_findings_report_either_direction_and_skip_the_headline():
    import pandas as pd

    from diffusion_classifier.analyses import classification

    def row(n, d, lo, hi):
        return {
            "a": f"vote N={n}",
            "b": f"mean N={n}",
            "n_draws": n,
            "accuracy_diff": d,
            "accuracy_diff_ci_low": lo,
            "accuracy_diff_ci_high": hi,
            "mcnemar_p": 0.01,
        }

    pairs = pd.DataFrame(
        [row(5, 0.02, 0.01, 0.03), row(11, -0.02, -0.03, -0.01), row(25, 0.0, -0.01, 0.01), row(51, 0.02, 0.01, 0.03)]
    )
    lines = classification.other_n_findings(pairs, 51, "toy")
    assert len(lines) == 2  # N = 51 is the headline (reported elsewhere), N = 25's CI contains 0
    assert "N = 5 " in lines[0] and "the vote rule is ahead" in lines[0] and "one of 3 N" in lines[0]
    assert "N = 11 " in lines[1] and "the mean rule is ahead" in lines[1]


def test_uncertainty_lines_say_flags_only_when_the_auroc_ci_is_above_chance():
    import pandas as pd

    from diffusion_classifier.analyses import backbones

    def row(model, score, auroc, lo, hi):
        return {
            "task": "toy",
            "model": model,
            "score": score,
            "accuracy": 0.9,
            "error_auroc": auroc,
            "error_auroc_ci_low": lo,
            "error_auroc_ci_high": hi,
        }

    table = pd.DataFrame(
        [
            row("diffusion-unet", "vote_fraction", 0.8, 0.7, 0.9),
            row("diffusion-dit", "vote_fraction", 0.55, 0.45, 0.65),
            row("diffusion-dit", "vote_entropy", 0.9, 0.8, 0.95),  # another score: not this line's
            row("resnet18", "max_softmax", 0.85, 0.8, 0.9),
        ]
    )
    lines = backbones.uncertainty_lines(table)
    assert len(lines) == 2
    assert "diffusion-unet: its vote fraction flags its errors" in lines[0] and "0.850" in lines[0]
    assert "diffusion-dit: its vote fraction is not shown to flag" in lines[1]
