"""The committed results, checked in every clone from committed files only (no runs/, no data, no model).

Each check is a plain function of a results folder that returns the problems it finds (empty = consistent). The
real test calls it on the committed `results/`; a planted test calls the same function on a copy with one committed
number changed and asserts that exactly that number is reported, so the real test is shown able to fail.

1. Classification rows, recomputed from `tables/predictions.csv` (test split): point estimates with scikit-learn;
   95 % percentile-bootstrap CIs written here, not with `metrics.bootstrap`: the notebooks' resamples (n_boot = the
   task's `ablation.n_bootstrap`, the seed of provenance.json, one `default_rng(seed).integers(0, n, n)` per
   resample: what the recorded seed means, `metrics.resample_indices`) as counts of each image, and every metric a
   function of those counts (the AUC a Mann-Whitney statistic over tie groups), so all resamples are evaluated at once.
   Recomputed, every value (n_images, majority_rate, auc, balanced_accuracy, accuracy, f1, sensitivity,
   specificity and their CIs, unet_evals_per_image = 2 classes x N):
     classification.csv       every row over the full timestep range (all N, both rules, the ResNet-18, per source)
     classification_large_n   its rows at N <= 51 (the draws predictions.csv holds)
     baseline.csv             both ResNet-18 rows (metrics and CIs)
     backbones.csv            the diffusion-unet and resnet18 rows, with the UNet's vote - mean paired columns
     paper_comparison.csv     the "this study" rows
   Not recomputable from committed files (predictions.csv holds the first N draws over the full timestep range only;
   the rest needs the error tensor E[N, C, K] and draw times U under runs/):
     classification.csv       the rows of one timestep third ([0.00,0.33) ... at N = 17) and the two
                              "val-selected" rows per task
     classification_large_n   N = 101 and 251 (notebook 09 writes no per-image predictions)
     backbones.csv            the DiT rows (its errors are not committed)
2. Paired rows (vote - mean, diffusion - ResNet): the differences, their paired-bootstrap CIs (same resamples for
   both arms), McNemar's discordant counts and exact p (scipy.stats.binomtest), recomputed for
     ablation_paired.csv      every row;  ablation_paired_large_n.csv: rows at N <= 51
     diffusion_vs_baseline    every row, with a_auc_ci_low / b_auc_ci_low
   Not recomputable: ablation_paired_large_n at N = 101, 251; backbones_paired.csv (UNet vs DiT: the DiT's
   predictions are not committed); ablation_paired_backbones.csv (the DiT's grid).
   The vote rule's stored score cannot reproduce the vote AUCs by itself: it is the vote-share difference plus
   1e-6 x the mean-error difference (decision.vote_scores' tie-break), and %.12g keeps only about six digits of that
   term (vote-rule AUCs at low N came out up to 3e-4 off). The exact score is rebuilt from the two stored columns
   that define it: vote share (recovered from the vote score) and the mean rule's score of the same image and N
   (= the mean-error difference, stored at full relative precision); the stored vote score must agree with the
   rebuilt one to %.12g (checked too).
3. Uncertainty rows (notebook 06, N = the profile's n_draws). What predictions.csv gives per image: the vote count
   (from the vote score), the mean-error difference m0 - m1 (the mean rule's score) and the ResNet's p1. For two
   classes that determines vote_fraction, vote_entropy, the vote logits, error_softmax (a softmax over -mean error
   depends on m0 - m1 only) and max_softmax / predictive_entropy; the temperatures are refitted on the validation
   rows of predictions.csv with `uncertainty.fit_temperature` (the one package function used here; it has a
   known-temperature test in test_uncertainty.py). The metrics are written here, on resample counts as in item 1,
   from uncertainty.py's definitions: error AUROC (scikit-learn for the point), AURC with tied uncertainties
   averaged (in closed form per tie group, with harmonic numbers), E-AURC, accuracy at coverage, the tie-safe ECE
   and the Brier score. Recomputed:
     uncertainty.csv              every row and column except those of margin_z named below
     uncertainty_backbones.csv    the diffusion-unet and resnet18 rows (as above)
     uncertainty_paired.csv       every row (vote share - max softmax)
     uncertainty_removal.csv      every row;  uncertainty_vs_draws.csv: every row
   Not recomputable: margin_z's error_auroc, aurc, e_aurc, acc_at_*_coverage and their CIs (they need the standard
   error of the per-draw error differences, i.e. E itself); of margin_z only accuracy, accuracy_val and the
   confidence columns (NaN: margin_z is no probability) are checked. The DiT rows of uncertainty_backbones.csv.
   Tolerance: 1e-9 (measured: every recomputed value within 1e-13 of the committed one) except the ResNet-18's rows
   of uncertainty.csv and uncertainty_backbones.csv, 1e-4: %.12g cannot resolve p0 = 1 - p1 when p1 is within 1e-9
   of 1, which reorders near-certain predictions' entropies and moves the fitted temperature (measured: 1.2e-5 for
   predictive_entropy's error AUROC, 4e-7 for max_softmax's calibrated ECE).
4. SUMMARY.md of results/ and of every re-run folder (results/reruns/*) regenerated by `summary.build()` on a
   temporary copy of that folder (DC_RESULTS_DIR pointed at it) and compared byte for byte. The builder reads
   nothing under runs/; it reads the folder's tables/, provenance.json, benchmarks/*.csv and the names in figures/
   and notebooks/, and, outside the results folder, the deviations table (`deviations.rows()`: README.md at the time
   of writing, docs/deviations.md where that table moves), so an edit of that table makes the committed SUMMARY stale.
5. Every relative link of each SUMMARY.md resolves to a file (a .png to a PNG), and every .png that README.md or
   docs/*.md names exists (under results/figures, or where the document's path says).
6. Every commit recorded in a provenance.json under results/ is an ancestor of HEAD (skipped, with the reason, where
   git or the history is unavailable, e.g. a shallow clone).
"""

import difflib
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax
from scipy.stats import binomtest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score, roc_auc_score

from diffusion_classifier.evaluation import calibration as unc

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"
FULL_RANGE = "[0.00,1.00)"
TIE_BREAK = 1e-6  # decision.TIE_BREAK, written out: the rebuilt vote score must not follow an edit of the package
TOL = 1e-9
TOL_RESNET_UNCERTAINTY = 1e-4  # see the module docstring, item 3
METRICS = ("accuracy", "balanced_accuracy", "auc", "f1", "sensitivity", "specificity")
COMPARED = ("auc", "balanced_accuracy", "accuracy", "f1")
_CACHE: dict = {}


# ----------------------------------------------------------------------------- reading the committed files


def _digest(*parts) -> str:
    h = hashlib.sha1()
    for p in parts:
        h.update(p.tobytes() if isinstance(p, np.ndarray) else repr(p).encode())
    return h.hexdigest()


def _cached(key, compute):
    if key not in _CACHE:
        _CACHE[key] = compute()
    return _CACHE[key]


class Predictions:
    """predictions.csv by arm, with the vote rule's exact score rebuilt (module docstring, item 2)."""

    def __init__(self, tables: Path):
        df = pd.read_csv(tables / "predictions.csv")
        self.problems = []
        key = ["task", "split", "image", "n_draws"]
        mean = df[df.rule == "mean"].set_index(key).score
        vote = df.rule == "vote"
        d = mean.reindex(pd.MultiIndex.from_frame(df.loc[vote, key])).to_numpy()
        n = df.loc[vote, "n_draws"].to_numpy()
        k = np.round((df.loc[vote, "score"].to_numpy() + 1) / 2 * n)  # votes for class 1
        self.votes1 = pd.Series(np.nan, index=df.index)
        self.votes1[vote] = k
        exact = (k / n - (n - k) / n) + TIE_BREAK * d  # (share1 - share0) - TIE_BREAK * (m1 - m0)
        df["exact_score"] = df.score
        df.loc[vote, "exact_score"] = exact
        df["votes1"] = self.votes1
        bad = ~(np.abs(exact - df.loc[vote, "score"].to_numpy()) <= 1e-11)  # %.12g of a number of size <= 1
        for r in df.loc[vote][bad].head(5).itertuples():
            self.problems.append(
                f"predictions.csv: vote score {r.score!r} of {r.task} {r.split} image {r.image} N={r.n_draws} is not "
                f"its vote share plus {TIE_BREAK} x the mean rule's score (rebuilt {r.exact_score!r})"
            )
        self.arms = {k: g.sort_values("image") for k, g in df.groupby(["task", "split", "model", "rule", "n_draws"])}

    def arm(self, task, model, rule, n, source="all", split="test"):
        """(labels, predictions, scores, votes for class 1) of one arm, in image order; None if not stored."""
        g = self.arms.get((task, split, model, rule, int(n)))
        if g is None:
            return None
        if source != "all":
            g = g[g.source == source]
            if not len(g):
                return None
        return (
            g.label.to_numpy(),
            g.prediction.to_numpy(),
            g.exact_score.to_numpy(),
            g.votes1.to_numpy(),
        )


def predictions(tables: Path) -> Predictions:
    raw = (tables / "predictions.csv").read_bytes()
    return _cached(("predictions", hashlib.sha1(raw).hexdigest()), lambda: Predictions(tables))


def provenance(res: Path) -> dict:
    return json.loads((res / "provenance.json").read_text())


def _settings(prov, task):
    s = prov["settings"][task]
    return {
        "seed": int(prov["seed"]),
        "n_boot": int(s["ablation"]["n_bootstrap"]),
        "n_boot_unc": int(s["uncertainty"]["n_bootstrap"]),
        "n_bins": int(s["uncertainty"]["n_bins"]),
        "n_draws": int(s["scoring"]["n_draws"]),
    }


def _compare(where: str, row, expected: dict, tol: float, problems: list) -> int:
    """Append a problem per column whose committed value differs from the recomputed one; return the values compared."""
    for col, e in expected.items():
        if col not in row.index:
            problems.append(f"{where}: column {col} missing")
            continue
        c = row[col]
        if pd.isna(c) and pd.isna(e):
            continue
        if pd.isna(c) or pd.isna(e) or not abs(float(c) - float(e)) <= tol:
            problems.append(f"{where}: {col} committed {c!r}, recomputed {e!r}")
    return len(expected)


# ----------------------------------------------------------------------------- bootstrap metrics, written here


def resample_counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n): how often each image is drawn in each of the notebooks' resamples for a recorded seed (n_boot
    draws of n indices, one after another, from one default_rng(seed) stream: `metrics.resample_indices`). Every
    metric below is a function of these counts, so all resamples are evaluated at once."""

    def compute():
        rng = np.random.default_rng(seed)
        idx = np.stack([rng.integers(0, n, n) for _ in range(n_boot)])
        flat = (idx + n * np.arange(n_boot)[:, None]).ravel()
        return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(float)

    return _cached(("counts", n, n_boot, seed), compute)


def _groups(values):
    """Image order by value and the start of each run of equal values in that order."""
    order = np.argsort(values, kind="stable")
    v = values[order]
    return order, np.flatnonzero(np.r_[True, v[1:] != v[:-1]])


def _by_group(W, x, order, starts):
    """(n_boot, groups): the counted sum of x over each group of equal values."""
    return np.add.reduceat((W * x)[:, order], starts, axis=1)


def mann_whitney_auc(W, positive, score):
    """AUC of score for `positive` in each resample: P(score of a positive > a negative's) + P(tie) / 2."""
    order, starts = _groups(score)
    pos, neg = _by_group(W, positive, order, starts), _by_group(W, ~positive, order, starts)
    below = np.cumsum(neg, axis=1) - neg
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (below + 0.5 * neg)).sum(1) / (pos.sum(1) * neg.sum(1))


def point_metrics(y, pred, score) -> dict:
    """The point estimates, with scikit-learn."""

    def compute():
        return {
            "auc": roc_auc_score(y, score),
            "balanced_accuracy": balanced_accuracy_score(y, pred),
            "accuracy": accuracy_score(y, pred),
            "f1": f1_score(y, pred, zero_division=0.0),
            "sensitivity": recall_score(y, pred, pos_label=1),
            "specificity": recall_score(y, pred, pos_label=0),
        }

    return _cached(("point", _digest(y, pred, score)), compute)


def boot_metrics(y, pred, score, n_boot, seed) -> dict:
    """Each classification metric on each resample."""

    def compute():
        W = resample_counts(len(y), n_boot, seed)
        pos, hit = y == 1, pred == 1
        n_pos, n_neg, tp, fp = W @ pos, W @ ~pos, W @ (pos & hit), W @ (~pos & hit)
        with np.errstate(invalid="ignore", divide="ignore"):
            sens, spec = tp / n_pos, 1 - fp / n_neg
            denom = 2 * tp + fp + (n_pos - tp)
            f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
        return {
            "accuracy": (W @ (pred == y)) / len(y),
            "balanced_accuracy": (sens + spec) / 2,
            "auc": mann_whitney_auc(W, pos, score),
            "f1": f1,
            "sensitivity": sens,
            "specificity": spec,
        }

    return _cached(("boot", _digest(y, pred, score, n_boot, seed)), compute)


def _ci(samples) -> tuple:
    return float(np.nanquantile(samples, 0.025)), float(np.nanquantile(samples, 0.975))


def classification_values(y, pred, score, n_boot, seed) -> dict:
    out = {"n_images": len(y), "majority_rate": np.bincount(y).max() / len(y)}
    point, boot = point_metrics(y, pred, score), boot_metrics(y, pred, score, n_boot, seed)
    for m in METRICS:
        out[m] = point[m]
        out[f"{m}_ci_low"], out[f"{m}_ci_high"] = _ci(boot[m])
    return out


def paired_values(y, a, b, n_boot, seed) -> dict:
    """a, b = (predictions, scores) on the same images: differences a - b with paired-bootstrap CIs, and McNemar."""
    pa, pb = point_metrics(y, *a), point_metrics(y, *b)
    ba, bb = boot_metrics(y, *a, n_boot, seed), boot_metrics(y, *b, n_boot, seed)
    out = {}
    for m in COMPARED:
        out[f"{m}_diff"] = pa[m] - pb[m]
        out[f"{m}_diff_ci_low"], out[f"{m}_diff_ci_high"] = _ci(ba[m] - bb[m])
    right_a, right_b = a[0] == y, b[0] == y
    only_a, only_b = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    out["only_a_right"], out["only_b_right"] = only_a, only_b
    out["mcnemar_p"] = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return out


def selective(W, u, correct, conf=None, cal=None, n_bins=10, coverages=(0.9, 0.8, 0.7)) -> dict:
    """The uncertainty metrics of each resample (rows of counts W), tied uncertainties averaged as a random order
    would (as uncertainty.py defines them): error-detection AUROC, AURC (mean selective risk over coverages 1/n ... 1)
    in closed form per tie group, E-AURC, accuracy at coverage, and ECE / Brier of the confidences."""
    n = W.shape[1]
    wrong = ~correct
    out = {"error_auroc": mann_whitney_auc(W, wrong, u)}
    order, starts = _groups(u)  # most certain first
    c, e, k = (_by_group(W, x, order, starts) for x in (np.ones(n), wrong, correct))
    a = (np.cumsum(c, axis=1) - c).astype(int)  # predictions kept before each tie group
    errors_before, correct_before = np.cumsum(e, axis=1) - e, np.cumsum(k, axis=1) - k
    H = np.r_[0.0, np.cumsum(1 / np.arange(1, n + 1))]  # harmonic numbers
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(c > 0, e / c, 0.0)  # a tie group's averaged error
        ci = c.astype(int)
        out["aurc"] = ((errors_before - a * r) * (H[a + ci] - H[a]) + r * c).sum(1) / n
        n_err = e.sum(1).astype(int)
        out["e_aurc"] = out["aurc"] - (n_err - (n - n_err) * (H[n] - H[n - n_err])) / n
        rows = np.arange(len(W))
        for cov in coverages:
            m = max(1, int(round(cov * n)))
            g = np.argmax(a + c >= m, axis=1)  # the tie group holding the m-th kept prediction
            kept = correct_before[rows, g] + (m - a[rows, g]) * k[rows, g] / c[rows, g]
            out[f"acc_at_{round(cov * 100)}_coverage"] = kept / m
    for name, x in (("", conf), ("_calibrated", cal)):
        out[f"ece{name}"] = np.full(len(W), np.nan) if x is None else ece(W, x, correct, n_bins)
        out[f"brier{name}"] = np.full(len(W), np.nan) if x is None else W @ (x - correct) ** 2 / n
    return out


def ece(W, confidence, correct, n_bins) -> np.ndarray:
    """ECE of each resample over tie-safe, about equal-mass bins: walking up the distinct confidences, a bin closes
    once it holds remaining / (bins left) predictions (or at the last value), so equal confidences share a bin."""
    order, starts = _groups(confidence)
    counts, conf_sum, correct_sum = (_by_group(W, x, order, starts) for x in (1.0, confidence, correct))
    n, out = W.shape[1], []
    for cnt, cs, ks in zip(counts, conf_sum, correct_sum):
        keep = cnt > 0
        cnt, cs, ks = cnt[keep], cs[keep], ks[keep]
        cum, j, remaining, closed, total = np.cumsum(cnt), 0, n, 0, 0.0
        while j < len(cnt):
            base = cum[j - 1] if j else 0.0
            v = min(j + int(np.searchsorted(cum[j:] - base, remaining / max(1, n_bins - closed))), len(cnt) - 1)
            total += abs(ks[j : v + 1].sum() - cs[j : v + 1].sum())
            remaining -= cum[v] - base
            closed, j = closed + 1, v + 1
        out.append(total / n)
    return np.array(out)


# ----------------------------------------------------------------------------- check 1: classification rows


def _arm_key(text: str, default_model="diffusion-unet"):
    """'vote N=51', 'diffusion-unet vote N=51' or 'resnet18' -> (model, rule, N)."""
    if text.strip() == "resnet18":
        return "resnet18", "softmax", 0
    m = re.fullmatch(r"(?:(\S+) )?(\w+) N=(\d+)", text.strip())
    if not m:
        return None
    return m.group(1) or default_model, m.group(2), int(m.group(3))


def classification_problems(res: Path) -> tuple[list, int]:
    """(problems, values compared) of the classification-type rows named in the module docstring, item 1."""
    tables, problems, checked = res / "tables", [], 0
    preds, prov = predictions(tables), provenance(res)
    problems += preds.problems

    def values(task, source, model, rule, n):
        s = _settings(prov, task)
        arm = preds.arm(task, model, rule, n, source)
        return None if arm is None else classification_values(*arm[:3], s["n_boot"], s["seed"])

    for name in ("classification", "classification_large_n"):
        path = tables / f"{name}.csv"
        if not path.exists():
            continue
        df = pd.read_csv(path)
        n_rows = 0
        for i, r in df.iterrows():
            t_range = "" if pd.isna(r.t_range) else r.t_range
            if t_range not in ("", FULL_RANGE):
                continue  # one timestep third or val-selected: needs E and U (module docstring)
            where = f"{name}.csv row {i} ({r.task} {r.source} {r.model} {r.rule} N={r.n_draws})"
            v = values(r.task, r.source, r.model, r.rule, r.n_draws)
            if v is None:
                if name == "classification_large_n" and r.n_draws > _settings(prov, r.task)["n_draws"]:
                    continue  # notebook 09's long draw sequence: no per-image predictions committed
                problems.append(f"{where}: no predictions to recompute it from")
                continue
            evals = 0.0 if r.model == "resnet18" else 2.0 * r.n_draws  # two classes, every draw of N evaluated
            checked += _compare(where, r, {**v, "unet_evals_per_image": evals}, TOL, problems)
            n_rows += 1
        if not n_rows:
            problems.append(f"{name}.csv: no row could be recomputed")

    if (tables / "baseline.csv").exists():
        for i, r in pd.read_csv(tables / "baseline.csv").iterrows():
            v = values(r.task, "all", "resnet18", "softmax", 0)
            where = f"baseline.csv row {i} ({r.task} {r.model})"
            if v is None:
                problems.append(f"{where}: no predictions to recompute it from")
                continue
            checked += _compare(where, r, {k: x for k, x in v.items() if k.startswith(METRICS)}, TOL, problems)

    if (tables / "backbones.csv").exists():
        for i, r in pd.read_csv(tables / "backbones.csv").iterrows():
            if r.model not in ("diffusion-unet", "resnet18"):
                continue  # the DiT: its errors are not committed
            n = 0 if r.model == "resnet18" else int(r.n_draws)
            where = f"backbones.csv row {i} ({r.task} {r.model})"
            v = values(r.task, "all", r.model, r.rule, n)
            if v is None:
                problems.append(f"{where}: no predictions to recompute it from")
                continue
            if r.model == "diffusion-unet":
                s = _settings(prov, r.task)
                y, pv, sv, _ = preds.arm(r.task, r.model, "vote", n)
                _, pm, sm, _ = preds.arm(r.task, r.model, "mean", n)
                vm = paired_values(y, (pv, sv), (pm, sm), s["n_boot"], s["seed"])
                v = {**v, **{f"vote_minus_mean_{k.replace('_diff', '')}": x for k, x in vm.items()}}
            checked += _compare(where, r, v, TOL, problems)

    if (tables / "paper_comparison.csv").exists():
        for i, r in pd.read_csv(tables / "paper_comparison.csv").iterrows():
            if r.source != "this study":
                continue
            task = r.data.split(",")[0]
            m = re.fullmatch(r"(\S+) \((\w+), N = (\d+)\)", r.model)
            key = (m.group(1), m.group(2), int(m.group(3))) if m else ("resnet18", "softmax", 0)
            where = f"paper_comparison.csv row {i} ({r.data}, {r.model})"
            v = values(task, "all", *key)
            if v is None:
                problems.append(f"{where}: no predictions to recompute it from")
                continue
            checked += _compare(
                where, r, {k: v[k] for k in ("accuracy", "f1", "auc", "balanced_accuracy")}, TOL, problems
            )
    return problems, checked


# ----------------------------------------------------------------------------- check 2: paired rows


def paired_problems(res: Path) -> tuple[list, int]:
    """(problems, values compared) of the paired rows named in the module docstring, item 2."""
    tables, problems, checked = res / "tables", [], 0
    preds, prov = predictions(tables), provenance(res)
    problems += preds.problems
    for name in ("ablation_paired", "ablation_paired_large_n", "diffusion_vs_baseline"):
        path = tables / f"{name}.csv"
        if not path.exists():
            continue
        n_rows = 0
        for i, r in pd.read_csv(path).iterrows():
            where = f"{name}.csv row {i} ({r.task} {r.source}: {r.a} - {r.b})"
            ka, kb = _arm_key(r.a), _arm_key(r.b)
            s = _settings(prov, r.task)
            arms = [None if k is None else preds.arm(r.task, *k, r.source) for k in (ka, kb)]
            if None in arms:
                if name == "ablation_paired_large_n" and ka and ka[2] > s["n_draws"]:
                    continue  # notebook 09's long draw sequence: no per-image predictions committed
                problems.append(f"{where}: no predictions to recompute it from")
                continue
            (y, pa, sa, _), (_, pb, sb, _) = arms
            v = {"n_images": len(y), **paired_values(y, (pa, sa), (pb, sb), s["n_boot"], s["seed"])}
            if "n_draws" in r.index:
                v["n_draws"] = ka[2]
            if name == "diffusion_vs_baseline":
                v["a_auc_ci_low"] = classification_values(y, pa, sa, s["n_boot"], s["seed"])["auc_ci_low"]
                v["b_auc_ci_low"] = classification_values(y, pb, sb, s["n_boot"], s["seed"])["auc_ci_low"]
            checked += _compare(where, r, v, TOL, problems)
            n_rows += 1
        if not n_rows:
            problems.append(f"{name}.csv: no row could be recomputed")
    return problems, checked


# ----------------------------------------------------------------------------- check 3: uncertainty rows


def _vote_inputs(preds, task, n, split):
    y, pred, _, k = preds.arm(task, "diffusion-unet", "vote", n, split=split)
    votes = np.stack([n - k, k], 1).astype(np.int64)
    return y, pred, votes, votes / n


def uncertainty_inputs(preds: Predictions, task: str, n: int) -> dict:
    """score -> (model, rule, test labels, test predictions, uncertainty, confidence, calibrated confidence,
    validation accuracy), rebuilt from predictions.csv (module docstring, item 3)."""

    def compute():
        out = {}
        (yv, pv, votes_v, _), (y, pred, votes, shares) = (_vote_inputs(preds, task, n, s) for s in ("val", "test"))
        logits = lambda v: np.log((v + 0.5) / (v + 0.5).sum(1, keepdims=True))  # uncertainty.vote_logits
        t_vote = unc.fit_temperature(logits(votes_v), yv)
        at = np.arange(len(y))
        conf = shares.max(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            entropy = -np.nansum(np.where(shares > 0, shares * np.log(shares), 0.0), axis=1)
        cal = softmax(logits(votes) / t_vote, axis=1)[at, pred]
        acc_val = (pv == yv).mean()
        out["vote_fraction"] = ("diffusion-unet", "vote", y, pred, -conf, conf, cal, acc_val)
        out["vote_entropy"] = ("diffusion-unet", "vote", y, pred, entropy, None, None, acc_val)
        # mean rule: its score is m0 - m1, and softmax(-[m0, m1] / T) = softmax([0, m0 - m1] / T)
        yv, pv, dv, _ = preds.arm(task, "diffusion-unet", "mean", n, split="val")
        y, pred, d, _ = preds.arm(task, "diffusion-unet", "mean", n)
        two = lambda d: np.stack([np.zeros_like(d), d], 1)
        t_err = unc.fit_temperature(two(dv), yv)
        raw, cal = softmax(two(d), axis=1)[at, pred], softmax(two(d) / t_err, axis=1)[at, pred]
        acc_val = (pv == yv).mean()
        out["error_softmax"] = ("diffusion-unet", "mean", y, pred, -cal, raw, cal, acc_val)
        out["margin_z"] = ("diffusion-unet", "mean", y, pred, None, None, None, acc_val)
        # ResNet-18: proba = [1 - p1, p1]
        yv, pv, p1v, _ = preds.arm(task, "resnet18", "softmax", 0, split="val")
        y, pred, p1, _ = preds.arm(task, "resnet18", "softmax", 0)
        proba_v, proba = np.stack([1 - p1v, p1v], 1), np.stack([1 - p1, p1], 1)
        log_v, log_t = np.log(np.clip(proba_v, 1e-12, 1)), np.log(np.clip(proba, 1e-12, 1))
        t_b = unc.fit_temperature(log_v, yv)
        msp, cal = proba.max(1), softmax(log_t / t_b, axis=1)[at, pred]
        entropy = -(proba * log_t).sum(1)
        acc_val = (pv == yv).mean()
        out["max_softmax"] = ("resnet18", "softmax", y, pred, -msp, msp, cal, acc_val)
        out["predictive_entropy"] = ("resnet18", "softmax", y, pred, entropy, None, None, acc_val)
        return out

    return _cached(("unc_inputs", id(preds), task, n), compute)


CONFIDENCE_COLUMNS = ("ece", "ece_calibrated", "brier", "brier_calibrated")


def selective_boot(u, correct, conf, cal, n_bins, n_boot, seed) -> dict:
    key = ("selective", _digest(u, correct, conf, cal, n_bins, n_boot, seed))
    return _cached(key, lambda: selective(resample_counts(len(u), n_boot, seed), u, correct, conf, cal, n_bins))


def selective_values(u, correct, conf, cal, n_bins, n_boot, seed) -> dict:
    """Point estimates (error AUROC with scikit-learn) and percentile CIs of the selective metrics."""
    point = {k: float(v[0]) for k, v in selective(np.ones((1, len(u))), u, correct, conf, cal, n_bins).items()}
    point["error_auroc"] = roc_auc_score(~correct, u)
    out = dict(point)
    for k, samples in selective_boot(u, correct, conf, cal, n_bins, n_boot, seed).items():
        out[f"{k}_ci_low"], out[f"{k}_ci_high"] = _ci(samples) if np.isfinite(samples).any() else (np.nan, np.nan)
    return out


def uncertainty_values(inputs, score, n_bins, n_boot, seed) -> dict:
    model, rule, y, pred, u, conf, cal, acc_val = inputs[score]
    correct = pred == y
    out = {"accuracy_val": acc_val, "accuracy": correct.mean()}
    if u is None:  # margin_z: only what needs no per-draw errors
        return {**out, **{f"{c}{s}": np.nan for c in CONFIDENCE_COLUMNS for s in ("", "_ci_low", "_ci_high")}}
    return {**out, **selective_values(u, correct, conf, cal, n_bins, n_boot, seed)}


def uncertainty_problems(res: Path) -> tuple[list, int]:
    """(problems, values compared) of the uncertainty rows named in the module docstring, item 3."""
    tables, problems, checked = res / "tables", [], 0
    preds, prov = predictions(tables), provenance(res)
    problems += preds.problems

    def inputs(task):
        return uncertainty_inputs(preds, task, _settings(prov, task)["n_draws"])

    for name in ("uncertainty", "uncertainty_backbones"):
        path = tables / f"{name}.csv"
        if not path.exists():
            continue
        n_rows = 0
        for i, r in pd.read_csv(path).iterrows():
            if name == "uncertainty_backbones" and r.model not in ("diffusion-unet", "resnet18"):
                continue  # the DiT: its errors are not committed
            s, where = _settings(prov, r.task), f"{name}.csv row {i} ({r.task} {r.model} {r.score})"
            given = inputs(r.task)
            if r.score not in given or given[r.score][:2] != (r.model, r.rule):
                problems.append(f"{where}: no such score of this model and rule to recompute")
                continue
            v = uncertainty_values(given, r.score, s["n_bins"], s["n_boot_unc"], s["seed"])
            tol = TOL_RESNET_UNCERTAINTY if r.model == "resnet18" else TOL
            checked += _compare(where, r, v, tol, problems)
            n_rows += 1
        if not n_rows:
            problems.append(f"{name}.csv: no row could be recomputed")

    if (tables / "uncertainty_paired.csv").exists():
        for i, r in pd.read_csv(tables / "uncertainty_paired.csv").iterrows():
            s, given = _settings(prov, r.task), inputs(r.task)
            (ma, a), (mb, b) = r.a.split(" ", 1), r.b.split(" ", 1)
            where = f"uncertainty_paired.csv row {i} ({r.task}: {r.a} - {r.b})"
            if a not in given or b not in given or (given[a][0], given[b][0]) != (ma, mb):
                problems.append(f"{where}: no such scores to recompute")
                continue
            (ua, ca), (ub, cb) = ((given[x][4], given[x][3] == given[x][2]) for x in (a, b))
            pa, pb = selective(np.ones((1, len(ua))), ua, ca), selective(np.ones((1, len(ub))), ub, cb)
            boot_a = selective_boot(ua, ca, None, None, 10, s["n_boot_unc"], s["seed"])
            boot_b = selective_boot(ub, cb, None, None, 10, s["n_boot_unc"], s["seed"])
            W = resample_counts(len(ua), s["n_boot_unc"], s["seed"])
            v = {"n_images": len(ca)}
            for name, (xa, xb) in {
                "error_auroc": (boot_a["error_auroc"], boot_b["error_auroc"]),
                "e_aurc": (boot_a["e_aurc"], boot_b["e_aurc"]),
                "referral_gain_at_80": (
                    boot_a["acc_at_80_coverage"] - W @ ca / len(ca),
                    boot_b["acc_at_80_coverage"] - W @ cb / len(cb),
                ),
            }.items():
                v[f"{name}_diff_ci_low"], v[f"{name}_diff_ci_high"] = _ci(xa - xb)
            v["error_auroc_diff"] = roc_auc_score(~ca, ua) - roc_auc_score(~cb, ub)
            v["e_aurc_diff"] = float(pa["e_aurc"][0] - pb["e_aurc"][0])
            v["referral_gain_at_80_diff"] = float(
                (pa["acc_at_80_coverage"][0] - ca.mean()) - (pb["acc_at_80_coverage"][0] - cb.mean())
            )
            checked += _compare(where, r, v, TOL, problems)

    if (tables / "uncertainty_removal.csv").exists():
        df = pd.read_csv(tables / "uncertainty_removal.csv")
        fractions = np.arange(0, 1, 0.05)  # the paper's x-axis: 0, 5, ..., 95 % removed
        for (task, model, score), g in df.groupby(["task", "model", "score"], sort=False):
            given = inputs(task)
            if score not in given or given[score][0] != model or given[score][4] is None:
                problems.append(f"uncertainty_removal.csv {task} {model} {score}: no such score to recompute")
                continue
            _, _, y, pred, u, *_ = given[score]
            curve = selective(np.ones((1, len(y))), u, pred == y, coverages=1 - fractions)
            for i, r in g.iterrows():
                where = f"uncertainty_removal.csv row {i} ({task} {model} {score} removed {r.removed})"
                match = np.flatnonzero(np.abs(fractions - r.removed) < 1e-9)
                if not len(match):
                    problems.append(f"{where}: not a removal fraction of the paper's curve")
                    continue
                acc = curve[f"acc_at_{round((1 - fractions[match[0]]) * 100)}_coverage"][0]
                checked += _compare(where, r, {"accuracy": acc}, TOL, problems)
            if len(g) != len(fractions):
                problems.append(f"uncertainty_removal.csv {task} {model} {score}: {len(g)} rows, not {len(fractions)}")

    if (tables / "uncertainty_vs_draws.csv").exists():
        for i, r in pd.read_csv(tables / "uncertainty_vs_draws.csv").iterrows():
            s, where = _settings(prov, r.task), f"uncertainty_vs_draws.csv row {i} ({r.task} N={r.n_draws})"
            if preds.arm(r.task, "diffusion-unet", "vote", r.n_draws) is None:
                problems.append(f"{where}: no predictions to recompute it from")
                continue
            y, pred, _, shares = _vote_inputs(preds, r.task, int(r.n_draws), "test")
            conf, correct = shares.max(1), pred == y
            m = selective_values(-conf, correct, None, None, 10, s["n_boot_unc"], s["seed"])
            v = {k: m[k] for k in m if k.startswith(("error_auroc", "acc_at_80", "aurc"))}
            v.update(accuracy=correct.mean(), mean_vote_fraction=conf.mean())
            checked += _compare(where, r, v, TOL, problems)
    return problems, checked


# ----------------------------------------------------------------------------- check 4: SUMMARY.md byte for byte


def summary_folders(res: Path = RESULTS) -> list[Path]:
    """results/ and every re-run folder under it that holds a SUMMARY.md with its own tables and provenance."""
    return [p.parent for p in sorted(res.rglob("SUMMARY.md")) if (p.parent / "provenance.json").exists()]


GENERATED = ("SUMMARY.md", "DETAILS.md")


def regenerate_summary(folder: Path) -> dict[str, str]:
    """SUMMARY.md (summary.build(): the claims page, which reads the re-run folders' tables too) and DETAILS.md
    (details.details()) regenerated on a temporary copy of folder (nothing is written beside the committed files)."""
    from diffusion_classifier.report import details, summary

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "results"
        shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("*.ipynb", "*.png"))
        for p in (*folder.rglob("*.png"), *folder.rglob("*.ipynb")):  # the builders read only their names
            (copy / p.relative_to(folder)).touch()
        before = os.environ.get("DC_RESULTS_DIR")
        os.environ["DC_RESULTS_DIR"] = str(copy)
        try:
            return {"SUMMARY.md": summary.build(), "DETAILS.md": details.details()}
        finally:
            if before is None:
                os.environ.pop("DC_RESULTS_DIR")
            else:
                os.environ["DC_RESULTS_DIR"] = before


def summary_problems(folder: Path) -> list[str]:
    """The unified diffs (committed -> regenerated) of folder/SUMMARY.md and DETAILS.md; empty when byte-identical."""
    out = []
    for name, text in regenerate_summary(folder).items():
        committed, regenerated = (folder / name).read_bytes(), text.encode()
        if committed == regenerated:
            continue
        diff = difflib.unified_diff(
            committed.decode().splitlines(),
            regenerated.decode().splitlines(),
            f"{folder.name}/{name} (committed)",
            "regenerated",
            lineterm="",
        )
        out += list(diff) or [f"{name}: bytes differ (line endings or the final newline)"]
    return out


# ----------------------------------------------------------------------------- check 5: figures


LINK = re.compile(r"\]\(([^)\s]+)\)")
PNG = re.compile(r"[\w./-]+\.png")


def figure_problems(res: Path, docs) -> tuple[list, int]:
    """(problems, files checked): every relative link of res/SUMMARY.md resolves to a file; every .png a document in
    docs names (relative to the document, or to the repository) exists under res/figures and is a PNG."""
    problems, checked = [], 0
    for page in (p for p in (res / name for name in GENERATED) if p.exists()):
        for target in LINK.findall(page.read_text()):
            if "://" in target or target.startswith("#"):
                continue
            checked += 1
            path = res / target.split("#")[0]
            if not path.is_file():
                problems.append(f"{page.name} links {target}, which does not exist")
            elif path.suffix == ".png" and not path.read_bytes().startswith(b"\x89PNG"):
                problems.append(f"{page.name} links {target}, which is not a PNG")
    for doc in docs:
        for name in PNG.findall(doc.read_text()):
            checked += 1
            found = [p for p in (doc.parent / name, REPO / name, res / "figures" / Path(name).name) if p.is_file()]
            if not found or not found[0].read_bytes().startswith(b"\x89PNG"):
                problems.append(f"{doc.name} names {name}: no such PNG under {res.name}/figures")
    return problems, checked


def documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


# ----------------------------------------------------------------------------- check 6: provenance commits


def recorded_commits(res: Path = RESULTS) -> dict:
    """commit -> the provenance.json files (under res) that record it: every `commit*` entry, at any depth."""
    out = {}

    def walk(node, where):
        if isinstance(node, dict):
            for k, v in node.items():
                if "commit" in k and isinstance(v, str):
                    out.setdefault(v, set()).add(where)
                else:
                    walk(v, where)
        elif isinstance(node, list):
            for v in node:
                walk(v, where)

    for path in sorted(res.rglob("provenance.json")):
        walk(json.loads(path.read_text()), str(path.relative_to(res.parent)))
    return out


def git(repo: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=60)


def history_unavailable(repo: Path) -> str | None:
    """Why the ancestry of the recorded commits cannot be checked here (None: it can)."""
    if shutil.which("git") is None:
        return "git is not installed"
    r = git(repo, "rev-parse", "--is-shallow-repository")
    if r.returncode:
        return f"{repo} is not a git checkout ({r.stderr.strip()})"
    if r.stdout.strip() == "true":
        return "shallow clone: the recorded commits' history is not here (clone with full history, e.g. fetch-depth: 0)"
    return None


def commit_problems(commits: dict, repo: Path) -> list[str]:
    problems = []
    for commit, where in sorted(commits.items()):
        if not re.fullmatch(r"[0-9a-f]{7,40}", commit):
            problems.append(f"{commit!r} (in {', '.join(sorted(where))}) is not a commit id")
            continue
        r = git(repo, "merge-base", "--is-ancestor", commit, "HEAD")
        if r.returncode == 1:
            problems.append(f"{commit} (in {', '.join(sorted(where))}) is not an ancestor of HEAD")
        elif r.returncode:
            problems.append(f"{commit} (in {', '.join(sorted(where))}) is not in this repository: {r.stderr.strip()}")
    return problems


# ============================================================================= the committed results


def test_committed_classification_rows_follow_from_predictions():
    """Every recomputable classification row (item 1 of the module docstring) equals its recomputation from
    predictions.csv. Catches: a hand-edited or stale table, a table written from other predictions than the committed
    ones, a metric or CI computed on other images / another seed. The count guards against a vacuous pass (an empty
    predictions.csv is reported row by row)."""
    problems, checked = classification_problems(RESULTS)
    assert not problems, "\n".join(problems[:40])
    assert checked >= 1000  # 43 rows x 21 values, baseline, backbones and paper rows: 1010 today


def test_committed_paired_rows_follow_from_predictions():
    """Every recomputable paired row (item 2): differences, paired CIs, McNemar counts and p. Catches a McNemar p or
    a difference that does not follow from the two arms' committed predictions."""
    problems, checked = paired_problems(RESULTS)
    assert not problems, "\n".join(problems[:40])
    assert checked >= 370  # 22 rows: 378 values today


def test_committed_uncertainty_rows_follow_from_predictions():
    """Every recomputable uncertainty value (item 3) of uncertainty.csv, uncertainty_backbones.csv,
    uncertainty_paired.csv, uncertainty_removal.csv and uncertainty_vs_draws.csv."""
    problems, checked = uncertainty_problems(RESULTS)
    assert not problems, "\n".join(problems[:40])
    assert checked >= 750  # 754 values today


@pytest.mark.parametrize("folder", summary_folders(), ids=lambda p: str(p.relative_to(REPO)))
def test_committed_summary_regenerates_byte_for_byte(folder):
    """SUMMARY.md equals summary.build() on its committed tables and provenance.json. Catches a hand edit of
    SUMMARY.md, a table changed without regenerating it, and a builder change whose output was not committed."""
    problems = summary_problems(folder)
    assert not problems, "\n".join(problems[:60])


def test_every_figure_named_in_summary_and_docs_exists():
    """Each figure (and other file) a SUMMARY.md links (results/ and each re-run folder), and each .png README.md or
    docs/*.md names, is committed. Catches a figure renamed or not committed, and a link that leaves a re-run folder
    for a path that exists only from results/ (e.g. ../docs/...)."""
    problems, checked = [], 0
    for i, folder in enumerate(summary_folders()):
        p, c = figure_problems(folder, documents() if i == 0 else [])
        problems += [f"{folder.relative_to(REPO)}: {x}" for x in p]
        checked += c
    assert not problems, "\n".join(problems)
    assert checked >= 40


def test_provenance_commits_are_ancestors_of_head():
    """Each commit a provenance.json records is in HEAD's history: results were made by code that is still here.
    Catches a result run on an unpushed or rebased-away commit, and a hand-typed commit id."""
    reason = history_unavailable(REPO)
    if reason:
        pytest.skip(reason)
    commits = recorded_commits()
    assert len(commits) >= 2
    problems = commit_problems(commits, REPO)
    assert not problems, "\n".join(problems)


# ============================================================================= planted edits: each check can fail


def copy_results(dst: Path, figures: bool) -> Path:
    """A copy of the committed results folder (re-run folders included: the claims page reads their tables);
    figures and executed notebooks as empty files of the same names (all the summary builder reads of them) unless
    `figures`. The folder beside it links to the repository's docs/, so that SUMMARY.md's links out of results/
    resolve as in the checkout."""
    shutil.copytree(RESULTS, dst, ignore=shutil.ignore_patterns(*([] if figures else ["*.png", "*.ipynb"])))
    if not figures:
        for p in (*RESULTS.rglob("*.png"), *RESULTS.rglob("*.ipynb")):
            (dst / p.relative_to(RESULTS)).touch()
    (dst.parent / "docs").symlink_to(REPO / "docs", target_is_directory=True)
    return dst


@pytest.fixture
def copy(tmp_path) -> Path:
    return copy_results(tmp_path / "results", figures=False)


def plant(res: Path, table: str, where: dict, column: str, delta: float):
    """Add delta to one committed number: the first row of table matching `where`."""
    path = res / "tables" / f"{table}.csv"
    df = pd.read_csv(path)
    mask = np.logical_and.reduce([df[k].astype(str) == str(v) for k, v in where.items()])
    assert mask.any(), (table, where)
    i = int(np.flatnonzero(mask)[0])
    df.loc[i, column] += delta
    df.to_csv(path, index=False)
    return i


@pytest.mark.parametrize(
    ("table", "where", "column"),
    [
        ("classification", {"task": "pneumonia", "rule": "vote", "n_draws": 51, "t_range": FULL_RANGE}, "auc"),
        ("classification", {"task": "melanoma_balanced", "source": "isic2017", "model": "resnet18"}, "f1_ci_high"),
        ("classification", {"task": "melanoma_balanced", "rule": "mean", "n_draws": 3}, "majority_rate"),
        ("classification_large_n", {"rule": "mean", "n_draws": 25}, "balanced_accuracy"),
        ("baseline", {"task": "pneumonia"}, "specificity_ci_low"),
        ("backbones", {"model": "diffusion-unet"}, "vote_minus_mean_mcnemar_p"),
        ("paper_comparison", {"source": "this study"}, "auc"),
    ],
)
def test_planted_classification_edit_is_reported(copy, table, where, column):
    """One committed number moved by 0.01: the classification check names that row and column, and nothing else
    (a stub returning no problems, or a comparison that skips columns, fails here)."""
    i = plant(copy, table, where, column, 0.01)
    problems, _ = classification_problems(copy)
    assert len(problems) == 1 and problems[0].startswith(f"{table}.csv row {i} ") and f": {column} " in problems[0]


def test_planted_prediction_edit_is_reported(copy):
    """One image's ResNet-18 prediction flipped in predictions.csv: the ResNet rows no longer follow from it
    (the recomputation reads the committed predictions, not the table it checks)."""
    path = copy / "tables" / "predictions.csv"
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    i = np.flatnonzero((df.model == "resnet18") & (df.split == "test") & (df.task == "pneumonia"))[0]
    df.loc[i, "prediction"] = str(1 - int(df.loc[i, "prediction"]))
    df.to_csv(path, index=False)
    problems, _ = classification_problems(copy)
    assert any(p.startswith("baseline.csv row 0 (pneumonia resnet18): accuracy ") for p in problems)
    assert any("classification.csv" in p and "resnet18" in p for p in problems)


def test_planted_vote_score_edit_is_reported(copy):
    """A stored vote score whose tie-break no longer matches the mean rule's score is reported (the rebuilt exact
    vote score would otherwise hide an edit of predictions.csv's vote column)."""
    path = copy / "tables" / "predictions.csv"
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    i = np.flatnonzero((df.rule == "vote") & (df.n_draws == "51") & (df.split == "test"))[0]
    df.loc[i, "score"] = repr(float(df.loc[i, "score"]) + 1e-8)
    df.to_csv(path, index=False)
    problems, _ = classification_problems(copy)
    assert problems and problems[0].startswith("predictions.csv: vote score")


@pytest.mark.parametrize(
    ("table", "where", "column", "delta"),
    [
        ("ablation_paired", {"task": "pneumonia", "n_draws": 51}, "mcnemar_p", 0.01),
        ("ablation_paired", {"task": "melanoma_balanced", "n_draws": 11}, "only_a_right", 1),
        ("ablation_paired_large_n", {"n_draws": 5}, "auc_diff_ci_low", 0.01),
        ("diffusion_vs_baseline", {"source": "isic2018"}, "balanced_accuracy_diff", 0.01),
        ("diffusion_vs_baseline", {"task": "pneumonia"}, "b_auc_ci_low", 0.01),
    ],
)
def test_planted_paired_edit_is_reported(copy, table, where, column, delta):
    """One committed paired number changed: the paired check names that row and column only."""
    i = plant(copy, table, where, column, delta)
    problems, _ = paired_problems(copy)
    assert len(problems) == 1 and problems[0].startswith(f"{table}.csv row {i} ") and f": {column} " in problems[0]


@pytest.mark.parametrize(
    ("table", "where", "column"),
    [
        ("uncertainty", {"task": "pneumonia", "score": "vote_fraction"}, "error_auroc"),
        ("uncertainty", {"task": "melanoma_balanced", "score": "error_softmax"}, "ece_calibrated_ci_high"),
        ("uncertainty", {"task": "melanoma_balanced", "score": "margin_z"}, "accuracy_val"),
        ("uncertainty", {"task": "pneumonia", "score": "max_softmax"}, "brier_calibrated"),
        ("uncertainty_backbones", {"model": "diffusion-unet", "score": "vote_entropy"}, "e_aurc"),
        ("uncertainty_paired", {"task": "melanoma_balanced"}, "referral_gain_at_80_diff"),
        ("uncertainty_removal", {"task": "pneumonia", "score": "max_softmax", "removed": 0.5}, "accuracy"),
        ("uncertainty_vs_draws", {"task": "melanoma_balanced", "n_draws": 25}, "aurc_ci_high"),
    ],
)
def test_planted_uncertainty_edit_is_reported(copy, table, where, column):
    """One committed uncertainty number moved by 0.01 (above the ResNet rows' 1e-4 tolerance): reported, alone."""
    i = plant(copy, table, where, column, 0.01)
    problems, _ = uncertainty_problems(copy)
    assert len(problems) == 1 and problems[0].startswith(f"{table}.csv row {i} ") and f": {column} " in problems[0]


def test_unedited_copy_regenerates_cleanly(copy):
    """The control for the planted SUMMARY/DETAILS edits below: the copy they edit regenerates byte for byte, so a
    problem they see is the edit's."""
    assert summary_problems(copy) == []


def test_planted_summary_edit_is_reported(copy):
    """One key number of the claims table in SUMMARY.md changed by hand: the byte-for-byte comparison shows that
    line."""
    path = copy / "SUMMARY.md"
    text = path.read_text()
    m = re.search(r"\(chance = 0\.5\): (\d\.\d{3})", text)
    edited = f"(chance = 0.5): {float(m.group(1)) + 0.001:.3f}"
    path.write_text(text[: m.start()] + edited + text[m.end() :])
    problems = summary_problems(copy)
    assert any(p.startswith("-") and edited in p for p in problems)
    assert any(p.startswith("+") and m.group(0) in p for p in problems)


def test_planted_verdict_word_in_summary_is_reported(copy):
    """One verdict changed by hand ("**inconclusive**" -> "**supported**"): reported."""
    path = copy / "SUMMARY.md"
    text = path.read_text()
    assert "**inconclusive**" in text
    path.write_text(text.replace("**inconclusive**", "**supported**", 1))
    assert any(p.startswith("-") and "**supported**" in p for p in summary_problems(copy))


def test_planted_details_edit_is_reported(copy):
    """One number of DETAILS.md changed by hand (a balanced accuracy): reported."""
    path = copy / "DETAILS.md"
    text = path.read_text()
    m = re.search(r"balanced accuracy (\d\.\d{3})", text)
    edited = f"balanced accuracy {float(m.group(1)) + 0.001:.3f}"
    path.write_text(text[: m.start()] + edited + text[m.end() :])
    assert any(p.startswith("-") and edited in p for p in summary_problems(copy))


def test_planted_table_edit_makes_summary_stale(copy):
    """A table changed without regenerating (claim 1's pneumonia AUC difference, 0.01 up): the regenerated claims
    row carries the new number, so the comparison reports it."""
    i = plant(copy, "diffusion_vs_baseline", {"task": "pneumonia", "source": "all"}, "auc_diff", 0.01)
    new = pd.read_csv(copy / "tables" / "diffusion_vs_baseline.csv").auc_diff[i]
    problems = summary_problems(copy)
    assert any(p.startswith("+| 1 competitive | pneumonia") and f"{new:+.3f}" in p for p in problems)


def test_planted_missing_figure_is_reported(tmp_path):
    """A figure SUMMARY.md links, deleted; a .png named by a document that is not in results/figures; a figure
    that is not a PNG: each reported (and nothing else: the copy's other links all resolve)."""
    copy = copy_results(tmp_path / "results", figures=True)
    figure = sorted((copy / "figures").glob("*.png"))[0]
    figure.unlink()
    (copy / "figures" / "06_reliability_pneumonia.png").write_bytes(b"not a png")
    doc = tmp_path / "doc.md"
    doc.write_text("![a](../results/figures/99_no_such_figure.png)\n")
    problems, _ = figure_problems(copy, [doc])
    assert any(figure.name in p and "does not exist" in p for p in problems)
    assert any("06_reliability_pneumonia.png" in p and "not a PNG" in p for p in problems)
    assert any("99_no_such_figure.png" in p for p in problems)
    assert len(problems) == 3


def test_planted_foreign_commit_is_reported(tmp_path):
    """A recorded commit on a branch HEAD does not contain, and a commit id that is in no history: both reported,
    the ancestor is not (a throwaway repository, so the checkout's .git is untouched)."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}

    def run(*args):
        cmd = ["git", "-c", "commit.gpgsign=false", "-C", str(repo), *args]
        r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    run("init", "-q", "-b", "main")
    run("commit", "-q", "--allow-empty", "-m", "base")
    base = run("rev-parse", "HEAD")
    run("checkout", "-q", "-b", "side")
    run("commit", "-q", "--allow-empty", "-m", "side")
    side = run("rev-parse", "HEAD")
    run("checkout", "-q", "main")
    prov = {"git": {"commit": base}, "notebooks": [{"git": {"commit": side, "commit_at_start": "0" * 40}}]}
    res = tmp_path / "results"
    res.mkdir()
    (res / "provenance.json").write_text(json.dumps(prov))
    commits = recorded_commits(res)
    assert set(commits) == {base, side, "0" * 40}
    problems = commit_problems(commits, repo)
    assert len(problems) == 2
    assert any(p.startswith(side) and "not an ancestor" in p for p in problems)
    assert any(p.startswith("0" * 40) and "not in this repository" in p for p in problems)
