"""Scoring speed: UNet evaluations per second of the engine against the raw forward pass (the ceiling) and a
naive per-image, per-class, per-draw loop (the reference), plus exact early stopping and bf16 vs fp32.

    .venv/bin/python benchmarks/scoring.py [--task pneumonia] [--profile cpu] [--images 128] [--draws 32]

Uses the trained denoiser of the profile's run (notebook 02) when it exists, else a freshly initialised one of
the same architecture (speed does not depend on the weights; early-stopping savings do). Prints a table and
writes results/benchmarks/scoring.csv.
"""
import argparse
import platform
import time

import numpy as np
import pandas as pd
import torch

from diffusion_classifier import decision, study
from diffusion_classifier.denoiser import Denoiser, build_unet
from diffusion_classifier.device import autocast
from diffusion_classifier.paths import results_dir
from diffusion_classifier.scoring import ScoreSettings, ScoringEngine, draw_noise, draw_time


def timed(fn, repeat=1):
    fn()  # warm-up (oneDNN picks kernels on first use)
    t0 = time.perf_counter()
    for _ in range(repeat):
        out = fn()
    return (time.perf_counter() - t0) / repeat, out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="pneumonia")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--draws", type=int, default=32)
    ap.add_argument("--naive-evals", type=int, default=256)
    a = ap.parse_args()

    p = study.prepare(a.task, a.profile)
    ckpt = p.run_dir / "denoiser" / "final" / "ema"
    if ckpt.exists():
        model, weights = Denoiser.load(ckpt, p.class_names), "trained"
    else:
        torch.manual_seed(0)
        model, weights = Denoiser(build_unet(p.cfg, p.x["train"].shape[1], 2), p.cfg, p.class_names).eval(), "untrained"
    x, y = p.x["test"][:a.images], p.y["test"][:a.images]
    C, K = model.n_classes, a.draws
    settings = ScoreSettings.from_profile(p.cfg, n_draws=K)
    engine = ScoringEngine(model, settings, "cpu")
    n_evals = len(x) * C * K
    rows = []

    # (a) the ceiling: the UNet alone on a ready batch, at the engine's batch size and precision
    bs = settings.batch_size
    xb = x[:1].repeat(bs, 1, 1, 1).contiguous(memory_format=torch.channels_last)
    ub, lb = torch.rand(bs), torch.randint(0, C, (bs,))
    with torch.inference_mode():
        def forward():
            with autocast(engine.device, engine.precision):
                return model.predict(xb, ub, lb)
        t_raw, _ = timed(forward, repeat=3)
    rows.append({"method": f"raw UNet forward (batch {bs}, {engine.precision})", "evals_per_s": bs / t_raw})

    # (b) the engine, end to end (draws, noising, forward, errors)
    t_eng, full = timed(lambda: engine.score(x, C))
    rows.append({"method": f"engine (batch {bs}, {engine.precision})", "evals_per_s": n_evals / t_eng})

    # (c) the naive reference: one image, one class, one draw per forward pass, fp32
    sched = model.schedule
    def naive():
        done = 0
        with torch.no_grad():
            for i in range(len(x)):
                for k in range(K):
                    u = torch.tensor([draw_time(settings, i, k)], dtype=torch.float32)
                    eps = draw_noise(settings, i, k, x.shape[1:])[None]
                    x_t = sched.add_noise(x[i:i + 1], eps, u)
                    for c in range(C):
                        pred = model.predict(x_t, u, torch.tensor([c]))
                        _ = (sched.eps_and_x0(pred, x_t, u)[0] - eps).pow(2).mean()
                        done += 1
                        if done >= a.naive_evals:
                            return done
        return done
    t_naive, done = timed(naive)
    rows.append({"method": "naive loop (batch 1, fp32)", "evals_per_s": done / t_naive})

    # fp32 engine: does bf16 change any decision?
    fp32 = ScoringEngine(model, ScoreSettings.from_profile(p.cfg, n_draws=K, mixed_precision="no"), "cpu")
    t32, full32 = timed(lambda: fp32.score(x, C))
    rows.append({"method": f"engine (batch {bs}, fp32)", "evals_per_s": n_evals / t32})

    # exact early stopping of the majority vote
    early = ScoringEngine(model, ScoreSettings.from_profile(p.cfg, n_draws=K, early_stop=True), "cpu")
    t_early, es = timed(lambda: early.score(x, C))
    rows.append({"method": f"engine + exact early stopping (rounds of {settings.round_size})",
                 "evals_per_s": es.unet_evals.sum() / t_early})

    df = pd.DataFrame(rows)
    df["ratio_vs_raw"] = df.evals_per_s / rows[0]["evals_per_s"]
    df["ratio_vs_naive"] = df.evals_per_s / rows[2]["evals_per_s"]
    df["images_per_s"] = df.evals_per_s / (C * K)
    same_vote = bool((decision.predict_vote(es.E) == decision.predict_vote(full.E)).all())
    agree = {r: float((decision.predict(full.E, r) == decision.predict(full32.E, r)).mean()) for r in ("mean", "vote")}
    df["note"] = ""
    df.loc[df.method.str.contains("early"), "note"] = (
        f"evals/image {es.unet_evals.mean():.1f} vs {C * K} without: {C * K / es.unet_evals.mean():.2f}x fewer; "
        f"predictions identical to the full vote: {same_vote}; exact stopping needs > K/2 draws, so < 2x for C = 2")
    df.loc[df.method.str.startswith("engine (") & df.method.str.contains("fp32"), "note"] = (
        f"bf16 vs fp32 decisions agree on {agree['mean']:.1%} (mean rule), {agree['vote']:.1%} (vote rule); "
        f"max |dE| {np.nanmax(np.abs(full.E - full32.E)):.2e}")
    df.insert(0, "setup", f"{a.task} {a.profile} ({weights} weights), {len(x)} images x {C} classes x {K} draws, "
                          f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                          f"torch {torch.__version__}")
    out = results_dir() / "benchmarks" / "scoring.csv"
    df.round(3).to_csv(out, index=False)
    with pd.option_context("display.max_colwidth", 200, "display.width", 250):
        print(df.drop(columns="setup").round(3).to_string(index=False))
    print(f"\nsetup: {df.setup[0]}\nwritten: {out}")


if __name__ == "__main__":
    main()
