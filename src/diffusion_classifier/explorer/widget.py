"""The explorer's views over stored runs (`queries`): the view as an HTML table and as figures, and

show          the explorer: live ipywidgets controls in JupyterLab; under run_all.sh (DC_STATIC_VIEWS=1)
              one static view at the profile's settings, so executed notebooks stay deterministic
open_study    the explorer over a finished run, from any notebook or console
"""

from __future__ import annotations

import os
import time

import ipywidgets as widgets
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import HTML, display
from sklearn.metrics import roc_curve

from .. import profiles, study
from ..classifier import rules
from ..evaluation import calibration
from .queries import ALPHAS, SCORES, StoredRun, _errors, defaults, t_range_options, uncertainty_curves, view


def view_html(table: pd.DataFrame) -> str:
    """The view as an HTML table (id dc-explorer-table; 4 decimals, as the browser test reads it)."""
    return table.to_html(index=False, table_id="dc-explorer-table", float_format=lambda v: f"{v:.4f}", na_rep="")


def view_figure(run: StoredRun, rule, n_draws, t_range, source, score, coverage):
    """ROC of the diffusion rule and the ResNet-18, accuracy vs N of every rule, and risk vs coverage."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    E, y = _errors(run, rule, n_draws, t_range, source)
    p = run.proba["test"][run.rows(source)]
    for label, (yy, positive) in {
        f"diffusion, {rule}": (y, rules.positive_score(E, rule)),
        "ResNet-18": (y, p[:, 1]),
    }.items():
        fpr, tpr, _ = roc_curve(yy, positive)
        axes[0].plot(fpr, tpr, label=label)
    axes[0].plot([0, 1], [0, 1], "k:", lw=0.8)
    axes[0].set(xlabel="1 - specificity", ylabel="sensitivity", title=f"{run.task} ({source}): ROC")
    axes[0].legend(fontsize=8)
    grid = [k for k in run.cfg["ablation"]["n_draws"] if k <= run.n_draws]
    for r in rules.RULES:
        acc = [(rules.predict(_errors(run, r, k, t_range, source)[0], r) == y).mean() for k in grid]
        axes[1].plot(grid, acc, "o-", label=f"{r} rule")
    axes[1].axvline(n_draws or run.n_draws, color="k", lw=0.8, ls=":")
    axes[1].set(xscale="log", xlabel="draws N", ylabel="accuracy", title=f"accuracy vs N, t in {t_range}")
    axes[1].legend(fontsize=8)
    curves = uncertainty_curves(run, n_draws)
    for key in (("diffusion-unet", score), ("resnet18", "max_softmax")):
        if key[1] is None:  # a rule without uncertainty scores
            continue
        cov, risk = calibration.risk_coverage(curves[key].uncertainty, curves[key].correct)
        axes[2].plot(cov, risk, label=" ".join(key))
    axes[2].axvline(coverage, color="k", lw=0.8, ls=":")
    axes[2].set(xlabel="coverage", ylabel="selective risk", title="risk vs coverage (all test images)")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    return fig


def static_views() -> bool:
    """One deterministic view instead of live widgets: under run_all.sh (DC_STATIC_VIEWS=1), and wherever no Jupyter
    server runs the kernel (papermill, nbconvert: JPY_SESSION_NAME, which jupyter-server sets, is absent)."""
    if os.environ.get("DC_STATIC_VIEWS", "") not in ("", "0"):
        return True
    return "JPY_SESSION_NAME" not in os.environ


def show(runs: dict, live: bool | None = None) -> None:
    """The explorer over {task: StoredRun}: live widgets, or (live=False, or static_views()) one static view per
    task at the profile's settings."""
    if static_views() if live is None else not live:
        for task, run in runs.items():
            s = defaults(run)
            display(HTML(f"<b>{task}</b> at the profile's settings: " + ", ".join(f"{k} = {v}" for k, v in s.items())))
            display(HTML(view_html(view(run, **s))))
            fig = view_figure(run, s["rule"], s["n_draws"], s["t_range"], s["source"], s["score"], s["coverage"])
            plt.show()
            plt.close(fig)
    else:
        _widget(runs)


def open_study(profile: str = "cpu", tasks=None, data_root=None, seed: int = 0, live: bool | None = None) -> None:
    """The explorer over a finished run's stored scores, without re-running a notebook: in JupyterLab,
    `from diffusion_classifier import explorer; explorer.open_study("cpu")`."""
    show(
        {t: StoredRun.load(study.prepare(t, profile, data_root, seed)) for t in (tasks or profiles.DEFAULT_TASKS)}, live
    )


def _widget(runs: dict):
    run = next(iter(runs.values()))
    s = defaults(run)
    style = {"description_width": "initial"}
    alphas = sorted(set(ALPHAS) | {s["alpha"]})
    c = {
        "task": widgets.Dropdown(options=list(runs), description="task", style=style),
        "rule": widgets.Dropdown(options=list(rules.RULES), value=s["rule"], description="rule", style=style),
        "n_draws": widgets.Dropdown(options=[], description="draws N", style=style),
        "t_range": widgets.Dropdown(options=t_range_options(run), description="timesteps", style=style),
        "source": widgets.Dropdown(options=run.test_sources(), description="source", style=style),
        "alpha": widgets.Dropdown(
            options=[(f"{a:g}" if a else "exact", a) for a in alphas],
            value=s["alpha"],
            description="early-stop α",
            style=style,
        ),
        "score": widgets.Dropdown(options=SCORES.get(s["rule"], ()), description="uncertainty score", style=style),
        "coverage": widgets.FloatSlider(
            value=0.8, min=0.5, max=1.0, step=0.05, description="coverage", style=style, continuous_update=False
        ),
        "n_boot": widgets.Dropdown(
            options=[("no CIs", 0), ("200", 200), (str(s["n_boot"]), s["n_boot"])],
            value=s["n_boot"],
            description="bootstrap",
            style=style,
        ),
    }
    out, timing = widgets.Output(), widgets.HTML()
    busy, views = [False], [0]  # busy: while one change resets other controls, their own events must not redraw

    def grid_of(r):
        return sorted({k for k in r.cfg["ablation"]["n_draws"] if k <= r.n_draws} | {r.n_draws})

    def refresh(_=None):
        if busy[0]:
            return
        start = time.perf_counter()
        r, v = runs[c["task"].value], {k: ctl.value for k, ctl in c.items() if k != "task"}
        table = view(r, **v)
        with out:
            out.clear_output(wait=True)
            display(HTML(view_html(table)))
            fig = view_figure(r, v["rule"], v["n_draws"], v["t_range"], v["source"], v["score"], v["coverage"])
            plt.show()
            plt.close(fig)
        views[0] += 1
        timing.value = (
            f"<span id='dc-explorer-timing'>view {views[0]}: updated in {time.perf_counter() - start:.2f} s</span>"
        )

    def reset(change=None):
        """A task or rule change resets the controls that depend on it, then redraws once."""
        busy[0] = True
        try:
            r = runs[c["task"].value]
            if change is None or change["owner"] is c["task"]:
                c["n_draws"].options, c["n_draws"].value = grid_of(r), r.n_draws
                c["t_range"].options, c["source"].options = t_range_options(r), r.test_sources()
            c["score"].options = SCORES.get(c["rule"].value, ())
        finally:
            busy[0] = False
        if change is not None:
            refresh()

    reset()
    for k, ctl in c.items():
        ctl.observe(reset if k in ("task", "rule") else refresh, names="value")
    refresh()
    display(
        widgets.VBox(
            [
                widgets.HBox([c["task"], c["rule"], c["n_draws"], c["t_range"], c["source"]]),
                widgets.HBox([c["alpha"], c["score"], c["coverage"], c["n_boot"]]),
                timing,
                out,
            ]
        )
    )
