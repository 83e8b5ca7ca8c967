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

from . import ablation, decision, paired
from .metrics import binary_metrics, metrics_with_ci

MEASURES = ("auc", "balanced_accuracy", "accuracy", "f1", "vote_minus_mean_accuracy", "minus_resnet_auc")


def trained_run(p, n_draws: int, splits=("test",), desc: str = "score") -> tuple[dict, dict]:
    """For a prepared task (`study.prepare`, whose seed sets both models' training and the draws): train the
    denoiser and the ResNet-18 as notebooks 02 and 03 do (a finished run folder is loaded, not retrained), and score
    the given splits with n_draws draws. Returns ({split: Scores}, {split: ResNet-18 softmax})."""
    from .baseline import predict_proba, train_baseline
    from .scoring import ScoreSettings, ScoringEngine, cache_dir_for
    from .training import train_denoiser

    x, y = p.x, p.y
    model, _ = train_denoiser(p.cfg, x["train"], y["train"], x["val"], y["val"], p.class_names, p.artifact("denoiser"))
    resnet, _ = train_baseline(p.cfg, x["train"], y["train"], x["val"], y["val"], len(p.class_names),
                               p.artifact("baseline"))
    settings = ScoreSettings.from_profile(p.cfg, n_draws=n_draws)
    engine = ScoringEngine(model, settings)
    scores = {split: engine.score(x[split], model.n_classes,
                                  cache_dir_for(p.artifact("score_cache"), split, settings, model, x[split]),
                                  desc=f"{desc} {split}") for split in splits}
    return scores, {split: predict_proba(resnet, x[split]) for split in splits}


def replicate_slices(E: np.ndarray, n: int, n_reps: int) -> list[np.ndarray]:
    """n_reps disjoint blocks of n draws, in draw order (block 0 is the first n draws: the main run's)."""
    if E.shape[2] < n * n_reps:
        raise ValueError(f"{n_reps} replicates of {n} draws need {n * n_reps} draws; E has {E.shape[2]}")
    return [E[:, :, r * n:(r + 1) * n] for r in range(n_reps)]


def run_row(E, y, proba, rule: str, n_boot: int = 1000, seed: int = 0) -> dict:
    """One run: the rule's metrics (CIs over test images), the vote - mean differences on the same draws and the
    rule - ResNet-18 differences on the same images (paired bootstrap, McNemar), and the voting outcome."""
    pred, score = decision.predict(E, rule), decision.positive_score(E, rule)
    row = {"n_draws": E.shape[2], "n_images": len(y), **metrics_with_ci(y, pred, score, n_boot, seed)}
    vm = paired.compare(y, (decision.predict(E, "vote"), decision.positive_score(E, "vote")),
                        (decision.predict(E, "mean"), decision.positive_score(E, "mean")), n_boot, seed)
    row.update({f"vote_minus_mean_{k.replace('_diff', '')}": v for k, v in vm.items()})
    row["voting_outcome"] = ablation.voting_outcome(row["auc_ci_low"], E.shape[2], vm["accuracy_diff_ci_low"],
                                                    vm["accuracy_diff_ci_high"])
    vr = paired.compare(y, (pred, score), (proba.argmax(1), proba[:, 1]), n_boot, seed)
    row.update({f"minus_resnet_{k.replace('_diff', '')}": v for k, v in vr.items()})
    row["resnet_auc"] = float(binary_metrics(y, proba.argmax(1), proba[:, 1])["auc"])
    return row


def _bootstrap_sd(runs: pd.DataFrame, m: str) -> float:
    """The SD over test-image resamples a run's 95% percentile CI implies, averaged over runs."""
    lo, hi = (f"{m}_ci_low", f"{m}_ci_high")
    return float(((runs[hi] - runs[lo]) / (2 * 1.96)).mean()) if lo in runs else np.nan


def spread(runs: pd.DataFrame) -> pd.DataFrame:
    """Per source of variance ('draws', 'training') and measure: the spread over runs, beside the test-image SD."""
    rows = []
    for source, g in runs.groupby("variance_source", sort=False):
        for m in MEASURES:
            v = g[m].astype(float)
            rows.append({"variance_source": source, "measure": m, "n_runs": len(v), "mean": v.mean(),
                         "sd": v.std(ddof=1) if len(v) > 1 else np.nan, "min": v.min(), "max": v.max(),
                         "test_image_sd": _bootstrap_sd(g, m)})
    return pd.DataFrame(rows)


def _count(outcomes) -> str:
    counts = pd.Series(list(outcomes)).value_counts()
    return ", ".join(f"{k} in {v}" for k, v in counts.items())


def verdicts(runs: pd.DataFrame, task: str, margin: float = ablation.NONINFERIORITY_MARGIN) -> list[str]:
    """Generated sentences: the voting outcome across runs, competitiveness across training seeds, and which source
    of variance dominates the AUC."""
    lines = []
    n = int(runs.n_draws.iloc[0])
    for source, g in runs.groupby("variance_source", sort=False):
        what = (f"{len(g)} disjoint draw replicates of training seed {int(g.training_seed.iloc[0])}" if source == "draws"
                else f"training seeds {', '.join(str(int(s)) for s in g.training_seed)}")
        outcomes = set(g.voting_outcome)
        reading = (f"**the same outcome in every run ({outcomes.pop()})**" if len(outcomes) == 1 else
                   "**not consistent across runs** (a single run's verdict is not reproducible)")
        d = g.vote_minus_mean_accuracy
        lines.append(f"**{task}**, voting claim at N = {n} over {what}: {_count(g.voting_outcome)}; vote − mean "
                     f"accuracy from {d.min():+.3f} to {d.max():+.3f} (mean {d.mean():+.3f}): {reading}.")
        if source == "training":
            low = int((g.minus_resnet_auc_ci_high < 0).sum())
            noninf = int((g.minus_resnet_auc_ci_low > -margin).sum())
            lines.append(f"**{task}**, diffusion − ResNet-18 AUC over {what}: "
                         + ", ".join(f"{r.minus_resnet_auc:+.3f} ({r.minus_resnet_auc_ci_low:+.3f} to "
                                     f"{r.minus_resnet_auc_ci_high:+.3f})" for r in g.itertuples())
                         + f"; significantly lower in {low} of {len(g)} runs, non-inferior at the {margin} margin in "
                           f"{noninf} of {len(g)}.")
    sp = spread(runs).set_index(["variance_source", "measure"])
    parts = [f"test images {sp.loc[(runs.variance_source.iloc[0], 'auc'), 'test_image_sd']:.4f} (bootstrap)"]
    parts += [f"{s} {sp.loc[(s, 'auc'), 'sd']:.4f} (over {int(sp.loc[(s, 'auc'), 'n_runs'])} runs)"
              for s in runs.variance_source.unique() if (s, "auc") in sp.index and sp.loc[(s, "auc"), "n_runs"] > 1]
    lines.append(f"**{task}**, SD of the headline AUC by source of variance: " + "; ".join(parts) + ".")
    return lines
