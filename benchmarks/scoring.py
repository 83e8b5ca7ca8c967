"""Scoring speed: UNet evaluations per second of the engine against the raw forward pass (the ceiling), a
naive per-image, per-class, per-draw loop (the reference) and the loop shapes of the authors' code and of Li et al.
(same checkpoint, draws, precision and evaluations), the raw forward over batch sizes (why the cpu
profile batches 64, not 512), bf16 vs fp32, and early stopping (exact and sequential). Every row also gives the
FLOPs per UNet evaluation (torch.utils.flop_counter), the achieved FLOP/s and the model FLOP utilisation (MFU:
achieved FLOP/s over this machine's compute peak at the row's precision, measured in the same run), and on a GPU
the peak memory.

    .venv/bin/python benchmarks/scoring.py [--task pneumonia] [--profile cpu] [--images 128] [--draws 32]
    .venv/bin/python benchmarks/scoring.py --quick            # seconds: smoke-size model, for development
    .venv/bin/python benchmarks/scoring.py --profile paper --device cuda --out scoring_gpu.csv

Uses the trained denoiser of the profile's run (notebook 02) when it exists, else a freshly initialised one of
the same architecture (speed does not depend on the weights; early-stopping savings do), and random images of the
task's shape when its data is absent. Prints a table and writes results/benchmarks/scoring.csv.
"""

import argparse

import measure
import numpy as np
import pandas as pd
import torch

from diffusion_classifier import profiles, study
from diffusion_classifier.classifier import rules
from diffusion_classifier.classifier.engine import ScoreSettings, ScoringEngine, draw_noise, draw_time
from diffusion_classifier.core.device import autocast, cap_threads, device_name
from diffusion_classifier.core.paths import results_dir
from diffusion_classifier.data import tasks
from diffusion_classifier.models.denoiser import Denoiser, build_network


def timed(fn, device, repeat=1, warmup=None):
    """Best time of `repeat` calls (the least disturbed by other work on the machine), the last output and the
    peak GPU memory of the calls."""
    (warmup or fn)()  # oneDNN picks kernels (and torch.compile compiles) on first use
    best, base = float("inf"), measure.reset_peak_memory(device)
    for _ in range(repeat):
        t0 = measure.clock(device)
        out = fn()
        best = min(best, measure.clock(device) - t0)
    return best, out, measure.peak_memory_gb(device, base)


def load(task: str, profile: str, n_images: int):
    """(cfg, model, weights, images, what the images are): the profile's trained denoiser and the task's test
    images where they exist, else a fresh model and random images of the task's shape."""
    if tasks.task_source(task).exists():
        p = study.prepare(task, profile)
        cfg, x, names, data = p.cfg, p.x["test"][:n_images], p.class_names, "test images"
        ckpt = p.run_dir / "denoiser" / "final" / "ema"
    else:
        cfg, names, data = (
            profiles.get_profile(profile, task),
            list(tasks.TASKS[task].classes),
            "random images (no data)",
        )
        res = cfg["data"]["resolution"]
        shape = (n_images, tasks.TASKS[task].channels, res, res)
        x = torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
        ckpt = None
    if ckpt is not None and ckpt.exists():
        return cfg, Denoiser.load(ckpt, names), "trained", x, data
    torch.manual_seed(0)
    return cfg, Denoiser(build_network(cfg, x.shape[1], len(names)), cfg, names).eval(), "untrained", x, data


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="pneumonia")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--draws", type=int, default=32)
    ap.add_argument("--naive-evals", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds of raw / engine / naive")
    ap.add_argument(
        "--batch-sizes",
        type=int,
        nargs="*",
        default=[1, 16, 32, 64, 128, 256, 512],
        help="raw forward batch sizes to sweep",
    )
    ap.add_argument("--batch-size", type=int, default=None, help="the engine's batch (default: the profile's)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile row (its compilation)")
    ap.add_argument("--matmul-size", type=int, default=None, help="side of the peak-measuring matmul")
    ap.add_argument("--out", default=None, help="file name under results/benchmarks (default scoring.csv)")
    ap.add_argument("--quick", action="store_true", help="development check: smoke-size model, a few seconds")
    a = ap.parse_args()
    if a.quick:
        a.profile, a.images, a.draws, a.naive_evals, a.rounds = "smoke", 8, 4, 16, 1
        a.batch_sizes, a.no_compile, a.out = [1, 16], True, a.out or "scoring_quick.csv"
    device = measure.pick_device(a.device)
    threads = cap_threads()

    cfg, model, weights, x, data = load(a.task, a.profile, a.images)
    C, K = model.n_classes, a.draws
    if a.batch_size:
        cfg["scoring"]["batch_size"] = a.batch_size
    settings = ScoreSettings.from_profile(cfg, n_draws=K)
    engine = ScoringEngine(model, settings, device)
    n_evals = len(x) * C * K
    rows = []
    # the compute peak at the engine's precision and fp32, before and after the timings (the better of the two)
    n = a.matmul_size or (8192 if device.type == "cuda" else 1024 if a.quick else 2048)
    peaks = {q: measure.compute_peak(device, q, n) for q in {engine.precision, "no"}}

    # (a) the ceiling, (b) the engine and (c) the naive reference are timed in interleaved rounds (best of
    # each), so that drifts in the machine's speed hit all three alike and the ratios stay meaningful.
    def raw_forward(batch, calls):
        """The UNet alone on a ready batch at the engine's precision, `calls` times; returns the evaluations."""
        xb = x[:1].repeat(batch, 1, 1, 1).to(device).contiguous(memory_format=torch.channels_last)
        ub, lb = torch.rand(batch, device=device), torch.randint(0, C, (batch,), device=device)

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
                    u = torch.tensor([draw_time(settings, i, k)], dtype=torch.float32, device=device)
                    eps = draw_noise(settings, i, k, x.shape[1:])[None].to(device)
                    x_t = sched.add_noise(x[i : i + 1].to(device), eps, u)
                    for c in range(C):
                        pred = model.predict(x_t, u, torch.tensor([c], device=device))
                        _ = (sched.eps_and_x0(pred, x_t, u)[0] - eps).pow(2).mean()
                        done += 1
                        if done >= a.naive_evals:
                            return done
        return done

    # (d), (e) the two peer loop shapes on the same checkpoint, draws, precision and number of evaluations:
    # the authors' classify loop (per batch of images: per trial a fresh (t, noise) per image, per class one forward
    # of the image batch) and Li et al.'s (per image: per class one forward of a batch of its draws)
    def draws_of(images, ks):
        u = torch.tensor([draw_time(settings, i, k) for i, k in zip(images, ks)], dtype=torch.float32, device=device)
        eps = torch.stack([draw_noise(settings, i, k, x.shape[1:]) for i, k in zip(images, ks)]).to(device)
        return u, eps

    def errors_of(x0, u, eps, c):
        x_t = sched.add_noise(x0, eps, u)
        with autocast(engine.device, engine.precision):
            pred = model.predict(x_t, u, torch.full((len(u),), c, device=device))
        return (sched.eps_and_x0(pred.float(), x_t, u)[0] - eps).pow(2).flatten(1).mean(1).cpu()

    def authors_loop():
        E = torch.zeros(len(x), C, K)
        with torch.inference_mode():
            for b0 in range(0, len(x), bs):
                ids = list(range(b0, min(b0 + bs, len(x))))
                xb = x[ids].to(device)
                for k in range(K):
                    u, eps = draws_of(ids, [k] * len(ids))
                    for c in range(C):
                        E[ids, c, k] = errors_of(xb, u, eps, c)
        return E

    def li_loop():
        E = torch.zeros(len(x), C, K)
        with torch.inference_mode():
            for i in range(len(x)):
                u, eps = draws_of([i] * K, range(K))
                x0 = x[i : i + 1].to(device).expand(K, *x.shape[1:])
                for c in range(C):
                    E[i, c] = errors_of(x0, u, eps, c)
        return E

    # (b) the engine: draws, noising, forward, errors. Its time inside the UNet forward is clocked too: the
    # engine's own overhead, free of the drift between separately timed runs.
    in_forward, forward = [0.0], engine.predict

    def clocked_forward(*args):
        t0 = measure.clock(device)
        out = forward(*args)
        in_forward[0] += measure.clock(device) - t0
        return out

    engine.predict = clocked_forward
    runs = {"raw": raw, "engine": lambda: engine.score(x, C), "naive": naive, "authors": authors_loop, "li": li_loop}
    engine.score(x[:4], C)  # warm-ups: oneDNN picks its kernels on first use
    raw(), naive(), authors_loop(), li_loop()
    best, out, forward_share = {k: float("inf") for k in runs}, {}, 0.0
    base = measure.reset_peak_memory(device)
    for _ in range(a.rounds):
        for name, fn in runs.items():
            in_forward[0] = 0.0
            t0 = measure.clock(device)
            out[name] = fn()
            t = measure.clock(device) - t0
            if t < best[name]:
                best[name] = t
                forward_share = in_forward[0] / t if name == "engine" else forward_share
    engine.predict = forward
    full = out["engine"]
    p, mem = engine.precision, measure.peak_memory_gb(device, base)  # the three share one window: the largest of them
    rows.append(
        {
            "method": f"raw UNet forward (batch {bs}, {p})",
            "evals_per_s": out["raw"] / best["raw"],
            "precision": p,
            "peak_mem_gb": mem,
        }
    )
    rows.append(
        {
            "method": f"engine (batch {bs}, {p})",
            "evals_per_s": n_evals / best["engine"],
            "precision": p,
            "peak_mem_gb": mem,
        }
    )
    rows.append(
        {
            "method": "naive loop (batch 1, fp32)",
            "evals_per_s": out["naive"] / best["naive"],
            "precision": "no",
            "peak_mem_gb": mem,
        }
    )
    for key, method in (
        ("authors", f"authors' loop shape (images x draws x classes, image batch {bs}, {p})"),
        ("li", f"Li et al.'s loop shape (per image and class, a batch of its {K} draws, {p})"),
    ):
        dE = np.nanmax(np.abs(out[key].numpy() - out["engine"].E))
        rows.append(
            {
                "method": method,
                "evals_per_s": n_evals / best[key],
                "precision": p,
                "peak_mem_gb": mem,
                "note": f"same draws as the engine: max |dE| {dE:.2e}; timed in the interleaved rounds",
            }
        )

    def attempt(method, precision, fn):
        """One more row; a failure (out of memory, a compiler error) is reported in it, not fatal."""
        try:
            return fn()
        except Exception as exc:
            print(f"{method}: failed ({type(exc).__name__}: {str(exc)[:200]})", flush=True)
            rows.append(
                {
                    "method": method,
                    "precision": precision,
                    "evals_per_s": np.nan,
                    "note": f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}",
                }
            )

    # the engine with a compiled forward, timed in interleaved rounds with a fresh eager engine, and what the
    # compilation costs: the first call of each (4 images) before any timing, the compiled one compiling
    compile_note = ""

    def compiled():
        nonlocal compile_note
        comp = ScoringEngine(model, ScoreSettings.from_profile(cfg, n_draws=K, compile=True), device)
        eager = ScoringEngine(model, ScoreSettings.from_profile(cfg, n_draws=K), device)
        first = {}
        for name, eng in (("eager", eager), ("compiled", comp)):
            t0 = measure.clock(device)
            eng.score(x[:4], C)
            first[name] = measure.clock(device) - t0
        if comp.predict.error is not None:  # the engine fell back to eager: not a compiled timing
            raise RuntimeError(comp.predict.error)
        best, base = {"eager": float("inf"), "compiled": float("inf")}, measure.reset_peak_memory(device)
        for _ in range(a.rounds):
            for name, eng in (("eager", eager), ("compiled", comp)):
                t0 = measure.clock(device)
                out = eng.score(x, C)
                best[name] = min(best[name], measure.clock(device) - t0)
                if name == "compiled":
                    scores = out
        gain = best["eager"] / best["compiled"]
        overhead = first["compiled"] - first["eager"]
        saved_per_eval = (best["eager"] - best["compiled"]) / n_evals
        break_even = overhead / saved_per_eval if saved_per_eval > 0 else float("inf")
        compile_note = (
            f"{gain:.2f}x the eager engine in {a.rounds} interleaved rounds; compiling cost {overhead:.1f} s (first "
            f"call on 4 images: {first['compiled']:.1f} s compiled vs {first['eager']:.1f} s eager), repaid after "
            f"{break_even:,.0f} UNet evaluations"
        )
        rows.append(
            {
                "method": f"engine + torch.compile (batch {bs}, {p})",
                "evals_per_s": n_evals / best["compiled"],
                "precision": p,
                "peak_mem_gb": measure.peak_memory_gb(device, base),
            }
        )
        return scores

    full_comp = None if a.no_compile else attempt(f"engine + torch.compile (batch {bs}, {p})", p, compiled)

    # fp32 engine: does bf16 change any decision?
    def fp32():
        eng = ScoringEngine(model, ScoreSettings.from_profile(cfg, n_draws=K, mixed_precision="no"), device)
        t, scores, mem = timed(lambda: eng.score(x, C), device, warmup=lambda: eng.score(x[:4], C))
        rows.append(
            {"method": f"engine (batch {bs}, fp32)", "evals_per_s": n_evals / t, "precision": "no", "peak_mem_gb": mem}
        )
        return scores

    full32 = attempt(f"engine (batch {bs}, fp32)", "no", fp32)

    # early stopping of the majority vote: exact, and sequential at the profile's alpha
    stopped = {}
    for mode in ("exact", "sequential"):
        label = "exact" if mode == "exact" else f"sequential, alpha {settings.early_stop_alpha:g}"
        method = f"engine + {label} early stopping (rounds of {settings.round_size})"

        def early(mode=mode, method=method):
            eng = ScoringEngine(model, ScoreSettings.from_profile(cfg, n_draws=K, early_stop=mode), device)
            t, stopped[mode], mem = timed(lambda: eng.score(x, C), device, repeat=2, warmup=lambda: eng.score(x[:4], C))
            rows.append(
                {
                    "method": method,
                    "evals_per_s": stopped[mode].unet_evals.sum() / t,
                    "wall_s": t,
                    "mode": mode,
                    "precision": p,
                    "peak_mem_gb": mem,
                }
            )

        attempt(method, p, early)

    # where the ceiling lies: the raw forward over batch sizes (less precise than the interleaved rounds above)
    for b in a.batch_sizes:

        def sweep(b=b):
            t, _, mem = timed(raw_forward(b, 1), device, repeat=max(3, 1024 // b))
            rows.append(
                {
                    "method": f"raw UNet forward, batch-size sweep (batch {b}, {p})",
                    "evals_per_s": b / t,
                    "precision": p,
                    "peak_mem_gb": mem,
                }
            )

        attempt(f"raw UNet forward, batch-size sweep (batch {b}, {p})", p, sweep)

    peaks = {q: max(v, measure.compute_peak(device, q, n)) for q, v in peaks.items()}
    # FLOPs of one UNet evaluation: the forward, linear in the batch, so counted on 2 images
    xf, uf, lf = x[:2].to(device), torch.rand(2, device=device), torch.zeros(2, dtype=torch.long, device=device)
    with torch.inference_mode():
        flops = measure.count_flops(lambda: model.predict(xf, uf, lf)) / 2

    df = pd.DataFrame(rows)
    df["ratio_vs_raw"] = df.evals_per_s / rows[0]["evals_per_s"]
    df["ratio_vs_naive"] = df.evals_per_s / rows[2]["evals_per_s"]
    df["ratio_vs_authors_loop"] = df.evals_per_s / rows[3]["evals_per_s"]
    df["ratio_vs_li_loop"] = df.evals_per_s / rows[4]["evals_per_s"]
    df["images_per_s"] = df.evals_per_s / (C * K)
    df["unet_evals_per_image"] = float(C * K)
    df["gflop_per_eval"] = flops / 1e9
    df["achieved_gflops"] = df.evals_per_s * df.gflop_per_eval
    df["mfu"] = df.achieved_gflops * 1e9 / df.precision.map(peaks)
    df["note"] = df.get("note", pd.Series("", index=df.index)).fillna("")
    for col in ("wall_s", "mode", "peak_mem_gb"):
        if col not in df:
            df[col] = np.nan
    for mode, es in stopped.items():
        at = df["mode"] == mode
        same = rules.predict_vote(es.E) == rules.predict_vote(full.E)
        df.loc[at, "unet_evals_per_image"] = es.unet_evals.mean()
        df.loc[at, "images_per_s"] = len(x) / df.loc[at, "wall_s"]
        df.loc[at, "note"] = (
            f"{C * K / es.unet_evals.mean():.2f}x fewer evaluations per image; {len(x) / best['engine']:.1f} -> "
            f"{len(x) / df.loc[at, 'wall_s'].item():.1f} images/s; predictions identical to the full vote on "
            f"{same.sum()}/{len(same)} images"
            + ("; exact stopping needs > K/2 draws, so < 2x for C = 2" if mode == "exact" else "")
        )
    df = df.reindex(
        columns=[
            "method",
            "evals_per_s",
            "ratio_vs_raw",
            "ratio_vs_naive",
            "ratio_vs_authors_loop",
            "ratio_vs_li_loop",
            "images_per_s",
            "unet_evals_per_image",
            "gflop_per_eval",
            "achieved_gflops",
            "mfu",
            "peak_mem_gb",
            "note",
        ]
    )
    df.loc[df.method == f"engine (batch {bs}, {p})", "note"] = (
        f"{forward_share:.1%} of the engine's wall time is spent in the UNet forward itself (own overhead "
        f"{1 - forward_share:.1%}); timed in {a.rounds} interleaved rounds with the raw forward and the naive loop"
    )
    if full_comp is not None:
        df.loc[df.method.str.contains("compile"), "note"] = (
            f"{compile_note}; decisions agree with the eager engine on "
            f"{(rules.predict_vote(full_comp.E) == rules.predict_vote(full.E)).mean():.1%}"
            f" (vote rule); max |dE| {np.nanmax(np.abs(full.E - full_comp.E)):.2e}"
        )
    if full32 is not None:
        agree = {r: float((rules.predict(full.E, r) == rules.predict(full32.E, r)).mean()) for r in ("mean", "vote")}
        df.loc[df.method.str.startswith("engine (") & df.method.str.contains("fp32"), "note"] = (
            f"{p} vs fp32 decisions agree on {agree['mean']:.1%} (mean rule), {agree['vote']:.1%} (vote rule); "
            f"max |dE| {np.nanmax(np.abs(full.E - full32.E)):.2e}"
        )
    name = device_name(device)
    df.insert(
        0,
        "setup",
        f"{a.task} {a.profile} ({weights} weights, {data}), {len(x)} images x {C} classes x {K} "
        f"draws, {name}, {threads} threads, torch {torch.__version__}; compute peak (faster of matmul and 3x3 conv) "
        + ", ".join(f"{'fp32' if q == 'no' else q} {v / 1e9:.0f} GFLOP/s" for q, v in peaks.items()),
    )
    out = results_dir() / "benchmarks" / (a.out or "scoring.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    df.round(3).to_csv(out, index=False)
    with pd.option_context("display.max_colwidth", 200, "display.width", 250):
        print(df.drop(columns="setup").round(3).to_string(index=False))
    print(f"\nsetup: {df.setup[0]}\nwritten: {out}")
    measure.check_mfu(df)  # after writing: the speed ratios do not depend on the peak


if __name__ == "__main__":
    main()
