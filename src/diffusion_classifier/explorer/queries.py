"""The analysts' explorer (notebooks 04 and 06). Nearly every question asked of the classification and uncertainty
tables — which rule, how many draws N, which timestep range, which early-stopping α, which uncertainty score, what
coverage, which data source — is answered from the stored error tensors E[N, C, K] in milliseconds, without a model.
The functions below answer them with the very functions the tables come from (`ablation`, `paired`, `uncertainty`),
so a view at a table's settings reproduces its row to the last digit.

    StoredRun.load      a task's stored scores (notebook 04) and ResNet-18 softmax (notebook 03)
    classification_row  one row of classification.csv for any (model, rule, N, timestep range, source)
    paired_row          vote - mean on the same images and draws, at any (N, range)
    early_stopping_row  what sequential stopping at α saves and changes, at any N
    uncertainty_rows    the rows of uncertainty.csv, at any N
    view / view_table   all of the above for one setting, as one long table
    show                the explorer: live ipywidgets controls in JupyterLab; under run_all.sh (DC_STATIC_VIEWS=1)
                        one static view at the profile's settings, so executed notebooks stay deterministic
    open_study          the explorer over a finished run, from any notebook or console
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import HTML, display
from sklearn.metrics import roc_curve

from . import ablation, decision, profiles, study, uncertainty

VAL_SELECTED = "val-selected"
ALPHAS = (0.0, 0.0001, 0.001, 0.01, 0.05)  # 0 = exact stopping
SCORES = uncertainty.RULE_SCORES  # each rule's uncertainty scores, the default first
PAIRED = "{} - {}".format(*decision.PAPER_COMPARISON)  # the paired rows' label: "vote - mean"


@dataclass(frozen=True, eq=False)
class StoredRun:
    task: str
    cfg: dict
    E: dict  # split -> (N, C, K) errors
    U: dict  # split -> (N, K) draw times
    y: dict  # split -> labels
    proba: dict  # split -> ResNet-18 softmax (N, C)
    sources: dict  # split -> per-image source, or None
    cache: dict = field(default_factory=dict, repr=False)  # this run's uncertainty rows by (N, resamples, seed)

    @classmethod
    def load(cls, p) -> StoredRun:
        """From a `study.prepare`d task whose notebooks 03 and 04 have run."""
        E, U, y, proba = {}, {}, {}, {}
        base = np.load(p.artifact("baseline_proba"))
        for split in ("val", "test"):
            s = np.load(p.artifact("scores", split=split))
            E[split], U[split], y[split] = s["E"], s["U"], s["labels"]
            proba[split] = base[f"{split}_proba"]
        return cls(p.cfg["task"], p.cfg, E, U, y, proba, p.sources)

    @property
    def n_draws(self) -> int:
        return self.E["test"].shape[2]

    @property
    def seed(self) -> int:
        """The run's seed: the bootstrap seed of its tables."""
        return self.cfg["seed"]

    def rows(self, source: str = "all") -> np.ndarray:
        s = self.sources.get("test")
        if source == "all" or s is None:
            return np.arange(len(self.y["test"]))
        return np.flatnonzero(np.asarray(s) == source)

    def test_sources(self) -> list[str]:
        s = self.sources.get("test")
        return ["all"] + (sorted(set(s)) if s is not None and len(set(s)) > 1 else [])


def parse_range(t_range: str) -> tuple[float, float]:
    """ "[0.33,0.67)" -> (0.33, 0.67)."""
    lo, hi = t_range.strip("[)").split(",")
    return float(lo), float(hi)


def t_range_options(run: StoredRun) -> list[str]:
    return (
        [ablation.FULL_RANGE]
        + [ablation.fmt_range(lo, hi) for lo, hi in run.cfg["ablation"]["t_ranges"]]
        + [VAL_SELECTED]
    )


def _bounds(run: StoredRun, rule: str, t_range: str) -> tuple[float, float]:
    if t_range == VAL_SELECTED:  # chosen on validation, as ablation.val_selected_rows does
        return ablation.select_t_range(run.E["val"], run.U["val"], run.y["val"], rule, run.cfg["ablation"]["t_ranges"])
    if t_range == ablation.FULL_RANGE:
        return 0.0, 1.0
    # the table's ranges are printed rounded: use the profile's exact bounds when the label is one of them
    exact = {ablation.fmt_range(lo, hi): (lo, hi) for lo, hi in run.cfg["ablation"]["t_ranges"]}
    return exact.get(t_range) or parse_range(t_range)


def _errors(run: StoredRun, rule: str, n_draws, t_range: str, source: str = "all"):
    """The test errors of these settings, as the tables restrict them: over the full range the first n_draws draws
    are kept as they are (ablation.paired_table truncates, ablation_table masks: the same values), else masked."""
    idx = run.rows(source)
    E, U = run.E["test"][idx], run.U["test"][idx]
    if t_range == ablation.FULL_RANGE:
        return E[:, :, : n_draws or run.n_draws], run.y["test"][idx]
    lo, hi = _bounds(run, rule, t_range)
    return decision.restrict(E, U, lo, hi, n_draws), run.y["test"][idx]


def classification_row(
    run: StoredRun,
    model: str = "diffusion-unet",
    rule: str = "vote",
    n_draws=None,
    t_range: str = ablation.FULL_RANGE,
    source: str = "all",
    n_boot: int = 1000,
    seed: int | None = None,
) -> dict:
    """The metrics of classification.csv's row for these settings (n_draws None = all draws; seed None = the run's)."""
    seed = run.seed if seed is None else seed
    if model == "resnet18":
        idx = run.rows(source)
        p = run.proba["test"][idx]
        return {
            "unet_evals_per_image": 0.0,
            **ablation.metrics_row(run.y["test"][idx], p.argmax(1), p[:, 1], n_boot, seed),
        }
    E, y = _errors(run, rule, n_draws, t_range, source)
    return ablation.rule_row(E, y, rule, n_boot, seed)


def paired_row(
    run: StoredRun,
    n_draws=None,
    t_range: str = ablation.FULL_RANGE,
    source: str = "all",
    n_boot: int = 1000,
    seed: int | None = None,
    range_rule: str = "vote",
) -> dict:
    """Vote - mean (decision.PAPER_COMPARISON) on the same images and draws (ablation_paired.csv's row at N for the
    full range). A range chosen on validation is range_rule's, used for both rules, so that they compare on the same
    draws."""
    seed = run.seed if seed is None else seed
    E, y = _errors(run, range_rule, n_draws, t_range, source)
    return ablation.compare_rules(E, y, *decision.PAPER_COMPARISON, n_boot, seed)


def early_stopping_row(
    run: StoredRun, n_draws=None, alpha: float = 0.001, split: str = "test", source: str = "all"
) -> dict:
    """early_stopping.csv's row: exact stopping for alpha = 0, else sequential at alpha, on the first n_draws (test
    images of one source, or all)."""
    idx = run.rows(source) if split == "test" else np.arange(len(run.y[split]))
    E = run.E[split][idx][:, :, : n_draws or run.n_draws]
    t = ablation.early_stopping_table(
        E,
        run.y[split][idx],
        run.task,
        split,
        run.cfg["scoring"]["round_size"],
        alphas=(alpha,) if alpha > 0 else (),
    )
    return t[(t.stopping == "exact") if alpha == 0 else (t.stopping == "sequential")].iloc[0].to_dict()


def uncertainty_rows(
    run: StoredRun, n_draws=None, n_boot: int = 500, seed: int | None = None
) -> uncertainty.Evaluation:
    """uncertainty.evaluate on the first n_draws of val and test (rows, curves, temperatures); cached on the run,
    so that switching the score or the coverage is instant. Treat the result as read-only."""
    u, k = run.cfg["uncertainty"], n_draws or run.n_draws
    seed = run.seed if seed is None else seed
    if (k, n_boot, seed) not in run.cache:
        run.cache[k, n_boot, seed] = uncertainty.evaluate(
            run.task,
            run.E["val"][:, :, :k],
            run.y["val"],
            run.E["test"][:, :, :k],
            run.y["test"],
            run.proba["val"],
            run.proba["test"],
            u["n_bins"],
            n_boot,
            seed,
        )
    return run.cache[k, n_boot, seed]


def uncertainty_curves(run: StoredRun, n_draws=None) -> dict:
    """The per-image (uncertainty, correct, confidence, calibrated confidence) of every score at N: they do not
    depend on the bootstrap, so any cached evaluation at N serves; else one without resamples."""
    k = n_draws or run.n_draws
    cached = next((v for (kk, _, _), v in run.cache.items() if kk == k), None)
    return (cached or uncertainty_rows(run, k, 0)).curves


def defaults(run: StoredRun) -> dict:
    """The profile's settings: the static view, and the controls' starting point."""
    rule = run.cfg["decision"]["rule"]
    return {
        "rule": rule,
        "n_draws": run.n_draws,
        "t_range": ablation.FULL_RANGE,
        "source": "all",
        "alpha": run.cfg["scoring"]["early_stop_alpha"],
        "score": SCORES.get(rule, (None,))[0],  # None: a rule without uncertainty scores
        "coverage": 0.8,
        "n_boot": run.cfg["ablation"]["n_bootstrap"],
    }


def view(run: StoredRun, rule, n_draws, t_range, source, alpha, score, coverage, n_boot, seed=None) -> pd.DataFrame:
    """One setting as a long table (quantity, value, ci_low, ci_high): both models' metrics, vote - mean, the
    early-stopping cost, and the chosen uncertainty score's selective metrics at the chosen coverage (all test images:
    uncertainty.csv has no per-source rows)."""
    seed = run.seed if seed is None else seed
    rows = []

    def add(name, d, key):
        rows.append(
            {
                "quantity": name,
                "value": d[key],
                "ci_low": d.get(f"{key}_ci_low", np.nan),
                "ci_high": d.get(f"{key}_ci_high", np.nan),
            }
        )

    d = classification_row(run, "diffusion-unet", rule, n_draws, t_range, source, n_boot, seed)
    b = classification_row(run, "resnet18", source=source, n_boot=n_boot, seed=seed)
    for m in ("auc", "balanced_accuracy", "accuracy", "f1", "sensitivity", "specificity"):
        add(f"diffusion {m}", d, m)
        add(f"resnet18 {m}", b, m)
    add("diffusion unet_evals_per_image", d, "unet_evals_per_image")
    add("majority_rate", d, "majority_rate")
    if t_range == VAL_SELECTED:
        rows.append(
            {
                "quantity": "timesteps chosen on validation for the {} rule: [{:.2f},{:.2f})".format(
                    rule, *_bounds(run, rule, t_range)
                ),
                "value": np.nan,
                "ci_low": np.nan,
                "ci_high": np.nan,
            }
        )
    pr = paired_row(run, n_draws, t_range, source, n_boot, seed, range_rule=rule)
    for m in ("accuracy", "auc"):
        add(f"{PAIRED} {m}", pr, f"{m}_diff")
    add(f"{PAIRED} mcnemar_p", pr, "mcnemar_p")
    es = early_stopping_row(run, n_draws, alpha, source=source)
    for m in ("unet_evals_per_image", "speedup", "changed_vs_full_vote"):
        add(f"early stop ({'exact' if alpha == 0 else f'alpha {alpha:g}'}) {m}", es, m)
    if source == "all":  # uncertainty.csv is over all test images; no per-source rows
        # uncertainty.csv's bootstrap is the uncertainty section's (fewer resamples: each recomputes every metric)
        ev = uncertainty_rows(run, n_draws, min(n_boot, run.cfg["uncertainty"]["n_bootstrap"]), seed)
        for model, name in (("diffusion-unet", score), ("resnet18", "max_softmax")):
            if name is None:  # a rule without uncertainty scores (uncertainty.RULE_SCORES)
                continue
            r = next(r for r in ev.rows if r["model"] == model and r["score"] == name)
            for m in ("error_auroc", "e_aurc", "ece_calibrated"):
                add(f"{model} {name} {m}", r, m)
            curve = ev.curves[(model, name)]
            rows.append(
                {
                    "quantity": f"{model} {name} accuracy at {coverage:.0%} coverage",
                    "value": uncertainty.accuracy_at_coverage(curve.uncertainty, curve.correct, coverage),
                    "ci_low": np.nan,
                    "ci_high": np.nan,
                }
            )
    return pd.DataFrame(rows)


def view_html(table: pd.DataFrame) -> str:
    """The view as an HTML table (id dc-explorer-table; 4 decimals, as the browser test reads it)."""
    return table.to_html(index=False, table_id="dc-explorer-table", float_format=lambda v: f"{v:.4f}", na_rep="")


def view_figure(run: StoredRun, rule, n_draws, t_range, source, score, coverage):
    """ROC of the diffusion rule and the ResNet-18, accuracy vs N of every rule, and risk vs coverage."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    E, y = _errors(run, rule, n_draws, t_range, source)
    p = run.proba["test"][run.rows(source)]
    for label, (yy, positive) in {
        f"diffusion, {rule}": (y, decision.positive_score(E, rule)),
        "ResNet-18": (y, p[:, 1]),
    }.items():
        fpr, tpr, _ = roc_curve(yy, positive)
        axes[0].plot(fpr, tpr, label=label)
    axes[0].plot([0, 1], [0, 1], "k:", lw=0.8)
    axes[0].set(xlabel="1 - specificity", ylabel="sensitivity", title=f"{run.task} ({source}): ROC")
    axes[0].legend(fontsize=8)
    grid = [k for k in run.cfg["ablation"]["n_draws"] if k <= run.n_draws]
    for r in decision.RULES:
        acc = [(decision.predict(_errors(run, r, k, t_range, source)[0], r) == y).mean() for k in grid]
        axes[1].plot(grid, acc, "o-", label=f"{r} rule")
    axes[1].axvline(n_draws or run.n_draws, color="k", lw=0.8, ls=":")
    axes[1].set(xscale="log", xlabel="draws N", ylabel="accuracy", title=f"accuracy vs N, t in {t_range}")
    axes[1].legend(fontsize=8)
    curves = uncertainty_curves(run, n_draws)
    for key in (("diffusion-unet", score), ("resnet18", "max_softmax")):
        if key[1] is None:  # a rule without uncertainty scores
            continue
        cov, risk = uncertainty.risk_coverage(curves[key].uncertainty, curves[key].correct)
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
        "rule": widgets.Dropdown(options=list(decision.RULES), value=s["rule"], description="rule", style=style),
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
