"""Real kills: training and scoring processes die by SIGKILL at seeded random moments and start again; their
results are bit-identical to an uninterrupted run's. A folder being written is locked against a second process.

The workers are forked from the test process: a fresh interpreter would spend ~5 s importing torch and diffusers on
every start. The kill is no gentler for it: the child dies mid-instruction, and the restarted one has only what
is on disk."""

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_cfg

from diffusion_classifier.core.errors import CheckpointError

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]  # SIGKILLed child processes

FORK = multiprocessing.get_context("fork")
KILLS = 3  # kills per run, at seeded random moments


def train_worker(out_dir, steps=40):
    """Train the tiny denoiser with a checkpoint at every step, so that kills often land inside a checkpoint write."""
    torch.set_num_threads(1)
    from diffusion_classifier.training.diffusion import train_denoiser

    g = torch.Generator().manual_seed(0)
    y = torch.arange(64) % 2
    x = (torch.rand(64, 1, 8, 8, generator=g) * 0.5 - 0.75 + 0.9 * y[:, None, None, None]).clamp(-1, 1)
    cfg = tiny_cfg(steps=steps, checkpoint_every=1, log_every=1)
    train_denoiser(cfg, x, y.numpy(), x, y.numpy(), ["a", "b"], out_dir)


def score_worker(argv):
    """The command line's own entry point, as `python -m diffusion_classifier.cli.score` runs it."""
    torch.set_num_threads(1)
    from diffusion_classifier.cli import score

    score.main(argv)


def run(target, *args, timeout: float = 120) -> float:
    """Run target to its end in a child process; its wall time. A hung child fails the test instead of CI."""
    start = time.perf_counter()
    p = FORK.Process(target=target, args=args)
    p.start()
    p.join(timeout)
    if p.is_alive():
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        pytest.fail(f"{target.__name__} still running after {timeout} s")
    assert p.exitcode == 0, f"{target.__name__} failed with exit code {p.exitcode}"
    return time.perf_counter() - start


def killed(delay: float, target, *args) -> bool:
    """Start target in a child process and SIGKILL it after `delay` s; whether it was still running then."""
    p = FORK.Process(target=target, args=args)
    p.start()
    p.join(delay)
    alive = p.is_alive()
    if alive:
        os.kill(p.pid, signal.SIGKILL)
    p.join()
    return alive and p.exitcode == -signal.SIGKILL


def kill_moments(seed: int, duration: float) -> np.ndarray:
    """KILLS moments within the first 10-30 % of an uninterrupted run each: the restarted runs never finish first."""
    return np.random.default_rng(seed).uniform(0.1, 0.3, KILLS) * duration


def files(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def score_args(data_root: Path, checkpoint: Path, out: Path, n_draws: int = 32) -> list[str]:
    return [
        "--checkpoint",
        str(checkpoint),
        "--task",
        "pneumonia",
        "--split",
        "test",
        "--profile",
        "smoke",
        "--data-root",
        str(data_root),
        "--n-draws",
        str(n_draws),
        "--chunk-size",
        "2",
        "--batch-size",
        "16",
        "--precision",
        "no",
        "--out",
        str(out),
    ]


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """Lazy imports and one-off initialisations happen once here, not again in every forked child (~4 s each)."""
    from diffusion_classifier.models.denoiser import Denoiser, build_unet

    threads, folder = torch.get_num_threads(), tmp_path_factory.mktemp("warm")
    try:
        train_worker(folder / "run", steps=1)
        np.savez(
            folder / "pneumoniamnist.npz",
            **{
                f"{s}_{k}": np.zeros((2, 8, 8) if k == "images" else (2, 1), np.uint8)
                for s in ("train", "val", "test")
                for k in ("images", "labels")
            },
        )
        cfg = tiny_cfg()
        cfg["data"]["resolution"] = 16
        Denoiser(build_unet(cfg, 1, 2), cfg, ["normal", "pneumonia"]).save(folder / "ckpt")
        score_worker(score_args(folder, folder / "ckpt", folder / "scores", n_draws=1))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def score_inputs(make_npz, smoke_checkpoint):
    return make_npz(n=(8, 8, 40)).parent, smoke_checkpoint


def wait_for_lock(folder: Path, pid: int, timeout: float = 60):
    lock = folder / ".lock"
    deadline = time.monotonic() + timeout
    while not (lock.exists() and f"process {pid} " in lock.read_text()):
        assert time.monotonic() < deadline, f"process {pid} never locked {folder}"
        time.sleep(0.02)


def test_training_killed_at_random_moments_ends_bit_identical(tmp_path, warm):
    duration = run(train_worker, tmp_path / "full")
    progress = []
    for delay in kill_moments(0, duration):
        assert killed(delay, train_worker, tmp_path / "killed"), "the run ended before its kill"
        state = tmp_path / "killed" / "last" / "train_state.json"
        progress.append(json.loads(state.read_text())["step"] if state.exists() else 0)
    print(f"run {duration:.2f} s, killed at steps {progress}")
    assert 0 < max(progress) < 40  # the kills cut real work short
    run(train_worker, tmp_path / "killed")
    for checkpoint in ("final", "last"):
        full, resumed = files(tmp_path / "full" / checkpoint), files(tmp_path / "killed" / checkpoint)
        assert full.keys() == resumed.keys()
        for name in full:
            assert full[name] == resumed[name], f"{checkpoint}/{name} differs"


def test_scoring_killed_at_random_moments_ends_bit_identical(tmp_path, warm, score_inputs):
    data_root, checkpoint = score_inputs
    duration = run(score_worker, score_args(data_root, checkpoint, tmp_path / "full"))
    progress = []
    for delay in kill_moments(1, duration):
        assert killed(delay, score_worker, score_args(data_root, checkpoint, tmp_path / "killed"))
        progress.append(len(list((tmp_path / "killed").glob("chunk_*.npz"))))
    print(f"run {duration:.2f} s, killed with {progress} of 20 chunks done")
    assert 0 < max(progress) < 20
    run(score_worker, score_args(data_root, checkpoint, tmp_path / "killed"))
    with np.load(tmp_path / "full" / "scores.npz") as full, np.load(tmp_path / "killed" / "scores.npz") as resumed:
        assert full["E"].shape == (40, 2, 32)
        for key in ("E", "U", "labels"):
            assert np.array_equal(full[key], resumed[key]), key


def test_a_second_process_cannot_write_a_run_being_trained(tmp_path, warm, tiny_data):
    from diffusion_classifier.core.checkpoints import run_lock
    from diffusion_classifier.training.diffusion import train_denoiser

    x, y = tiny_data
    p = FORK.Process(target=train_worker, args=(tmp_path / "run", 100_000))
    p.start()
    try:
        wait_for_lock(tmp_path / "run", p.pid)
        with pytest.raises(CheckpointError, match=f"run: in use by process {p.pid} on "):
            train_denoiser(tiny_cfg(), x, y, x, y, ["a", "b"], tmp_path / "run")
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.join()
    with run_lock(tmp_path / "run"):  # the kernel released the killed holder's lock: nothing stale is left
        pass


def test_a_second_process_cannot_write_scores_being_written(tmp_path, warm, score_inputs, capsys):
    from diffusion_classifier.cli import score

    data_root, checkpoint = score_inputs
    args = score_args(data_root, checkpoint, tmp_path / "scores", n_draws=4096)
    p = FORK.Process(target=score_worker, args=(args,))
    p.start()
    try:
        wait_for_lock(tmp_path / "scores", p.pid)
        with pytest.raises(SystemExit) as e:
            score.main(args)
        assert str(e.value).startswith("error: ") and f"scores: in use by process {p.pid} on " in str(e.value)
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.join()
