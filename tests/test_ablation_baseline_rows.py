"""`classification.baseline_rows` end to end on planted predictions (claim 1: the diffusion classifier against the
ResNet-18, overall and per source, paired).

Three sources with a known winner each, interleaved in the image order so that a per-source split that reads the
wrong images shows:
    isic2017  the diffusion classifier is right on all 8 images, the ResNet on 5       (diffusion better)
    isic2018  the ResNet is right on all 8 images, the diffusion classifier on 4       (diffusion worse)
    isic2019  both are right on the same 2 of 4 images, with rank-identical scores     (equal)
Every expected number below is derived by hand from these planted predictions and scores (the overall AUCs, which
mix the sources, from scikit-learn as an independent oracle).
"""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from diffusion_classifier.analyses import classification

K = 3  # draws per image; every draw agrees, so the vote and the mean rule decide alike
N_BOOT = 200

# per source: labels, the diffusion classifier's planted score s (= mean error of class 0 - of class 1, so it
# predicts class 1 where s > 0) and the ResNet's planted probability of class 1
PLANTED = {
    "isic2017": (
        [0, 0, 0, 0, 1, 1, 1, 1],
        [-0.4, -0.3, -0.2, -0.1, 0.1, 0.2, 0.3, 0.4],
        [0.6, 0.2, 0.3, 0.4, 0.45, 0.35, 0.8, 0.9],
    ),
    "isic2018": (
        [0, 0, 0, 0, 1, 1, 1, 1],
        [0.2, 0.1, -0.3, -0.4, -0.2, -0.1, 0.3, 0.4],
        [0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9],
    ),
    "isic2019": ([0, 0, 1, 1], [-0.3, 0.2, 0.3, -0.2], [0.2, 0.7, 0.8, 0.3]),
}

# hand-derived, diffusion (a) - ResNet (b), per source
EXPECTED = {
    # a: all 8 right, AUC 1, F1 1. b: right on 5 (wrong on images 0, 4, 5): sensitivity 2/4, specificity 3/4,
    # AUC 13/16 (positives {.45, .35, .8, .9} above negatives {.6, .2, .3, .4} in 3 + 2 + 4 + 4 pairs),
    # F1 = 2*2 / (2*2 + 1 + 2) = 4/7
    "isic2017": {
        "accuracy_diff": 3 / 8,
        "balanced_accuracy_diff": 1 - 0.625,
        "auc_diff": 1 - 13 / 16,
        "f1_diff": 1 - 4 / 7,
        "only_a_right": 3,
        "only_b_right": 0,
        "mcnemar_p": 0.25,  # two-sided exact binomial, 3 of 3 discordant: 2 * 0.5**3
    },
    # a: right on 4 (wrong on images 0, 1, 4, 5): sensitivity = specificity = 1/2, AUC 12/16, F1 2*2/(4+2+2) = 1/2.
    # b: all 8 right.
    "isic2018": {
        "accuracy_diff": -0.5,
        "balanced_accuracy_diff": -0.5,
        "auc_diff": 12 / 16 - 1,
        "f1_diff": 0.5 - 1,
        "only_a_right": 0,
        "only_b_right": 4,
        "mcnemar_p": 0.125,  # 2 * 0.5**4
    },
    # the same predictions and the same ranking: every difference is exactly 0, in every resample too
    "isic2019": {
        "accuracy_diff": 0.0,
        "balanced_accuracy_diff": 0.0,
        "auc_diff": 0.0,
        "f1_diff": 0.0,
        "only_a_right": 0,
        "only_b_right": 0,
        "mcnemar_p": 1.0,
    },
}
# per model and source: (accuracy, AUC) hand-derived from the table above
MODEL_VALUES = {
    ("isic2017", "resnet18"): (5 / 8, 13 / 16),
    ("isic2017", "diffusion-unet"): (1.0, 1.0),
    ("isic2018", "resnet18"): (1.0, 1.0),
    ("isic2018", "diffusion-unet"): (0.5, 0.75),
    ("isic2019", "resnet18"): (0.5, 0.75),
    ("isic2019", "diffusion-unet"): (0.5, 0.75),
}


def planted():
    """(y, proba, E, sources, s) with the sources interleaved by a fixed permutation."""
    y, s, p1, src = [], [], [], []
    for source, (ys, ss, ps) in PLANTED.items():
        y += ys
        s += ss
        p1 += ps
        src += [source] * len(ys)
    order = np.random.default_rng(3).permutation(len(y))
    y, s, p1, src = np.array(y)[order], np.array(s)[order], np.array(p1)[order], np.array(src)[order]
    E = np.empty((len(y), 2, K))
    E[:, 0, :] = (1 + s / 2)[:, None]  # mean error of class 0
    E[:, 1, :] = (1 - s / 2)[:, None]  # mean error of class 1: class 1 wins where s > 0
    proba = np.stack([1 - p1, p1], 1)
    return y, proba, E, src, s


@pytest.mark.parametrize("rule", ["vote", "mean"])
def test_paired_rows_overall_and_per_source_are_the_hand_derived_ones(rule):
    """Catches: a and b swapped in the paired comparison (every sign flips); a per-source split that reads other
    images than its source's (e.g. `sources != s`); the ResNet's score taken from the wrong column; McNemar's
    counts swapped or taken over all images; per-source rows missing or mislabelled."""
    y, proba, E, sources, s = planted()
    rows, comparisons = classification.baseline_rows("melanoma_balanced", y, proba, E, rule, sources, N_BOOT, 0)

    # the rows: the ResNet overall, then per source (sorted) the ResNet and the diffusion classifier
    assert [(r["source"], r["model"]) for r in rows] == [("all", "resnet18")] + [
        (src, m) for src in sorted(PLANTED) for m in ("resnet18", "diffusion-unet")
    ]
    for r in rows:
        n = len(PLANTED[r["source"]][0]) if r["source"] != "all" else len(y)
        assert r["n_images"] == n and r["majority_rate"] == 0.5
        if r["source"] == "all":
            assert r["accuracy"] == pytest.approx(15 / 20)  # the ResNet is right on 5 + 8 + 2 images
            assert r["auc"] == pytest.approx(roc_auc_score(y, proba[:, 1]))
            continue
        acc, auc = MODEL_VALUES[(r["source"], r["model"])]
        assert r["accuracy"] == pytest.approx(acc) and r["auc"] == pytest.approx(auc), (r["source"], r["model"])
        if r["model"] == "diffusion-unet":
            assert r["rule"] == rule and r["n_draws"] == K and r["t_range"] == classification.FULL_RANGE
            assert r["unet_evals_per_image"] == 2 * K
        else:
            assert r["rule"] == "softmax" and r["n_draws"] == 0 and r["unet_evals_per_image"] == 0

    by_source = {c["source"]: c for c in comparisons}
    assert list(by_source) == ["all", *sorted(PLANTED)]
    for source, want in EXPECTED.items():
        c = by_source[source]
        assert c["n_images"] == len(PLANTED[source][0])
        assert c["a"] == f"diffusion-unet {rule} N={K}" and c["b"] == "resnet18"
        for key, value in want.items():
            assert c[key] == pytest.approx(value, abs=1e-12), (source, key)
        diff_row = next(r for r in rows if r["source"] == source and r["model"] == "diffusion-unet")
        base_row = next(r for r in rows if r["source"] == source and r["model"] == "resnet18")
        assert c["a_auc_ci_low"] == diff_row["auc_ci_low"] and c["b_auc_ci_low"] == base_row["auc_ci_low"]

    # the signs hold in every resample where one model is right on every image of its source
    assert by_source["isic2017"]["accuracy_diff_ci_low"] >= 0 and by_source["isic2017"]["accuracy_diff_ci_high"] > 0
    assert by_source["isic2018"]["accuracy_diff_ci_high"] <= 0 and by_source["isic2018"]["accuracy_diff_ci_low"] < 0
    for m in ("accuracy", "balanced_accuracy", "auc", "f1"):
        assert by_source["isic2019"][f"{m}_diff_ci_low"] == by_source["isic2019"][f"{m}_diff_ci_high"] == 0.0

    # overall: 14 right against 15, discordant 3 (only diffusion) and 4 (only ResNet): p = 1 (7 draws, 3 heads)
    overall = by_source["all"]
    assert overall["n_images"] == len(y) == 20
    assert overall["accuracy_diff"] == pytest.approx(14 / 20 - 15 / 20)
    assert (overall["only_a_right"], overall["only_b_right"], overall["mcnemar_p"]) == (3, 4, 1.0)
    assert overall["auc_diff"] == pytest.approx(roc_auc_score(y, s) - roc_auc_score(y, proba[:, 1]))


def test_one_source_gives_the_overall_comparison_only():
    """Catches: per-source rows emitted for a task with a single source (pneumonia), or a diffusion row added to the
    overall rows (they come from ablation_table)."""
    y, proba, E, _, _ = planted()
    for sources in (None, np.array(["pneumoniamnist"] * len(y))):
        rows, comparisons = classification.baseline_rows("pneumonia", y, proba, E, "vote", sources, 50, 0)
        assert [(r["source"], r["model"]) for r in rows] == [("all", "resnet18")]
        assert [c["source"] for c in comparisons] == ["all"]
        assert (comparisons[0]["only_a_right"], comparisons[0]["only_b_right"]) == (3, 4)
