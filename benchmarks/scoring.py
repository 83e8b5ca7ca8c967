"""Scoring speed: UNet evaluations per second of the engine against the raw forward pass (the ceiling) and a
naive per-image, per-class, per-draw loop (the reference), the raw forward over batch sizes (why the cpu
profile batches 64, not 512), bf16 vs fp32, and early stopping (exact and sequential).

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


def timed(fn, repeat=1, warmup=None):
    """Best time of `repeat` calls (the least disturbed by other work on the machine) and the last output."""
    (warmup or fn)()  # oneDNN picks kernels (and torch.compile compiles) on first use
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="pneumonia")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--draws", type=int, default=32)
    ap.add_argument("--naive-evals", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds of raw / engine / naive")
    ap.add_argument("--batch-sizes", type=int, nargs="*", default=[1, 16, 32, 64, 128, 256, 512],
                    help="raw forward batch sizes to sweep")
    a = ap.parse_args()

    p = study.prepare(a.task, a.profile)
    ckpt = p.run_dir / "denoiser" / "final" / "ema"
    if ckpt.exists():
        model, weights = Denoiser.load(ckpt, p.class_names), "trained"
    else:
        torch.manual_seed(0)
        model, weights = Denoiser(build_unet(p.cfg, p.x["train"].shape[1], 2), p.cfg, p.class_names).eval(), "untrained"
    x = p.x["test"][:a.images]
    C, K = model.n_classes, a.draws
    settings = ScoreSettings.from_profile(p.cfg, n_draws=K)
    engine = ScoringEngine(model, settings, "cpu")
    n_evals = len(x) * C * K
    rows = []

    # (a) the ceiling, (b) the engine and (c) the naive reference are timed in interleaved rounds (best of
    # each), so that drifts in the machine's speed hit all three alike and the ratios stay meaningful.
    def raw_forward(batch, calls):
        """The UNet alone on a ready batch at the engine's precision, `calls` times; returns the evaluations."""
        xb = x[:1].repeat(batch, 1, 1, 1).contiguous(memory_format=torch.channels_last)
        ub, lb = torch.rand(batch), torch.randint(0, C, (batch,))

        def run():
            with torch.inference_mode():
                for _ in range(calls):
                    with autocast(engine.device, engine.precision):
                        model.predict(xb, ub, lb)
            return calls * batch
        return run

    bs = settings.batch_size
    raw = raw_forward(bs, max(3, 2048 // bs))  # (a) the ceiling, at the engine's batch size

    sched = model.schedule

    def naive():  # (c) one image, one class, one draw per forward pass, fp32
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

    # (b) the engine: draws, noising, forward, errors. Its time inside the UNet forward is clocked too: the
    # engine's own overhead, free of the drift between separately timed runs.
    in_forward, forward = [0.0], engine.predict

    def clocked_forward(*args):
        t0 = time.perf_counter()
        out = forward(*args)
        in_forward[0] += time.perf_counter() - t0
        return out

    engine.predict = clocked_forward
    runs = {"raw": raw, "engine": lambda: engine.score(x, C), "naive": naive}
    engine.score(x[:4], C)  # warm-ups: oneDNN picks its kernels on first use
    raw(), naive()
    best, out, forward_share = {k: float("inf") for k in runs}, {}, 0.0
    for _ in range(a.rounds):
        for name, fn in runs.items():
            in_forward[0] = 0.0
            t0 = time.perf_counter()
            out[name] = fn()
            t = time.perf_counter() - t0
            if t < best[name]:
                best[name] = t
                forward_share = in_forward[0] / t if name == "engine" else forward_share
    engine.predict = forward
    full = out["engine"]
    rows.append({"method": f"raw UNet forward (batch {bs}, {engine.precision})", "evals_per_s": out["raw"] / best["raw"]})
    rows.append({"method": f"engine (batch {bs}, {engine.precision})", "evals_per_s": n_evals / best["engine"]})
    rows.append({"method": "naive loop (batch 1, fp32)", "evals_per_s": out["naive"] / best["naive"]})

    # the engine with a compiled forward (compiled during the warm-up)
    comp = ScoringEngine(model, ScoreSettings.from_profile(p.cfg, n_draws=K, compile=True), "cpu")
    t_comp, full_comp = timed(lambda: comp.score(x, C), repeat=2, warmup=lambda: comp.score(x[:4], C))
    rows.append({"method": f"engine + torch.compile (batch {bs}, {engine.precision})", "evals_per_s": n_evals / t_comp})

    # fp32 engine: does bf16 change any decision?
    fp32 = ScoringEngine(model, ScoreSettings.from_profile(p.cfg, n_draws=K, mixed_precision="no"), "cpu")
    t32, full32 = timed(lambda: fp32.score(x, C), warmup=lambda: fp32.score(x[:4], C))
    rows.append({"method": f"engine (batch {bs}, fp32)", "evals_per_s": n_evals / t32})

    # early stopping of the majority vote: exact, and sequential at the profile's alpha
    stopped = {}
    for mode in ("exact", "sequential"):
        eng = ScoringEngine(model, ScoreSettings.from_profile(p.cfg, n_draws=K, early_stop=mode), "cpu")
        t, stopped[mode] = timed(lambda: eng.score(x, C), repeat=2, warmup=lambda: eng.score(x[:4], C))
        label = "exact" if mode == "exact" else f"sequential, alpha {settings.early_stop_alpha:g}"
        rows.append({"method": f"engine + {label} early stopping (rounds of {settings.round_size})",
                     "evals_per_s": stopped[mode].unet_evals.sum() / t, "wall_s": t, "mode": mode})

    # where the ceiling lies: the raw forward over batch sizes (less precise than the interleaved rounds above)
    for b in a.batch_sizes:
        t, _ = timed(raw_forward(b, 1), repeat=max(3, 1024 // b))
        rows.append({"method": f"raw UNet forward, batch-size sweep (batch {b}, {engine.precision})",
                     "evals_per_s": b / t})

    df = pd.DataFrame(rows)
    df["ratio_vs_raw"] = df.evals_per_s / rows[0]["evals_per_s"]
    df["ratio_vs_naive"] = df.evals_per_s / rows[2]["evals_per_s"]
    df["images_per_s"] = df.evals_per_s / (C * K)
    df["unet_evals_per_image"] = float(C * K)
    df["note"] = ""
    for mode, es in stopped.items():
        at = df["mode"] == mode
        same = decision.predict_vote(es.E) == decision.predict_vote(full.E)
        df.loc[at, "unet_evals_per_image"] = es.unet_evals.mean()
        df.loc[at, "images_per_s"] = len(x) / df.loc[at, "wall_s"]
        df.loc[at, "note"] = (
            f"{C * K / es.unet_evals.mean():.2f}x fewer evaluations per image; {len(x) / best['engine']:.1f} -> "
            f"{len(x) / df.loc[at, 'wall_s'].item():.1f} images/s; predictions identical to the full vote on "
            f"{same.sum()}/{len(same)} images" + ("; exact stopping needs > K/2 draws, so < 2x for C = 2"
                                                  if mode == "exact" else ""))
    df = df.drop(columns=["wall_s", "mode"])
    df.loc[df.method == f"engine (batch {bs}, {engine.precision})", "note"] = (
        f"{forward_share:.1%} of the engine's wall time is spent in the UNet forward itself (own overhead "
        f"{1 - forward_share:.1%}); timed in {a.rounds} interleaved rounds with the raw forward and the naive loop")
    df.loc[df.method.str.contains("compile"), "note"] = (
        f"decisions agree with the eager engine on {(decision.predict_vote(full_comp.E) == decision.predict_vote(full.E)).mean():.1%}"
        f" (vote rule); max |dE| {np.nanmax(np.abs(full.E - full_comp.E)):.2e}")
    agree = {r: float((decision.predict(full.E, r) == decision.predict(full32.E, r)).mean()) for r in ("mean", "vote")}
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
