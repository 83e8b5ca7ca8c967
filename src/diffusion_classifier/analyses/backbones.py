"""Backbones side by side (notebook 10): another denoiser (the DiT) trained on the main run's images with its
training recipe, scored with its draws, and compared with the main run's UNet and ResNet-18 on the same test images.

run_overrides     the profile overrides that make a backbone's run (its own run folder)
trained_scores    a backbone's denoiser, trained or loaded, and its val and test errors (the main run's draw seed)
model_rows        one row per model: the headline rule's metrics with CIs, the majority-class rate, vote - mean
pairs_table       model a - model b on the same test images (paired bootstrap, McNemar), every pair
verdicts          sentences generated from those two tables
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from .. import profiles, study
from ..classifier import rules
from ..classifier.engine import ScoreSettings
from ..evaluation import paired
from ..evaluation.metrics import metrics_with_ci
from ..training.diffusion import train_denoiser
from . import classification, reference

BASELINE = "resnet18"


def model_name(kind: str, steps: int | None = None) -> str:
    """The name a backbone's rows carry in every table: diffusion-unet, diffusion-dit (the main run's number of
    training steps), diffusion-dit-1600 (another)."""
    return f"diffusion-{kind}" + (f"-{steps}" if steps else "")


def runs(cfg: dict) -> list[tuple[str, int | None]]:
    """(kind, steps) of each backbone run of the profile; steps None = the main run's (the UNet's) number."""
    own = cfg["train"]["steps"]
    return [
        (kind, None if steps in (None, own) else int(steps))
        for kind in cfg["backbones"]["kinds"]
        for steps in cfg["backbones"]["train_steps"]
    ]


def run_overrides(kind: str, steps: int | None = None, overrides: dict | None = None) -> dict:
    """The main run's overrides plus a backbone run's own: its kind and, if set, its number of training steps."""
    own = {"model": {"kind": kind}, **({"train": {"steps": steps}} if steps else {})}
    return profiles.overlay(overrides or {}, own)


def describe(model, cfg: dict) -> dict:
    """What a comparison must report beside a model's numbers: its training steps and its size."""
    return {"train_steps": cfg["train"]["steps"], "n_parameters": sum(t.numel() for t in model.parameters())}


def trained_scores(p, splits=("val", "test"), desc: str = "score") -> dict:
    """For a backbone's prepared run (`study.prepare` with `run_overrides`): train its denoiser as notebook 02 does (a
    finished run is loaded) and score the splits with the profile's draws. The draws depend on (seed, image, draw)
    only, so the main run's UNet saw the same timesteps and noises: the comparison is paired on draws too.
    Returns ({split: DrawErrors}, the training history, `describe` of the model)."""
    x, y = p.x, p.y
    model, history = train_denoiser(
        p.cfg, x["train"], y["train"], x["val"], y["val"], p.class_names, p.artifact("denoiser")
    )
    return (
        study.score_splits(p, model, ScoreSettings.from_profile(p.cfg), splits, desc),
        history,
        describe(model, p.cfg),
    )


def model_rows(
    task: str, y, errors: dict, proba, rule: str, n_boot: int = 1000, seed: int = 0, about: dict | None = None
) -> pd.DataFrame:
    """errors: {model name: E (N, C, K)} of the diffusion models; proba: the baseline's softmax on the same images;
    about: {model name: `describe` dict} (training steps, parameters). One row per model at the headline rule (the
    baseline: its softmax), with CIs over test images; diffusion rows also carry vote - mean on their own draws."""
    rows = []
    for name, E in errors.items():
        row = {"task": task, "model": name, "rule": rule, "n_draws": E.shape[2], "n_images": len(y)}
        row.update((about or {}).get(name, {}))
        row.update(metrics_with_ci(y, rules.predict(E, rule), rules.positive_score(E, rule), n_boot, seed))
        vm = classification.compare_rules(E, y, *rules.PAPER_COMPARISON, n_boot=n_boot, seed=seed)
        row.update({f"vote_minus_mean_{k.replace('_diff', '')}": v for k, v in vm.items()})
        row["voting_outcome"] = classification.voting_outcome(
            row["auc_ci_low"], E.shape[2], vm["accuracy_diff_ci_low"], vm["accuracy_diff_ci_high"], vm["mcnemar_p"]
        )
        rows.append(row)
    row = {"task": task, "model": BASELINE, "rule": "softmax", "n_draws": np.nan, "n_images": len(y)}
    row.update(metrics_with_ci(y, proba.argmax(1), proba[:, 1], n_boot, seed))
    rows.append(row)
    out = pd.DataFrame(rows)
    for column in ("n_draws", "train_steps", "n_parameters"):  # the baseline has none
        if column in out:
            out[column] = out[column].astype("Int64")
    out.insert(5, "majority_rate", classification.majority_rate(y))
    return out


def pairs_table(task: str, y, errors: dict, proba, rule: str, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Every pair of models (diffusion models in the order given, then the baseline) on the same test images: a - b
    in AUC, balanced accuracy, accuracy and F1 with paired-bootstrap CIs (the same resamples for both), McNemar."""
    outputs = {name: (rules.predict(E, rule), rules.positive_score(E, rule)) for name, E in errors.items()}
    outputs[BASELINE] = (proba.argmax(1), proba[:, 1])
    return pd.DataFrame(
        [
            {
                "task": task,
                "a": a,
                "b": b,
                "rule": rule,
                "n_images": len(y),
                **paired.compare(y, outputs[a], outputs[b], n_boot, seed),
            }
            for a, b in itertools.combinations(outputs, 2)
        ]
    )


def _ci(row, metric: str) -> str:
    d, lo, hi = (getattr(row, f"{metric}_diff{s}") for s in ("", "_ci_low", "_ci_high"))
    return f"{d:+.3f} (95% CI {lo:+.3f} to {hi:+.3f})"


def pair_verdict(row, models: pd.DataFrame) -> str:
    """One pair, from its row and the models' rows: not testable when either AUC CI contains 0.5; else which AUC is
    higher when the paired CI excludes 0, otherwise that the two cannot be told apart (and whether the CI stays
    within the non-inferiority margin set before the test scores were computed)."""
    auc_low = models.set_index("model").auc_ci_low
    head = f"**{row.task}**, {row.a} − {row.b} ({row.n_images} test images): AUC {_ci(row, 'auc')}"
    if min(auc_low[row.a], auc_low[row.b]) <= 0.5:
        weak = row.a if auc_low[row.a] <= 0.5 else row.b
        return f"{head}; **not testable**: {weak}'s AUC CI contains 0.5."
    margin = classification.NONINFERIORITY_MARGIN
    noninferior = (
        f"{row.a} non-inferior at the margin of {margin}"
        if row.auc_diff_ci_low > -margin
        else f"non-inferiority at {margin} not shown"
    )
    if row.auc_diff_ci_low > 0:
        verdict = f"{row.a}'s AUC is **higher**"
    elif row.auc_diff_ci_high < 0:
        verdict = f"{row.a}'s AUC is **lower** ({noninferior})"
    else:
        verdict = f"the two **cannot be told apart** in AUC ({noninferior})"
    return (
        f"{head}, balanced accuracy {_ci(row, 'balanced_accuracy')}, accuracy {_ci(row, 'accuracy')}, F1 "
        f"{_ci(row, 'f1')}; McNemar p = {row.mcnemar_p:.3g}. On this run (one training seed, one draw seed"
        f"{_training(models, row)}), {verdict}."
    )


def _training(models: pd.DataFrame, row) -> str:
    """What differs in training between two diffusion models, for the verdict: steps and parameters."""
    if "train_steps" not in models:
        return ""
    m = models.set_index("model")
    trained = [name for name in (row.a, row.b) if name in m.index and not pd.isna(m.train_steps[name])]
    parts = [
        f"{name} {int(m.train_steps[name])} steps, {m.n_parameters[name] / 1e6:.1f} M parameters" for name in trained
    ]
    other = any(name != model_name("unet") for name in trained)  # a backbone trained with the UNet's recipe
    recipe = "; the UNet's training recipe, not tuned for the other backbone" if other else ""
    return "; " + ", ".join(parts) + recipe if parts else ""


def paper_gap() -> str:
    """The paper's own DiT - UNet difference (its table: one run each, no intervals), to set beside ours."""
    table = {row[0]: row[1:] for row in reference.PAPER_TABLE}
    dit, unet = table["DiT-B/4 (diffusion)"], table["UNet (diffusion)"]
    return (
        f"The paper's table: DiT-B/4 − UNet accuracy {dit[0] - unet[0]:+.1f} points on CheXpert, "
        f"{dit[2] - unet[2]:+.1f} on ISIC (one run each, no intervals; differences under about 1.5 points are inside "
        "its own run-to-run noise), at 256 px on other data."
    )


def verdicts(models: pd.DataFrame, pairs: pd.DataFrame) -> list[str]:
    lines = [pair_verdict(r, models[models.task == r.task]) for r in pairs.itertuples()]
    return lines + [paper_gap()] if lines else lines


def uncertainty_lines(table: pd.DataFrame, score: str = "vote_fraction") -> list[str]:
    """Claim 4 per model, from its rows of uncertainty_backbones.csv: does the vote share flag the model's errors
    (error-detection AUROC CI above 0.5), beside the ResNet-18's max softmax on the same images."""
    lines = []
    base = table[(table.model == BASELINE) & (table.score == "max_softmax")]
    for r in table[(table.model != BASELINE) & (table.score == score)].itertuples():
        flags = "flags" if r.error_auroc_ci_low > 0.5 else "is not shown to flag"
        line = (
            f"**{r.task}**, {r.model}: its {score.replace('_', ' ')} {flags} its errors (error-detection AUROC "
            f"{r.error_auroc:.3f}, 95% CI {r.error_auroc_ci_low:.3f}-{r.error_auroc_ci_high:.3f}; test accuracy "
            f"{r.accuracy:.3f})"
        )
        b = base[base.task == r.task]
        if len(b):
            line += f"; the ResNet-18's max softmax: {b.error_auroc.iloc[0]:.3f} (an unpaired, descriptive comparison)"
        lines.append(line + ".")
    return lines
