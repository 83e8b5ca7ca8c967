"""The explorer's queries (notebooks 04 and 06). Nearly every question asked of the classification and uncertainty
tables — which rule, how many draws N, which timestep range, which early-stopping α, which uncertainty score, what
coverage, which data source — is answered from the stored error tensors E[N, C, K] in milliseconds, without a model.
The functions below answer them with the very functions the tables come from (`analyses.classification`,
`evaluation.paired`, `analyses.uncertainty`), so a view at a table's settings reproduces its row to the last digit.

    StoredRun.load      a task's stored scores (notebook 04) and ResNet-18 softmax (notebook 03)
    classification_row  one row of classification.csv for any (model, rule, N, timestep range, source)
    paired_row          vote - mean on the same images and draws, at any (N, range)
    early_stopping_row  what sequential stopping at α saves and changes, at any N
    uncertainty_rows    the rows of uncertainty.csv, at any N
    view                all of the above for one setting, as one long table
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..analyses import classification, early_stopping, uncertainty
from ..classifier import confidence, rules
from ..evaluation import calibration

VAL_SELECTED = "val-selected"
ALPHAS = (0.0, 0.0001, 0.001, 0.01, 0.05)  # 0 = exact stopping
SCORES = confidence.RULE_SCORES  # each rule's uncertainty scores, the default first
PAIRED = "{} - {}".format(*rules.PAPER_COMPARISON)  # the paired rows' label: "vote - mean"


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
        [classification.FULL_RANGE]
        + [classification.fmt_range(lo, hi) for lo, hi in run.cfg["ablation"]["t_ranges"]]
        + [VAL_SELECTED]
    )


def _bounds(run: StoredRun, rule: str, t_range: str) -> tuple[float, float]:
    if t_range == VAL_SELECTED:  # chosen on validation, as classification.val_selected_rows does
        return classification.select_t_range(
            run.E["val"], run.U["val"], run.y["val"], rule, run.cfg["ablation"]["t_ranges"]
        )
    if t_range == classification.FULL_RANGE:
        return 0.0, 1.0
    # the table's ranges are printed rounded: use the profile's exact bounds when the label is one of them
    exact = {classification.fmt_range(lo, hi): (lo, hi) for lo, hi in run.cfg["ablation"]["t_ranges"]}
    return exact.get(t_range) or parse_range(t_range)


def _errors(run: StoredRun, rule: str, n_draws, t_range: str, source: str = "all"):
    """The test errors of these settings, as the tables restrict them: over the full range the first n_draws draws
    are kept as they are (classification.paired_table truncates, ablation_table masks: the same values), else masked."""
    idx = run.rows(source)
    E, U = run.E["test"][idx], run.U["test"][idx]
    if t_range == classification.FULL_RANGE:
        return E[:, :, : n_draws or run.n_draws], run.y["test"][idx]
    lo, hi = _bounds(run, rule, t_range)
    return rules.restrict(E, U, lo, hi, n_draws), run.y["test"][idx]


def classification_row(
    run: StoredRun,
    model: str = "diffusion-unet",
    rule: str = "vote",
    n_draws=None,
    t_range: str = classification.FULL_RANGE,
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
            **classification.metrics_row(run.y["test"][idx], p.argmax(1), p[:, 1], n_boot, seed),
        }
    E, y = _errors(run, rule, n_draws, t_range, source)
    return classification.rule_row(E, y, rule, n_boot, seed)


def paired_row(
    run: StoredRun,
    n_draws=None,
    t_range: str = classification.FULL_RANGE,
    source: str = "all",
    n_boot: int = 1000,
    seed: int | None = None,
    range_rule: str = "vote",
) -> dict:
    """Vote - mean (rules.PAPER_COMPARISON) on the same images and draws (ablation_paired.csv's row at N for the
    full range). A range chosen on validation is range_rule's, used for both rules, so that they compare on the same
    draws."""
    seed = run.seed if seed is None else seed
    E, y = _errors(run, range_rule, n_draws, t_range, source)
    return classification.compare_rules(E, y, *rules.PAPER_COMPARISON, n_boot, seed)


def early_stopping_row(
    run: StoredRun, n_draws=None, alpha: float = 0.001, split: str = "test", source: str = "all"
) -> dict:
    """early_stopping.csv's row: exact stopping for alpha = 0, else sequential at alpha, on the first n_draws (test
    images of one source, or all)."""
    idx = run.rows(source) if split == "test" else np.arange(len(run.y[split]))
    E = run.E[split][idx][:, :, : n_draws or run.n_draws]
    t = early_stopping.early_stopping_table(
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
        "t_range": classification.FULL_RANGE,
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
            if name is None:  # a rule without uncertainty scores (confidence.RULE_SCORES)
                continue
            r = next(r for r in ev.rows if r["model"] == model and r["score"] == name)
            for m in ("error_auroc", "e_aurc", "ece_calibrated"):
                add(f"{model} {name} {m}", r, m)
            curve = ev.curves[(model, name)]
            rows.append(
                {
                    "quantity": f"{model} {name} accuracy at {coverage:.0%} coverage",
                    "value": calibration.accuracy_at_coverage(curve.uncertainty, curve.correct, coverage),
                    "ci_low": np.nan,
                    "ci_high": np.nan,
                }
            )
    return pd.DataFrame(rows)
