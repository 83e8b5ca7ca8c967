"""The classification engine: seeded draws, batching invariance, resume, early stopping, elimination, sharding."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import tiny_cfg
from diffusion_classifier import decision
from diffusion_classifier.denoiser import Denoiser, build_unet
from diffusion_classifier.errors import CheckpointError
from diffusion_classifier.scoring import ScoreSettings, ScoringEngine, draw_noise, draw_time

S = dict(n_draws=8, batch_size=7, chunk_size=5, mixed_precision="no")


@pytest.fixture
def images():
    return torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_draws_depend_only_on_seed_image_and_draw():
    s = ScoreSettings(n_draws=8)
    assert draw_time(s, 3, 2) == draw_time(ScoreSettings(n_draws=64), 3, 2)
    assert torch.equal(draw_noise(s, 3, 2, (1, 4, 4)), draw_noise(s, 3, 2, (1, 4, 4)))
    assert not torch.equal(draw_noise(s, 3, 2, (1, 4, 4)), draw_noise(s, 4, 2, (1, 4, 4)))
    assert draw_time(ScoreSettings(seed=1), 3, 2) != draw_time(s, 3, 2)
    grid = sorted(draw_time(ScoreSettings(n_draws=4, t_sampling="grid"), 0, k) for k in range(4))
    assert grid == pytest.approx([0.125, 0.375, 0.625, 0.875])


def test_errors_match_a_naive_loop(tiny_model, images):
    s = ScoreSettings(**S)
    scores = ScoringEngine(tiny_model, s, "cpu").score(images[:3], 2)
    sched = tiny_model.schedule
    for i in range(3):
        for k in range(s.n_draws):
            u = torch.tensor([draw_time(s, i, k)], dtype=torch.float32)
            eps = draw_noise(s, i, k, images.shape[1:])[None]
            x_t = sched.add_noise(images[i:i + 1], eps, u)
            for c in range(2):
                with torch.no_grad():
                    pred = tiny_model.predict(x_t, u, torch.tensor([c]))
                e = (pred - eps).pow(2).mean().item()
                assert scores.E[i, c, k] == pytest.approx(e, rel=1e-5)


def test_batch_size_and_chunking_do_not_change_results(tiny_model, images):
    a = ScoringEngine(tiny_model, ScoreSettings(**S), "cpu").score(images, 2)
    b = ScoringEngine(tiny_model, ScoreSettings(**{**S, "batch_size": 64, "chunk_size": 12}), "cpu").score(images, 2)
    np.testing.assert_array_equal(a.U, b.U)
    np.testing.assert_allclose(a.E, b.E, rtol=1e-5)
    for rule in ("mean", "vote"):
        assert (decision.predict(a.E, rule) == decision.predict(b.E, rule)).all()


def test_interrupted_run_resumes_bit_identically(tiny_model, images, tmp_path, monkeypatch):
    full = ScoringEngine(tiny_model, ScoreSettings(**S), "cpu").score(images, 2, tmp_path / "full")
    engine = ScoringEngine(tiny_model, ScoreSettings(**S), "cpu")
    real, calls = engine.score_images, []

    def dies_on_third_chunk(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)
    monkeypatch.setattr(engine, "score_images", dies_on_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        engine.score(images, 2, tmp_path / "killed")
    assert len(list((tmp_path / "killed").glob("chunk_*.npz"))) == 2
    monkeypatch.setattr(engine, "score_images", real)
    resumed = engine.score(images, 2, tmp_path / "killed")
    assert np.array_equal(full.E, resumed.E) and np.array_equal(full.U, resumed.U)


def test_cache_refuses_other_settings(tiny_model, images, tmp_path):
    ScoringEngine(tiny_model, ScoreSettings(**S), "cpu").score(images, 2, tmp_path / "c")
    with pytest.raises(CheckpointError, match="other"):
        ScoringEngine(tiny_model, ScoreSettings(**{**S, "seed": 5}), "cpu").score(images, 2, tmp_path / "c")


def test_early_stopping_gives_the_full_vote_with_fewer_evaluations(tiny_model, images):
    s = {**S, "n_draws": 32}
    full = ScoringEngine(tiny_model, ScoreSettings(**s), "cpu").score(images, 2)
    early = ScoringEngine(tiny_model, ScoreSettings(**s, early_stop="exact", round_size=4), "cpu").score(images, 2)
    assert (decision.predict_vote(early.E) == decision.predict_vote(full.E)).all()
    assert early.unet_evals.sum() <= full.unet_evals.sum()
    done = np.isfinite(early.E)
    np.testing.assert_allclose(early.E[done], full.E[done], rtol=1e-5)


@pytest.mark.parametrize("mode,alpha", [("exact", 0.0), ("sequential", 0.05)])
def test_engine_stops_where_the_replay_on_full_scores_stops(tiny_model, images, mode, alpha):
    """The notebook judges stopping rules by replaying them on stored full scores; that is only valid if the
    engine stops each image after exactly the same draws."""
    s = {**S, "n_draws": 32}
    full = ScoringEngine(tiny_model, ScoreSettings(**s), "cpu").score(images, 2)
    early = ScoringEngine(tiny_model, ScoreSettings(**s, early_stop=mode, early_stop_alpha=alpha, round_size=4),
                          "cpu").score(images, 2)
    replay = decision.replay_early_stop(full.E, round_size=4, alpha=alpha)
    assert (np.isfinite(early.E) == np.isfinite(replay)).all()
    with pytest.raises(ValueError, match="early_stop"):
        ScoreSettings(early_stop=True)


def test_successive_elimination_three_classes(images):
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = Denoiser(build_unet(cfg, 1, 3), cfg, ["a", "b", "c"]).eval()
    s = ScoreSettings(**{**S, "n_draws": 8}, stages=[(2, 2), (6, 2)])
    scores = ScoringEngine(model, s, "cpu").score(images, 3)
    # every class gets the first 2 draws; exactly one class per image is dropped after them
    assert np.isfinite(scores.E[:, :, :2]).all()
    assert (np.isfinite(scores.E[:, :, 2:]).any(2).sum(1) == 2).all()
    assert scores.unet_evals.tolist() == [2 * 3 + 6 * 2] * len(images)
    full = ScoringEngine(model, ScoreSettings(**{**S, "n_draws": 8}), "cpu").score(images, 3)
    both = np.isfinite(scores.E)
    np.testing.assert_allclose(scores.E[both], full.E[both], rtol=1e-5)


def test_two_processes_give_the_same_errors_as_one(tiny_model, tmp_path, make_npz):
    """torchrun with 2 CPU processes (gloo) through the command-line entry, against one process."""
    data = make_npz(n=(8, 8, 10), size=8)
    tiny_model.class_names = ["normal", "pneumonia"]
    tiny_model.save(tmp_path / "ckpt")
    common = ["--checkpoint", str(tmp_path / "ckpt"), "--task", "pneumonia", "--split", "test", "--profile", "smoke",
              "--data-root", str(data.parent), "--n-draws", "4", "--chunk-size", "3", "--precision", "no"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "diffusion_classifier.score", *common, "--out", str(tmp_path / "one")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    assert "vote rule accuracy" in one.stdout
    for attempt in range(2):  # one relaunch: torchrun's rendezvous has failed once in ~8 runs here (cause not found)
        two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                              "-m", "diffusion_classifier.score", *common, "--out", str(tmp_path / "two")],
                             env=env, capture_output=True, text=True, timeout=300)
        if two.returncode == 0:
            break
    assert two.returncode == 0, two.stderr[:3000] + two.stderr[-1500:]
    a, b = np.load(tmp_path / "one" / "scores.npz"), np.load(tmp_path / "two" / "scores.npz")
    assert np.array_equal(a["E"], b["E"]) and np.array_equal(a["U"], b["U"])


def test_compiled_forward_gives_the_eager_errors(tiny_model, images):
    s = {**S, "batch_size": 16, "chunk_size": 4}  # one batch shape, so one compilation
    eager = ScoringEngine(tiny_model, ScoreSettings(**s), "cpu").score(images, 2)
    compiled = ScoringEngine(tiny_model, ScoreSettings(**s, compile=True), "cpu")
    np.testing.assert_allclose(compiled.score(images, 2).E, eager.E, rtol=1e-4, atol=1e-6)
    assert compiled.predict is not tiny_model.predict and ScoreSettings(**s, compile=True).key() == ScoreSettings(**s).key()
