"""Three sources of variance of the headline comparisons (notebook 09), side by side:

test images  the percentile-bootstrap CI inside each run (its half-width / 1.96 is the SD it implies)
draws        disjoint slices of one long draw sequence: the engine's draw (i, k) is i.i.d. given the image,
             so slice r = draws [r n, (r + 1) n) is an independent replicate of a scoring seed at N = n
training     the denoiser and the ResNet-18 trained again from other seeds

trained_run        a seed's denoiser and ResNet-18 (trained, or resumed from their run folders) and their test scores
replicate_slices   the slices of E
run_row            one run's numbers: the headline rule's metrics, vote - mean and diffusion - ResNet (paired)
spread             per source and measure: mean, SD, min, max over runs, beside the bootstrap SD
verdicts           generated sentences: do the voting and competitiveness verdicts hold across runs?
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import chi2

from .. import study
from ..classifier import rules
from ..classifier.engine import ScoreSettings
from ..evaluation import paired
from ..evaluation.metrics import metrics_with_ci
from ..models.resnet import predict_proba
from ..training.diffusion import train_denoiser
from ..training.resnet import train_baseline
from . import classification

MEASURES = ("auc", "balanced_accuracy", "accuracy", "f1", "vote_minus_mean_accuracy", "minus_resnet_auc")


def trained_run(p, n_draws: int, splits=("test",), scoring_seed: int | None = None, desc: str = "score"):
    """For a prepared task (`study.prepare`, whose seed sets both models' training): train the denoiser and the
    ResNet-18 as notebooks 02 and 03 do (a finished run folder is loaded, not retrained), and score the given splits
    with n_draws draws of `scoring_seed` (default: the task's seed). Training seeds compared with one scoring seed see
    the same draws, so their spread holds no draw-sampling noise (the draw x model interaction remains).
    Returns ({split: DrawErrors}, {split: ResNet softmax})."""
    x, y = p.x, p.y
    model, _ = train_denoiser(p.cfg, x["train"], y["train"], x["val"], y["val"], p.class_names, p.artifact("denoiser"))
    resnet, _ = train_baseline(
        p.cfg, x["train"], y["train"], x["val"], y["val"], len(p.class_names), p.artifact("baseline")
    )
    settings = ScoreSettings.from_profile(
        p.cfg, n_draws=n_draws, **({} if scoring_seed is None else {"seed": scoring_seed})
    )
    if settings.t_sampling != "random":  # grid times depend on n_draws: no common prefix, no i.i.d. slices
        raise ValueError(f"draw replicates need t_sampling 'random', got {settings.t_sampling!r}")
    scores = study.score_splits(p, model, settings, splits, desc)
    return scores, {split: predict_proba(resnet, x[split]) for split in splits}


def replicate_slices(E: np.ndarray, n: int, n_reps: int) -> list[np.ndarray]:
    """n_reps disjoint blocks of n draws, in draw order (block 0 is the first n draws: the main run's)."""
    if E.shape[2] < n * n_reps:
        raise ValueError(f"{n_reps} replicates of {n} draws need {n * n_reps} draws; E has {E.shape[2]}")
    return [E[:, :, r * n : (r + 1) * n] for r in range(n_reps)]


def run_row(E, y, proba, rule: str, n_boot: int = 1000, seed: int = 0) -> dict:
    """One run: the rule's metrics (CIs over test images), the vote - mean differences on the same draws and the
    rule - ResNet-18 differences on the same images (paired bootstrap, McNemar), and the voting outcome."""
    pred, score = rules.predict(E, rule), rules.positive_score(E, rule)
    row = {"n_draws": E.shape[2], "n_images": len(y), **metrics_with_ci(y, pred, score, n_boot, seed)}
    vm = classification.compare_rules(E, y, *rules.PAPER_COMPARISON, n_boot, seed)
    row.update({f"vote_minus_mean_{k.replace('_diff', '')}": v for k, v in vm.items()})
    row["voting_outcome"] = classification.voting_outcome(
        row["auc_ci_low"], E.shape[2], vm["accuracy_diff_ci_low"], vm["accuracy_diff_ci_high"], vm["mcnemar_p"]
    )
    vr = paired.compare(y, (pred, score), (proba.argmax(1), proba[:, 1]), n_boot, seed)
    row.update({f"minus_resnet_{k.replace('_diff', '')}": v for k, v in vr.items()})
    r = metrics_with_ci(y, proba.argmax(1), proba[:, 1], n_boot, seed)
    row.update({f"resnet_{k}": r[k] for k in ("auc", "auc_ci_low", "auc_ci_high")})
    return row


def _bootstrap_sd(runs: pd.DataFrame, m: str) -> float:
    """The SD over test-image resamples that a run's 95% percentile CI implies (width / 3.92; a rough figure when the
    CI is skewed), averaged over runs."""
    lo, hi = (f"{m}_ci_low", f"{m}_ci_high")
    return float(((runs[hi] - runs[lo]) / (2 * 1.96)).mean()) if lo in runs else np.nan


def spread(runs: pd.DataFrame) -> pd.DataFrame:
    """Per source of variance ('draws', 'training') and measure: the spread over runs with a 95% CI of the SD
    (chi-square, n - 1 degrees of freedom: from 3 runs it spans x0.52 to x6.3), beside the test-image SD. The sources
    are not parts of one total: the test-image SD of a run already holds its draws' noise per image, and the draw SD
    is conditional on one trained model and one test set."""
    rows = []
    for source, g in runs.groupby("variance_source", sort=False):
        for m in MEASURES:
            v = g[m].astype(float)
            df = len(v) - 1
            sd = v.std(ddof=1) if df > 0 else np.nan
            rows.append(
                {
                    "variance_source": source,
                    "measure": m,
                    "n_runs": len(v),
                    "mean": v.mean(),
                    "sd": sd,
                    "sd_ci_low": sd * np.sqrt(df / chi2.ppf(0.975, df)) if df > 0 else np.nan,
                    "sd_ci_high": sd * np.sqrt(df / chi2.ppf(0.025, df)) if df > 0 else np.nan,
                    "min": v.min(),
                    "max": v.max(),
                    "test_image_sd": _bootstrap_sd(g, m),
                }
            )
    return pd.DataFrame(rows)


def headline_across_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Per task and source of variance: each headline measure as 'mean (SD, min–max)' over the runs, and the voting
    outcomes counted (SUMMARY's headline across seeds)."""
    rows = []
    for (task, source), g in runs.groupby(["task", "variance_source"], sort=False):
        row = {"task": task, "variance_source": source, "n_runs": len(g)}
        for m in ("auc", "balanced_accuracy", "accuracy", "resnet_auc", "minus_resnet_auc", "vote_minus_mean_accuracy"):
            v = g[m].astype(float)
            row[m] = (
                f"{v.mean():+.3f} ({v.std(ddof=1):.3f}, {v.min():+.3f} to {v.max():+.3f})"
                if m.startswith(("minus", "vote"))
                else f"{v.mean():.3f} ({v.std(ddof=1):.3f}, {v.min():.3f}–{v.max():.3f})"
            )
        row["voting_outcomes"] = _count(g.voting_outcome)
        rows.append(row)
    return pd.DataFrame(rows)


def _count(outcomes) -> str:
    counts = pd.Series(list(outcomes)).value_counts()
    return ", ".join(f"{k} in {v}" for k, v in counts.items())


def verdicts(runs: pd.DataFrame, task: str, margin: float = classification.NONINFERIORITY_MARGIN) -> list[str]:
    """Generated sentences: the voting outcome across runs, competitiveness across training seeds, and the SD of the
    headline AUC by source (with its CI)."""
    lines = []
    n = int(runs.n_draws.iloc[0])
    for source, g in runs.groupby("variance_source", sort=False):
        if source == "draws":
            what = f"{len(g)} disjoint draw replicates of training seed {int(g.training_seed.iloc[0])}"
            scope = "draws only: the same trained models and test images"
        else:
            what = f"{len(g)} training seeds ({', '.join(str(int(s)) for s in g.training_seed)})"
            scope = (
                "training seeds at common draws and test images: training plus draw × model noise; the seed-0 "
                "run is shared with the draw replicates"
            )
        outcomes = set(g.voting_outcome)
        reading = (
            f"**the same outcome in every run ({outcomes.pop()})**"
            if len(outcomes) == 1
            else "**not consistent across runs** (a single run's verdict is not reproducible)"
        )
        d = g.vote_minus_mean_accuracy
        lines.append(
            f"**{task}**, voting claim at N = {n} over {what} ({scope}): {_count(g.voting_outcome)}; vote − "
            f"mean accuracy from {d.min():+.3f} to {d.max():+.3f} (mean {d.mean():+.3f}): {reading}."
        )
        if source == "training":
            testable = g[(g.auc_ci_low > 0.5) & (g.resnet_auc_ci_low > 0.5)]
            low = int((testable.minus_resnet_auc_ci_high < 0).sum())
            noninf = int((testable.minus_resnet_auc_ci_low > -margin).sum())
            lines.append(
                f"**{task}**, diffusion − ResNet-18 AUC over {what} (each retrained, paired on the same test "
                "images): "
                + ", ".join(
                    f"{r.minus_resnet_auc:+.3f} ({r.minus_resnet_auc_ci_low:+.3f} to {r.minus_resnet_auc_ci_high:+.3f})"
                    for r in g.itertuples()
                )
                + f"; of the {len(testable)} runs where both models' AUC CIs exclude 0.5, significantly lower "
                f"in {low}, non-inferior at the {margin} margin in {noninf}"
                + (f" ({len(g) - len(testable)} not testable)" if len(testable) < len(g) else "")
                + "."
            )
    sp = spread(runs).set_index(["variance_source", "measure"])
    parts = [
        f"test images {sp.loc[(runs.variance_source.iloc[0], 'auc'), 'test_image_sd']:.4f} (from the bootstrap CIs)"
    ]
    for s in runs.variance_source.unique():
        r = sp.loc[(s, "auc")]
        if r.n_runs > 1:
            parts.append(f"{s} {r.sd:.4f} (95% CI {r.sd_ci_low:.4f}-{r.sd_ci_high:.4f}, {int(r.n_runs)} runs)")
    lines.append(
        f"**{task}**, SD of the headline AUC by source of variance: "
        + "; ".join(parts)
        + ". The sources are not additive parts of one total (see `variance.spread`)."
    )
    return lines
