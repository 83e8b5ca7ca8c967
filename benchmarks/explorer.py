"""How fast the analysts' explorer answers (issue: a changed control should update the view in under a second):
the time of `queries.view` and `widget.view_figure` (both models' metrics, vote - mean, early stopping,
uncertainty, and the three plots at one setting: what a control change redraws) for a
sequence of control changes, on the stored scores of a finished run (notebooks 03-04 of the profile).

    .venv/bin/python benchmarks/explorer.py                   # cpu profile, both tasks, writes explorer.csv
    .venv/bin/python benchmarks/explorer.py --profile smoke --tasks pneumonia --out explorer_smoke.csv

Each change is timed alone (best of --repeats), with the bootstrap the live view offers by default (the profile's
resamples) and without CIs. A change of N or of the bootstrap recomputes the uncertainty rows (6 scores with their
bootstrap); other changes reuse them (cached), as the live view does.
"""

import argparse
import platform
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from diffusion_classifier import study  # noqa: E402
from diffusion_classifier.core.paths import results_dir  # noqa: E402
from diffusion_classifier.explorer import queries, widget


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--tasks", nargs="*", default=["pneumonia", "melanoma_balanced"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="explorer.csv")
    a = ap.parse_args()
    rows = []
    for task in a.tasks:
        run = queries.StoredRun.load(study.prepare(task, a.profile))
        s = queries.defaults(run)
        other_rule = next(r for r in queries.SCORES if r != s["rule"])
        changes = [
            ("profile settings (first view)", {}),
            ("draws N = 11", {"n_draws": 11}),
            ("timesteps: val-selected", {"t_range": queries.VAL_SELECTED}),
            (f"rule: {other_rule}", {"rule": other_rule, "score": queries.SCORES[other_rule][0]}),
            ("early-stop alpha 0.01", {"alpha": 0.01}),
            ("coverage 0.7", {"coverage": 0.7}),
        ]
        for n_boot in (s["n_boot"], 0):
            run.cache.clear()
            for name, change in changes:
                times = []
                for r in range(a.repeats):
                    if r and name.startswith("draws"):  # an N change recomputes the uncertainty rows every time
                        run.cache.clear()
                    v = {**s, **change, "n_boot": n_boot}
                    start = time.perf_counter()
                    queries.view(run, **v)  # the table and the figure: what one control change redraws
                    plt.close(
                        widget.view_figure(
                            run, v["rule"], v["n_draws"], v["t_range"], v["source"], v["score"], v["coverage"]
                        )
                    )
                    times.append(time.perf_counter() - start)
                rows.append(
                    {
                        "task": task,
                        "n_images": len(run.y["test"]),
                        "n_draws": run.n_draws,
                        "n_bootstrap": n_boot,
                        "change": name,
                        "seconds_first": times[0],
                        "seconds_best": min(times),
                    }
                )
                print(rows[-1])
    df = pd.DataFrame(rows)
    df.insert(0, "setup", f"{a.profile} profile stored scores, {platform.machine()}, {torch.get_num_threads()} threads")
    out = results_dir() / "benchmarks" / a.out
    df.round(3).to_csv(out, index=False)
    print(f"written: {out}")


if __name__ == "__main__":
    main()
