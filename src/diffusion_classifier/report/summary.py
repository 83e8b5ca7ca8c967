"""Write results/SUMMARY.md (the four claims on one page, `page`, with the verdicts of `claims`), results/DETAILS.md
(every other generated table and sentence, `details`) and results/figures/claims.png from results/tables/*.csv and
provenance.json (nothing in them is typed by hand).

python -m diffusion_classifier.report.summary
"""

from pathlib import Path

from ..core.paths import results_dir
from . import claims
from .claims import AUC_MARGIN, CLAIMS, NOT_TESTABLE, VOCABULARY, _ci, _read, _rows, claims_table
from .details import _headline_n, _provenance, _provenance_line, details

NAMES = {1: "competitive", 2: "the vote beats the mean", 3: "explains itself", 4: "usable uncertainty"}


def _claim_paragraphs(rows: list[dict], tables: Path) -> list[str]:
    by = {(r["claim"], r["task"]): r for r in rows}
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    out = []
    for claim, statement in CLAIMS.items():
        out += [f"### Claim {claim}: {statement}", ""]
        for task in tasks:
            r = by[(claim, task)]
            line = f"- **{task}** — {r['verdict']}: {r['metric']} {r['key']}"
            if claim == 1 and r["verdict"] != NOT_TESTABLE:
                line += f" (non-inferiority at a margin of {AUC_MARGIN}[^margin]; agrees in {r['agreement']})"
                lo, hi = r["figure_rows"][0][2:4]
                line += (
                    f"; the AUC is significantly lower (CI below 0) in {r['significantly_lower_in']}"
                    if r.get("significantly_lower_in")
                    else ""
                )
                line += "; this run's CI " + (
                    "excludes 0: significantly " + ("lower" if hi < 0 else "higher")
                    if hi < 0 or lo > 0
                    else "contains 0"
                )
            elif claim == 2:
                line += f" (agrees in {r['agreement']})"
                for n, look, verdict, key in r.get("later_looks", []):
                    line += f"; at N = {n} (look {look}, exploratory) {verdict}: {key}"
            elif claim == 3:
                line += f" ({r['agreement']}[^judges])"
            elif claim == 4 and r.get("versus_resnet"):
                line += f"; paired against the ResNet-18's max softmax {r['versus_resnet']} ({r['agreement']})"
            out.append(line + ".")
        if claim == 3:
            e = _read(tables, "explainability")
            retest = _rows(e, section="test_retest")
            if len(retest):
                rhos = ", ".join(f"{x.task} {x.value:.2f}" for x in retest.itertuples())
                out.append(
                    f"- The maps' own test–retest Spearman ρ (two disjoint sets of draws) is {rhos}; the cascading "
                    "randomisation check passes at ρ < 0.5, a bar at or above that ceiling, so it cannot fail as "
                    "designed and is not counted. Guided counterfactuals' flip rates are not counted either: no "
                    "proximity to the input is measured, so a flip cannot tell an edit from a regenerated image."
                )
        out.append("")
    return out


def _beyond(tables: Path) -> list[str]:
    out = []
    shift = _rows(_read(tables, "shift_test"), measure="drop_difference")
    for x in shift.itertuples():
        out.append(
            f"- **Source shift** (skin, notebook 08; {x.target_source} test images): AUC drop when trained on "
            f"{x.other_source}, diffusion − ResNet {_ci(x.value, x.ci_low, x.ci_high)}."
        )
    for x in _rows(_read(tables, "backbones_paired"), a="diffusion-unet", b="diffusion-dit").itertuples():
        diff = _ci(x.auc_diff, x.auc_diff_ci_low, x.auc_diff_ci_high)
        out.append(f"- **DiT** (pneumonia, notebook 10): AUC, UNet − DiT {diff}.")
    stop = _read(tables, "early_stopping_large_n")
    if stop is not None:
        fresh = stop[stop.draws.str.startswith("fresh")]
        parts = [
            f"N = {x.n_draws}: {x.fraction_of_full:.1%} of the evaluations, {x.changed_vs_full_vote} of "
            f"{x.n_images} votes changed"
            for x in fresh.itertuples()
        ]
        out.append(
            "- **Early stopping** (pneumonia, notebook 09; a draw-noise replication on fresh draws of the "
            "same images and model): " + "; ".join(parts) + "."
        )
    u = _rows(_read(tables, "uncertainty"), model="diffusion-unet", score="vote_fraction")
    for x in u.itertuples():
        out.append(
            f"- **Calibration** ({x.task}, notebook 06): vote-share ECE {x.ece:.3f}, after temperature "
            f"scaling on validation {x.ece_calibrated:.3f}[^ece]."
        )
    return out


FOOTNOTES = [
    f"[^margin]: The {AUC_MARGIN} AUC margin was chosen by us after the first committed results had been seen; it is "
    "not taken from a cited source.",
    "[^judges]: Only other-model judges count; a judge is used only where deleting everything lowers its score (its "
    "clean − all-fill gap CI excludes 0). A map judged by its own model is close to circular, and a judge favours "
    "the maps of its own model, so other-model deletion measures agreement between models as much as faithfulness.",
    "[^ece]: Percentile-bootstrap CIs of ECE are biased upwards (DETAILS.md has them).",
]


def page(results: Path, tasks: list[str], n_draws: dict[str, int], provenance: str) -> str:
    """SUMMARY.md: the four claims first, then one paragraph per claim, what the paper did not test, provenance."""
    rows = claims_table(results, tasks, n_draws)
    head = [
        "# Four claims, four answers",
        "",
        "Favero et al. (MIDL 2025) make four claims about diffusion classifiers. Each row gives our verdict on one "
        "task, in one vocabulary (" + " · ".join(VOCABULARY) + "; rules: `diffusion_classifier/claims.py`), "
        "the key paired number with its 95% CI, how many replicate runs reach the same verdict, and where the "
        "evidence is. Every word and number here is generated from `results/tables/`; everything else generated is "
        "in [DETAILS.md](DETAILS.md).",
        "",
        "| claim | task | verdict | key number (95% CI) | same verdict in | evidence |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        head.append(
            f"| {r['claim']} {NAMES[r['claim']]} | {r['task']} | **{r['verdict']}** | {r['metric']}: {r['key']} | "
            f"{r['agreement']} | {r['evidence']} |"
        )
    head += ["", "![The four claims: headline paired differences with 95% CIs](figures/claims.png)", ""]
    body = ["## The claims, one paragraph each", ""] + _claim_paragraphs(rows, results / "tables")
    body += ["## Beyond the paper", ""] + _beyond(results / "tables") + [""]
    body += ["## Provenance", "", provenance, "", *FOOTNOTES, ""]
    return "\n".join(head + body)


def build() -> str:
    """SUMMARY.md: the four claims first (page)."""
    prov = _provenance()
    tasks = [t for t in prov.get("tasks", []) if t in prov.get("settings", {})]
    return page(results_dir(), tasks, _headline_n(prov, tasks), _provenance_line(prov))


def main():
    res = results_dir()
    prov = _provenance()
    tasks = [t for t in prov.get("tasks", []) if t in prov.get("settings", {})]
    rows = claims.claims_table(res, tasks, _headline_n(prov, tasks))
    claims.forest_figure(rows, tasks, res / "figures" / "claims.png")
    (res / "SUMMARY.md").write_text(build())
    (res / "DETAILS.md").write_text(details())


if __name__ == "__main__":
    main()
