"""The authors' options (METHOD.md "Models"), each a setting whose default keeps today's behaviour: log-SNR time
input, shifted clip bounds, eps-space loss weighting, EMA every k steps, checkpoint selection on validation F1."""

import copy
import json
import math
import shutil

import numpy as np
import pytest
import torch
from conftest import tiny_cfg

from diffusion_classifier import profiles
from diffusion_classifier.models.denoiser import Denoiser, build_unet
from diffusion_classifier.models.schedules import DiscreteSchedule, ShiftedCosineSchedule, build_schedule
from diffusion_classifier.training.diffusion import diffusion_loss, selection_subset, train_denoiser, update_ema

U = torch.tensor([0.0, 0.013, 0.25, 0.5, 0.77, 0.999, 1.0])


def schedule_of(profile: str, **diffusion):
    cfg = profiles.get_profile(profile, "pneumonia", {"diffusion": diffusion})
    return build_schedule(cfg)


# ----------------------------------------------------------------------------- defaults = today


@pytest.mark.parametrize("profile", ["smoke", "cpu"])
def test_defaults_keep_todays_settings(profile):
    cfg = profiles.get_profile(profile, "pneumonia")
    d, t = cfg["diffusion"], cfg["train"]
    assert (d["time_input"], d["logsnr_clip"], d["loss_weighting"], d["label_dropout"]) == (
        "scaled",
        "unshifted",
        "none",
        0.1,
    )
    assert (t["ema_every"], t["select_on"]) == (1, "final")


@pytest.mark.parametrize("profile", ["smoke", "cpu"])
def test_default_schedules_are_bit_for_bit_todays(profile):
    res = profiles.get_profile(profile, "pneumonia")["data"]["resolution"]
    cosine = schedule_of(profile, schedule="shifted_cosine", prediction_type="v_prediction")
    # today's formula, written out: the unshifted log-SNR clipped to [-15, 15], then shifted
    u_min, u_max = math.atan(math.exp(-7.5)) * 2 / math.pi, math.atan(math.exp(7.5)) * 2 / math.pi
    u = u_min + U.double() * (u_max - u_min)
    today = -2 * torch.log(torch.tan(math.pi * u / 2)) + 2 * math.log(64 / res)
    assert torch.equal(cosine.logsnr(U), today)
    assert torch.equal(cosine.model_time(U), U.float() * 1000)
    ddpm = schedule_of(profile)
    assert torch.equal(ddpm.model_time(U), (U.double() * 1000).floor().clamp(0, 999).long())


def test_checkpoint_configs_from_before_the_settings_still_load():
    cfg = profiles.get_profile("smoke", "pneumonia", {"diffusion": {"schedule": "shifted_cosine"}})
    old = dict(cfg, diffusion={k: v for k, v in cfg["diffusion"].items() if k not in ("time_input", "logsnr_clip")})
    a, b = build_schedule(cfg), build_schedule(old)
    assert torch.equal(a.logsnr(U), b.logsnr(U)) and torch.equal(a.model_time(U), b.model_time(U))


@pytest.mark.parametrize(
    "key,value", [("time_input", "u"), ("logsnr_clip", "both"), ("loss_weighting", "snr"), ("schedule", "cosine")]
)
def test_unknown_values_are_refused(key, value):
    cfg = profiles.get_profile("smoke", "pneumonia", {"diffusion": {"schedule": "shifted_cosine", key: value}})
    with pytest.raises(ValueError, match=value):
        build_schedule(cfg).loss_weight(U, cfg["diffusion"]["loss_weighting"])


# ----------------------------------------------------------------------------- a, b: log-SNR and time input


def test_authors_logsnr_at_0_half_1_matches_method_md():
    """METHOD.md: lambda(0) ~ +10.8, lambda(0.5) ~ -2.77, lambda(1) ~ -19.2 (noise_d 64, image_d 256)."""
    sched = schedule_of("paper")
    assert profiles.get_profile("paper")["data"]["resolution"] == 256
    lam = sched.logsnr(torch.tensor([0.0, 0.5, 1.0]))
    assert torch.allclose(lam, torch.tensor([10.8, -2.77, -19.2], dtype=lam.dtype), atol=0.05), lam
    # the derivation: bounds +-15 moved by log(1/4), output by 2 log(1/4)
    assert lam[0].item() == pytest.approx(15 - 3 * math.log(4), abs=1e-9)
    assert lam[2].item() == pytest.approx(-15 - 3 * math.log(4), abs=1e-9)
    # today's clip keeps the unshifted log-SNR in [-15, 15]: +12.23 .. -17.77
    today = schedule_of("paper", logsnr_clip="unshifted").logsnr(torch.tensor([0.0, 1.0]))
    assert torch.allclose(today, torch.tensor([15 - 2 * math.log(4), -15 - 2 * math.log(4)], dtype=today.dtype))


def test_logsnr_time_input_feeds_lambda_itself():
    cosine = ShiftedCosineSchedule(256, 64, logsnr_clip="shifted", time_input="logsnr")
    assert torch.equal(cosine.model_time(U), cosine.logsnr(U).float())
    a, s = cosine.alpha_sigma(U[1:-1])
    assert torch.allclose(cosine.model_time(U[1:-1]), torch.log(a**2 / s**2), atol=1e-3)
    ddpm = DiscreteSchedule(time_input="logsnr")
    ac = ddpm.alphas_cumprod[(U.double() * 1000).floor().clamp(0, 999).long()]
    assert torch.allclose(ddpm.model_time(U), (ac / (1 - ac)).log().float())
    assert schedule_of("paper").model_time(U).dtype == torch.float32


# ----------------------------------------------------------------------------- c: the authors' loss weighting


def test_authors_weight_at_three_times():
    sched = schedule_of("paper")  # v-prediction
    u = torch.tensor([0.05, 0.5, 0.9])
    a, s = sched.alpha_sigma(u)
    snr = [(ai / si) ** 2 for ai, si in zip(a.tolist(), s.tolist())]
    assert snr[0] > 5 > snr[1] > snr[2]  # the clip is active at the first time only
    want = [1 / 6, 1 / (1 + snr[1]), 1 / (1 + snr[2])]
    assert sched.loss_weight(u, "authors", 5.0).tolist() == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample"])
def test_authors_weight_is_refused_without_v_prediction(tmp_path, tiny_data, prediction_type):
    """1 / (1 + min(SNR, gamma)) is the authors' weighting of their v-prediction only: any other prediction type is
    refused with a one-line message naming both settings, by the weight itself and by training before any step."""
    sched = schedule_of("paper", prediction_type=prediction_type)
    with pytest.raises(ValueError) as e:
        sched.loss_weight(torch.tensor([0.5]), "authors", 5.0)
    message = str(e.value)
    assert "\n" not in message and "loss_weighting 'authors'" in message and repr(prediction_type) in message
    assert sched.loss_weight(torch.tensor([0.5]), "min_snr", 5.0).shape == (1,)  # the other weightings still work
    x, y = tiny_data
    cfg = tiny_cfg(steps=4)
    cfg["diffusion"].update({"prediction_type": prediction_type, "loss_weighting": "authors"})
    with pytest.raises(ValueError, match=r"loss_weighting 'authors' .*prediction_type") as e:
        train_denoiser(cfg, x, y, x, y, ["a", "b"], tmp_path / "run")
    assert "\n" not in str(e.value) and not (tmp_path / "run" / "last").exists()


class ConstantV(torch.nn.Module):
    """A stand-in denoiser whose v prediction is a fixed tensor; records the times it is asked about."""

    null_label = 2

    def __init__(self, schedule, v):
        super().__init__()
        self.schedule, self.v, self.seen = schedule, v, []

    def encode(self, x):
        return x

    def forward(self, x_t, u, labels):
        self.seen.append(u.clone())
        return self.v.expand_as(x_t).clone()


def test_authors_loss_is_the_weighted_eps_space_error():
    sched = schedule_of("paper")
    cfg = {"diffusion": {"label_dropout": 0.0, "loss_weighting": "authors", "min_snr_gamma": 5.0}}
    x0 = torch.linspace(-1, 1, 3 * 16).view(3, 1, 4, 4)
    v = torch.linspace(-0.5, 0.7, 16).view(1, 1, 4, 4)
    for seed in range(100):  # a seed whose three times put the SNR clip on both sides
        g = torch.Generator().manual_seed(seed)
        u, eps = torch.rand(3, generator=g), torch.randn((3, 1, 4, 4), generator=g)  # diffusion_loss's draw order
        a, s = sched.alpha_sigma(u)
        snr = (a / s) ** 2
        if (snr > 5).any() and (snr < 5).any():
            break
    model = ConstantV(sched, v)
    loss = diffusion_loss(model, x0, torch.zeros(3, dtype=torch.long), torch.Generator().manual_seed(seed), cfg)
    assert torch.equal(model.seen[0], u)
    want = 0.0
    for i in range(3):
        ai, si = a[i].item(), s[i].item()
        z = ai * x0[i] + si * eps[i]
        eps_hat = si * z + ai * v[0]  # v-prediction converted to eps
        weight = 1 / (1 + min(ai**2 / si**2, 5.0))
        want += weight * ((eps_hat - eps[i]) ** 2).mean().item() / 3
    assert loss.item() == pytest.approx(want, rel=1e-5)


def test_the_authors_diffusion_settings_train_and_reload(tmp_path, tiny_data):
    x, y = tiny_data
    cfg = tiny_cfg(steps=4)
    paper = profiles.get_profile("paper")["diffusion"]
    cfg["diffusion"].update({k: paper[k] for k in ("schedule", "prediction_type", "time_input", "logsnr_clip")})
    cfg["diffusion"]["loss_weighting"] = "authors"
    _, history = train_denoiser(cfg, x, y, x, y, ["a", "b"], tmp_path / "run")
    assert np.isfinite(history.train_loss).all()
    loaded = Denoiser.load(tmp_path / "run" / "final" / "ema").schedule  # scoring sees the time input it trained on
    assert (loaded.time_input, loaded.u_min) == ("logsnr", build_schedule(cfg).u_min)


# ----------------------------------------------------------------------------- e: EMA every k steps


def test_ema_every_5_moves_only_after_steps_5_and_10():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    ema = copy.deepcopy(model).requires_grad_(False)
    names = [n for n, _ in model.named_parameters()]
    moved = []
    for step in range(12):  # step counted from 0, as in the training loop
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        before = [p.clone() for p in ema.parameters()]
        update_ema(ema, model, names, step, 0.999, every=5)
        if any(not torch.equal(b, p) for b, p in zip(before, ema.parameters())):
            moved.append(step + 1)
    assert moved == [5, 10]


def test_ema_every_1_is_todays_update():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    ema, today = copy.deepcopy(model), copy.deepcopy(model)
    names = [n for n, _ in model.named_parameters()]
    for step in range(7):
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1.1).add_(0.01)
            update_ema(ema, model, names, step, 0.995)
            decay = min(0.995, (1 + step) / (10 + step))  # the loop's update before the setting existed
            torch._foreach_lerp_(list(today.parameters()), list(model.parameters()), 1 - decay)
    for a, b in zip(ema.parameters(), today.parameters()):
        assert torch.equal(a, b)


def test_training_ema_waits_for_the_fifth_step(tmp_path, tiny_data):
    x, y = tiny_data
    cfg = tiny_cfg(steps=4, ema_every=5)
    torch.manual_seed(cfg["seed"])
    initial = Denoiser(build_unet(cfg, 1, 2), cfg, ["a", "b"])
    four, _ = train_denoiser(cfg, x, y, x, y, ["a", "b"], tmp_path / "four")
    five, _ = train_denoiser(tiny_cfg(steps=5, ema_every=5), x, y, x, y, ["a", "b"], tmp_path / "five")
    assert all(torch.equal(a, b) for a, b in zip(initial.state_dict().values(), four.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(initial.state_dict().values(), five.state_dict().values()))


# ----------------------------------------------------------------------------- f: selection on validation F1


def data_16px(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = (torch.rand(n, 1, 16, 16, generator=g) * 0.6 - 0.7 + 0.6 * y[:, None, None, None]).clamp(-1, 1)
    return x, y.numpy()


def selecting_cfg(**train):
    # lr 5e-3: on this data the F1 of the four evaluations is 0, 0.93, 0.78, 0.75, so the best is a middle one
    cfg = tiny_cfg(
        steps=8,
        checkpoint_every=4,
        select_on="val_f1",
        select_every=2,
        select_images=12,
        select_draws=3,
        lr=5e-3,
        **train,
    )
    cfg["data"]["resolution"] = 16
    return cfg


def weights(model):
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_selection_keeps_the_ema_with_the_best_validation_f1(tmp_path):
    x, y = data_16px()
    xv, yv = data_16px(24, seed=1)
    cfg = selecting_cfg()
    model, history = train_denoiser(cfg, x, y, xv, yv, ["a", "b"], tmp_path / "run")
    rows = history.dropna(subset=["val_f1"])
    assert rows.step.tolist() == [2, 4, 6, 8]
    assert rows.val_f1.between(0, 1).all() and rows.val_f1.nunique() > 1
    best_step = int(rows.step.iloc[int(np.argmax(rows.val_f1.to_numpy()))])  # first maximum: ties keep the earlier
    state = json.loads((tmp_path / "run" / "final" / "train_state.json").read_text())
    assert state["best"] == {"step": best_step, "val_f1": pytest.approx(rows.val_f1.max())}
    assert json.loads((tmp_path / "run" / "best" / "train_state.json").read_text())["step"] == best_step
    # the returned model is the checkpoint in best/ and the EMA of the same run at that step
    assert same(weights(model), weights(Denoiser.load(tmp_path / "run" / "best" / "ema")))
    at_best, _ = train_denoiser(cfg, x, y, xv, yv, ["a", "b"], tmp_path / "cut", stop_after=best_step)
    assert same(weights(model), weights(at_best))
    # selection does not change the training itself: final/ holds the final EMA of a run without selection
    plain, _ = train_denoiser(
        dict(cfg, train=dict(cfg["train"], select_on="final")), x, y, xv, yv, ["a", "b"], tmp_path / "plain"
    )
    assert same(weights(plain), weights(Denoiser.load(tmp_path / "run" / "final" / "ema")))
    # a finished run asked again returns the selected model, not the final one
    again, again_history = train_denoiser(cfg, x, y, xv, yv, ["a", "b"], tmp_path / "run")
    assert same(weights(again), weights(model)) and again_history.equals(history)


@pytest.mark.slow
def test_selection_resumes_with_the_same_best(tmp_path):
    x, y = data_16px()
    xv, yv = data_16px(24, seed=1)
    cfg = selecting_cfg()
    full, full_history = train_denoiser(cfg, x, y, xv, yv, ["a", "b"], tmp_path / "full")
    train_denoiser(cfg, x, y, xv, yv, ["a", "b"], tmp_path / "killed", stop_after=5)  # last checkpoint: step 4
    assert json.loads((tmp_path / "killed" / "last" / "train_state.json").read_text())["step"] == 4
    resumed, history = train_denoiser(cfg, x, y, xv, yv, ["a", "b"], tmp_path / "killed")
    assert history.val_f1.dropna().tolist() == full_history.val_f1.dropna().tolist()
    assert same(weights(resumed), weights(full))
    # a kill after writing best/ at step 4 but before that step's checkpoint: last/ is still step 2's
    train_denoiser(cfg, x, y, xv, yv, ["a", "b"], tmp_path / "cut", stop_after=2)
    shutil.copytree(tmp_path / "cut" / "last", tmp_path / "last_at_2")
    train_denoiser(cfg, x, y, xv, yv, ["a", "b"], tmp_path / "cut", stop_after=4)
    assert json.loads((tmp_path / "cut" / "best" / "train_state.json").read_text())["step"] == 4
    shutil.rmtree(tmp_path / "cut" / "last")
    shutil.copytree(tmp_path / "last_at_2", tmp_path / "cut" / "last")
    resumed, history = train_denoiser(cfg, x, y, xv, yv, ["a", "b"], tmp_path / "cut")
    assert history.val_f1.dropna().tolist() == full_history.val_f1.dropna().tolist()
    assert same(weights(resumed), weights(full))


def test_selection_settings_are_checked(tmp_path, tiny_data):
    x, y = tiny_data
    with pytest.raises(ValueError, match="odd"):
        train_denoiser(tiny_cfg(select_on="val_f1", select_draws=4), x, y, x, y, ["a", "b"], tmp_path / "a")
    with pytest.raises(ValueError, match="select_on"):
        train_denoiser(tiny_cfg(select_on="val_loss"), x, y, x, y, ["a", "b"], tmp_path / "b")


def test_selection_subset_is_fixed_and_sorted():
    a, b = selection_subset(100, 10, seed=3), selection_subset(100, 10, seed=3)
    assert torch.equal(a, b) and torch.equal(a, a.sort().values) and len(a.unique()) == 10
    assert torch.equal(selection_subset(7, None, 0), torch.arange(7))
    assert torch.equal(selection_subset(7, 50, 0), torch.arange(7))


# ----------------------------------------------------------------------------- g: the paper profile


def test_paper_profile_has_the_authors_values():
    cfg = profiles.get_profile("paper", "pneumonia")
    d, t = cfg["diffusion"], cfg["train"]
    assert (d["schedule"], d["prediction_type"], d["time_input"], d["logsnr_clip"]) == (
        "shifted_cosine",
        "v_prediction",
        "logsnr",
        "shifted",
    )
    assert (d["loss_weighting"], d["min_snr_gamma"], d["label_dropout"], d["noise_d"]) == ("authors", 5.0, 0.15, 64)
    assert (t["ema_decay"], t["ema_every"], t["select_on"], t["select_draws"] % 2) == (0.999, 5, "val_f1", 1)
    assert (cfg["scoring"]["n_draws"], cfg["decision"]["rule"]) == (501, "vote")


def test_the_notebooks_load_the_checkpoint_selection_chose(tmp_path):
    """With select_on val_f1 the classifier's weights are the best checkpoint's, not the final EMA's."""
    from diffusion_classifier import study
    from diffusion_classifier.training import diffusion

    cfg = {"train": {"select_on": "val_f1"}}
    p = study.Prepared(cfg, None, {}, {}, tmp_path, {})
    assert p.artifact("denoiser_weights") == tmp_path / "denoiser" / diffusion.BEST / "ema"
    p.cfg = {"train": {"select_on": "final"}}
    assert p.artifact("denoiser_weights") == tmp_path / "denoiser" / "final" / "ema"
