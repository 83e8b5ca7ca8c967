"""The explainability study of one task (notebook 05): maps for a seeded subset of test images, their
faithfulness under two independent judges, the sanity checks, and the counterfactuals' flip rates, as one
long table (`explainability.csv`: task, section, method, judge, fill, mode, measure, value, CI, n_images).

Sections
    faithfulness    normalised deletion / insertion AUC per (judge, fill, method), and the paired per-image
                    differences to the random map and to the rival map (Grad-CAM for the diffusion map, and back)
    randomisation   cascading randomisation: Spearman of |map| with the trained model's, after each stage
    test_retest     Spearman of two diffusion maps from disjoint draws
    counterfactual  flip and keep rates per target class, per classifier
"""

from __future__ import annotations

import numpy as np
import torch

from ..classifier import explain
from ..classifier.engine import ScoreSettings, ScoringEngine
from ..core.seeds import derive
from ..evaluation import faithfulness
from ..models.denoiser import Denoiser
from ..models.resnet import predict_proba
from ..models.stages import resnet_stages

DIFFUSION_MAP, GRADCAM, RANDOM = "diffusion error-difference", "Grad-CAM (ResNet-18)", "random"


def _ci_row(values: np.ndarray, n_boot: int, seed: int) -> dict:
    """Mean and CI over the finite values; n_images counts them (a map that became constant has no rank
    correlation, and is counted out rather than silently dropped)."""
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return {"value": np.nan, "ci_low": np.nan, "ci_high": np.nan, "n_images": 0}
    return {**faithfulness.paired_summary(finite, None, n_boot, seed), "n_images": len(finite)}


def evaluate(cfg: dict, model: Denoiser, resnet: torch.nn.Module, x: torch.Tensor, seed: int) -> tuple:
    """All sections for images x (a seeded subset of test). Returns (rows, mean curves, extras for figures)."""
    ex = cfg["explain"]
    n_classes, ids = model.n_classes, np.arange(len(x))
    n_boot = ex["n_bootstrap"]
    patch = x.shape[-1] // ex["patches_per_side"]
    map_engine = ScoringEngine(model, ScoreSettings.from_profile(cfg, n_draws=2 * ex["map_draws"]))
    judge_engine = ScoringEngine(
        model, ScoreSettings.from_profile(cfg, n_draws=ex["judge_draws"], seed=derive(seed, "judge"))
    )
    # the maps come from the classification's seed (draws 0..map_draws-1 in the map's time range); the ids are the
    # subset's positions, so they are not the images' classification draws but are fixed per image
    class_maps = explain.class_error_maps(map_engine, x, ids, n_classes, ex["map_draws"], ex["t_min"], ex["t_max"])
    judges = [faithfulness.diffusion_judge(judge_engine, x, n_classes), faithfulness.resnet_judge(resnet, x)]
    random_map = explain.random_maps((len(x), *x.shape[-2:]), derive(seed, "random map"))

    def maps_for(judge):
        return {
            DIFFUSION_MAP: explain.difference_maps(class_maps, judge.target),
            GRADCAM: explain.gradcam_maps(resnet, x, judge.target),
            RANDOM: random_map,
        }

    faith, curves = faithfulness.faithfulness_rows(
        judges,
        maps_for,
        x,
        ex["fills"],
        ex["steps"],
        patch,
        n_boot,
        seed,
        reference=RANDOM,
        rivals={DIFFUSION_MAP: GRADCAM, GRADCAM: DIFFUSION_MAP},
        own_judge={DIFFUSION_MAP: "diffusion", GRADCAM: "resnet18"},
    )
    rows = [{"section": "faithfulness", **r} for r in faith]

    # sanity checks: diffusion maps for the diffusion judge's targets, Grad-CAM for the ResNet's
    target_d, target_r = judges[0].target, judges[1].target
    trained_d = explain.difference_maps(class_maps, target_d)

    def diffusion_map(denoiser):
        e = ScoringEngine(denoiser, map_engine.settings)
        return explain.difference_maps(
            explain.class_error_maps(e, x, ids, n_classes, ex["map_draws"], ex["t_min"], ex["t_max"]), target_d
        )

    cascades = {
        DIFFUSION_MAP: faithfulness.cascading_randomisation(
            model, lambda d: d.stages(), diffusion_map, trained_d, derive(seed, "cascade")
        ),
        GRADCAM: faithfulness.cascading_randomisation(
            resnet,
            resnet_stages,
            lambda net: explain.gradcam_maps(net, x, target_r),
            explain.gradcam_maps(resnet, x, target_r),
            derive(seed, "cascade"),
        ),
    }
    for method, stages in cascades.items():
        for st in stages:
            rows.append(
                {
                    "section": "randomisation",
                    "method": method,
                    "measure": f"spearman_abs_map_stage_{st['stage']}",
                    "stage_name": st["stage_name"],
                    **_ci_row(st["rho"], n_boot, seed),
                }
            )
    retest = explain.difference_maps(
        explain.class_error_maps(
            map_engine, x, ids, n_classes, ex["map_draws"], ex["t_min"], ex["t_max"], first_draw=ex["map_draws"]
        ),
        target_d,
    )
    rho = faithfulness.spearman_per_image(trained_d, retest)
    rows.append(
        {
            "section": "test_retest",
            "method": DIFFUSION_MAP,
            "measure": "spearman_disjoint_draws",
            **_ci_row(rho, n_boot, seed),
        }
    )

    # counterfactuals (the authors' recipe) and whether they flip each classifier's decision
    n_cf = min(ex["n_counterfactual"], len(x))
    cf = explain.counterfactuals(
        map_engine,
        x[:n_cf],
        ids[:n_cf],
        n_classes,
        ex["counterfactual_t"],
        ex["counterfactual_steps"],
        ex["guidance_w"],
        seed=seed,
    )
    rule = cfg["decision"]["rule"]
    for name, predict in (
        ("diffusion", lambda im: faithfulness.predict_with(judge_engine, im, n_classes, rule)),
        ("resnet18", lambda im: predict_proba(resnet, im).argmax(1)),
    ):
        original = predict(x[:n_cf])
        towards = np.stack([predict(torch.from_numpy(cf["guided"][:, c])) for c in range(n_classes)], 1)
        for fr in faithfulness.flip_rates(original, towards, n_classes):
            target = model.class_names[fr["target"]]
            for measure in ("flip_rate", "keep_rate"):
                rows.append(
                    {
                        "section": "counterfactual",
                        "method": "guided counterfactual",
                        "judge": name,
                        "judge_relation": "own model" if name == "diffusion" else "other model",
                        "measure": f"{measure}_to_{target}",
                        "value": fr[measure],
                        "n_images": fr["n_flip" if measure == "flip_rate" else "n_keep"],
                    }
                )
    extras = {"cascades": cascades, "test_retest": rho}
    return rows, curves, extras


# ----------------------------------------------------------------------------- generated verdicts

# A map "depends on the model" when, with every stage re-initialised, its rank correlation with the trained
# model's map has a CI upper bound below this (an input-only map such as an edge detector stays near 1).
RANDOMISATION_MAX_RHO = 0.5


def compare_phrase(row, mode: str) -> str:
    """Direction of a paired AUC difference (method - other): deletion lower and insertion higher = more faithful."""
    better = row.ci_high < 0 if mode == "deletion" else row.ci_low > 0
    worse = row.ci_low > 0 if mode == "deletion" else row.ci_high < 0
    verdict = "more faithful than" if better else "less faithful than" if worse else "not distinguishable from"
    return (
        f"{verdict} {row.versus} ({mode} AUC difference {row.value:+.3f}, "
        f"95% CI {row.ci_low:+.3f} to {row.ci_high:+.3f})"
    )


def verdicts(table, task: str) -> list[str]:
    """Sentences generated from one task's rows of explainability.csv."""
    t = table[table.task == task]
    n_distinct = len(t[t.measure == "auc_minus_random"]) + len(t[t.measure == "auc_minus_rival"]) // 2
    lines = [
        f"**{task}**: {n_distinct} distinct paired faithfulness comparisons, each at 95% without correction for "
        f"their number. A map judged by its own model (marked) is close to circular — the diffusion map is a "
        f"per-pixel split of the diffusion judge's own score — so only other-model judgements are independent "
        f"evidence."
    ]
    gaps = t[t.measure == "score_gap"].set_index(["judge", "fill"])
    faith = t[(t.section == "faithfulness") & (t.measure == "auc_minus_random")]
    for (judge, fill), g in faith.groupby(["judge", "fill"], sort=False):
        gap = gaps.loc[(judge, fill)]
        head = (
            f"**{task}, {judge} judge, {fill} fill** (n = {int(g.n_images.iloc[0])}; clean − all-fill score gap "
            f"{gap.value:.3g}, 95% CI {gap.ci_low:.3g} to {gap.ci_high:.3g})"
        )
        if not bool(gap.interpretable):
            lines.append(
                head + ": NOT INTERPRETABLE — the gap between the clean and the all-fill image changes sign "
                "across images (its CI contains 0): for many images the judge scores the filled image as "
                "high as the clean one, so deletion and insertion curves do not measure evidence."
            )
            continue
        parts = [
            f"{r.method}{' (own model)' if r.judge_relation == 'own model' else ''}: {compare_phrase(r, r.mode)}"
            for r in g.itertuples()
        ]
        lines.append(head + ": " + "; ".join(parts) + ".")
    rival = t[
        (t.section == "faithfulness")
        & (t.measure == "auc_minus_rival")
        & (t.method == DIFFUSION_MAP)
        & t.interpretable.astype(bool)
    ]
    for r in rival.itertuples():
        own = r.judge_relation == "own model"
        judge_is = "the diffusion model itself" if own else "the ResNet, Grad-CAM's own model"
        lines.append(
            f"**{task}, {r.judge} judge ({judge_is}), "
            f"{r.fill} fill**: the diffusion map is {compare_phrase(r, r.mode)}."
        )
    for method, g in t[t.section == "randomisation"].groupby("method", sort=False):
        first, last = g.iloc[0], g.iloc[-1]
        passes = last.ci_high < RANDOMISATION_MAX_RHO
        lines.append(
            f"**{task}, cascading randomisation of the {method}**: Spearman of |map| with the trained model's "
            f"{first.value:.2f} after re-initialising `{first.stage_name}` (n = {int(first.n_images)} maps not "
            f"constant), {last.value:.2f} (95% CI {last.ci_low:.2f} to {last.ci_high:.2f}, n = {int(last.n_images)}) "
            f"with every stage re-initialised: "
            + (
                "the maps depend on the learned weights."
                if passes
                else f"not shown to be below {RANDOMISATION_MAX_RHO}: "
                "the maps may reflect the input more than the model."
            )
        )
    for r in t[t.section == "test_retest"].itertuples():
        lines.append(
            f"**{task}, test-retest of the diffusion map** (two disjoint sets of draws): Spearman {r.value:.2f} "
            f"(95% CI {r.ci_low:.2f} to {r.ci_high:.2f})"
            + (": maps from this few draws are mostly draw noise." if r.value < 0.3 else ".")
        )
    cf = t[t.section == "counterfactual"]
    for judge in ("resnet18", "diffusion"):
        g = cf[cf.judge == judge]
        if g.empty:
            continue
        rates = [f"{r.measure.replace('_', ' ')} {r.value:.2f} (n = {int(r.n_images)})" for r in g.itertuples()]
        lines.append(
            f"**{task}, guided counterfactuals judged by the {judge} classifier**"
            + (" (the model that made them: partly circular)" if judge == "diffusion" else " (an independent model)")
            + ": "
            + ", ".join(rates)
            + ". A flip rate means something only beside the keep rate towards the same class (a model that"
            " always answers one class flips everything towards it); at t = 0.5 with w = 4.5 a counterfactual"
            " largely regenerates the image as the target class, so a flip shows the guidance works, not a"
            " minimal edit."
        )
    return lines
