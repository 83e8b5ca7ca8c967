"""The paper's four claims, one verdict per claim and task in one fixed vocabulary (SUMMARY.md's page: `summary.page`).

Every verdict word in SUMMARY.md comes from this module. The rules, fixed before they were applied to these tables:

superiority      "a beats b": supported when the paired CI of a - b excludes 0 upwards AND McNemar's p < 0.05 (where
                 the comparison has one) at the pre-specified N; not supported when the CI lies below 0; otherwise
                 inconclusive. A later look (another N) can at most be nominal (exploratory, look k).
non_inferiority  "a is not worse than b by more than the margin": supported when the CI's lower bound is above
                 -margin, not supported when its upper bound is below -margin, otherwise inconclusive.
combined         several comparisons of one claim: supported / not supported only when all agree, else inconclusive.
claims_table     one row per claim and task, read from results/tables (and results/reruns/*/tables)
forest_figure    the headline paired differences with their CIs and replicate marks
"""

from pathlib import Path

import numpy as np
import pandas as pd

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, NOT_TESTABLE = "supported", "not supported", "inconclusive", "not testable"
VOCABULARY = (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, NOT_TESTABLE, "nominal (exploratory, look k)")
ALPHA = 0.05
# The non-inferiority margin on AUC for claim 1. It was set after the first committed results had been seen (not
# before the study): SUMMARY says so wherever it is used.
AUC_MARGIN = 0.05
CLAIMS = {
    1: "diffusion classifiers are competitive with a discriminative classifier",
    2: "a majority vote over draws beats averaging the errors",
    3: "the per-class errors explain the decision",
    4: "the spread of the votes is a usable uncertainty",
}


def nominal(look: int) -> str:
    return f"nominal (exploratory, look {look})"


def superiority(ci_low: float, ci_high: float, p: float | None = None, look: int = 1) -> str:
    """Verdict on "a beats b" from the paired CI of a - b (and McNemar's p where there is one); look 1 is the
    pre-specified N, later looks are exploratory."""
    if ci_high < 0:
        return NOT_SUPPORTED
    shown = ci_low > 0 and (p is None or p < ALPHA)
    if not shown:
        return INCONCLUSIVE
    return SUPPORTED if look == 1 else nominal(look)


def non_inferiority(ci_low: float, ci_high: float, margin: float) -> str:
    if ci_low > -margin:
        return SUPPORTED
    return NOT_SUPPORTED if ci_high < -margin else INCONCLUSIVE


def combined(verdicts: list[str]) -> str:
    """One verdict for several comparisons of one claim: unanimous, or inconclusive; none testable: not testable."""
    testable = [v for v in verdicts if v != NOT_TESTABLE]
    if not testable:
        return NOT_TESTABLE
    return testable[0] if len(set(testable)) == 1 else INCONCLUSIVE


def _ci(v, lo, hi) -> str:
    return f"{v:+.3f} ({lo:+.3f} to {hi:+.3f})"


def _read(folder: Path, name: str) -> pd.DataFrame | None:
    path = folder / f"{name}.csv"
    return pd.read_csv(path) if path.exists() else None


def _agreement(verdicts: list[str], verdict: str, what: str) -> str:
    """'k of n <what>' agree with the headline verdict ('' when there are none)."""
    return f"{sum(v == verdict for v in verdicts)} of {len(verdicts)} {what}" if verdicts else ""


ONE_RUN = {"training seeds": "one training seed", "draw replicates": "one draw sequence"}


def _rows(df: pd.DataFrame | None, **match) -> pd.DataFrame:
    if df is None or not set(match) <= set(df.columns):
        return pd.DataFrame()
    keep = np.ones(len(df), bool)
    for column, value in match.items():
        keep &= (df[column] == value).to_numpy()
    return df[keep]


def claim1(tables: Path, reruns: list[Path], task: str, n_draws: int) -> dict:
    """Non-inferiority of the diffusion classifier's AUC to the ResNet-18's, paired on the test images."""
    r = _rows(_read(tables, "diffusion_vs_baseline"), task=task, source="all").iloc[0]
    row = {"metric": "AUC, diffusion − ResNet-18", "key": _ci(r.auc_diff, r.auc_diff_ci_low, r.auc_diff_ci_high)}
    row["figure_rows"] = [("1 · AUC, diffusion − ResNet", r.auc_diff, r.auc_diff_ci_low, r.auc_diff_ci_high)]
    row["figure_rows"] += [
        (
            "1 · balanced accuracy, diffusion − ResNet",
            r.balanced_accuracy_diff,
            r.balanced_accuracy_diff_ci_low,
            r.balanced_accuracy_diff_ci_high,
        )
    ]
    if min(r.a_auc_ci_low, r.b_auc_ci_low) <= 0.5:
        return row | {"verdict": NOT_TESTABLE, "agreement": "a model's AUC CI contains 0.5"}
    row["verdict"] = verdict = non_inferiority(r.auc_diff_ci_low, r.auc_diff_ci_high, AUC_MARGIN)
    seeds = _rows(_read(tables, "seed_runs"), task=task, n_draws=n_draws)
    agree, marks, lower = [], {}, []
    for source, label in (("training", "training seeds"), ("draws", "draw replicates")):
        g = _rows(seeds, variance_source=source)
        if len(g):
            lower.append(f"{int((g.minus_resnet_auc_ci_high < 0).sum())} of {len(g)} {label}")
        found = [
            non_inferiority(lo, hi, AUC_MARGIN)
            for lo, hi in zip(g.get("minus_resnet_auc_ci_low", []), g.get("minus_resnet_auc_ci_high", []))
        ]
        agree.append(_agreement(found, verdict, label) or ONE_RUN[label])
        marks[label] = list(g.get("minus_resnet_auc", []))
    found, rerun_lower = [], []
    for folder in reruns:
        for x in _rows(_read(folder, "diffusion_vs_baseline"), task=task, source="all").itertuples():
            found.append(non_inferiority(x.auc_diff_ci_low, x.auc_diff_ci_high, AUC_MARGIN))
            rerun_lower.append(x.auc_diff_ci_high < 0)
            marks.setdefault("precision re-runs", []).append(x.auc_diff)
    agree.append(_agreement(found, verdict, "precision re-runs"))
    if rerun_lower:
        lower.append(f"{sum(rerun_lower)} of {len(rerun_lower)} precision re-runs")
    row["significantly_lower_in"] = "; ".join(lower)
    row["marks"] = {row["figure_rows"][0][0]: marks}
    return row | {"agreement": "; ".join(a for a in agree if a) or "one run"}


def claim2(tables: Path, reruns: list[Path], task: str, n_draws: int) -> dict:
    """Vote − mean accuracy (the paper's metric) at the pre-specified N, paired bootstrap CI and McNemar."""
    r = _rows(_read(tables, "ablation_paired"), task=task, source="all", n_draws=n_draws).iloc[0]
    verdict = superiority(r.accuracy_diff_ci_low, r.accuracy_diff_ci_high, r.mcnemar_p)
    label = f"2 · accuracy, vote − mean (N = {n_draws})"
    row = {
        "metric": f"accuracy, vote − mean, N = {n_draws}",
        "key": _ci(r.accuracy_diff, r.accuracy_diff_ci_low, r.accuracy_diff_ci_high)
        + f", McNemar p = {r.mcnemar_p:.3f}",
        "verdict": verdict,
        "figure_rows": [(label, r.accuracy_diff, r.accuracy_diff_ci_low, r.accuracy_diff_ci_high)],
    }
    seeds = _rows(_read(tables, "seed_runs"), task=task, n_draws=n_draws)
    agree, marks = [], {}
    for source, what in (("training", "training seeds"), ("draws", "draw replicates")):
        g = _rows(seeds, variance_source=source)
        found = [
            superiority(lo, hi, p)
            for lo, hi, p in zip(
                g.get("vote_minus_mean_accuracy_ci_low", []),
                g.get("vote_minus_mean_accuracy_ci_high", []),
                g.get("vote_minus_mean_mcnemar_p", []),
            )
        ]
        agree.append(_agreement(found, verdict, what) or ONE_RUN[what])
        marks[what] = list(g.get("vote_minus_mean_accuracy", []))
    found = []
    for folder in reruns:
        for x in _rows(_read(folder, "ablation_paired"), task=task, source="all", n_draws=n_draws).itertuples():
            found.append(superiority(x.accuracy_diff_ci_low, x.accuracy_diff_ci_high, x.mcnemar_p))
            marks.setdefault("precision re-runs", []).append(x.accuracy_diff)
    agree.append(_agreement(found, verdict, "precision re-runs"))
    later = _rows(_read(tables, "ablation_paired_large_n"), task=task, source="all")
    later = later[later.n_draws > n_draws].sort_values("n_draws") if len(later) else later
    row["later_looks"] = [
        (
            int(x.n_draws),
            look,
            superiority(x.accuracy_diff_ci_low, x.accuracy_diff_ci_high, x.mcnemar_p, look),
            _ci(x.accuracy_diff, x.accuracy_diff_ci_low, x.accuracy_diff_ci_high) + f", McNemar p = {x.mcnemar_p:.3f}",
        )
        for look, x in enumerate(later.itertuples(), start=2)
    ]
    row["marks"] = {label: marks}
    return row | {"agreement": "; ".join(a for a in agree if a) or "one run"}


def claim3(tables: Path, task: str) -> dict:
    """Deletion of the diffusion map's pixels against random pixels, judged by another model (the ResNet-18):
    random − map deletion AUC > 0 means the map finds evidence faster than chance. Own-model judgements are close
    to circular and do not enter the verdict."""
    e = _rows(_read(tables, "explainability"), task=task, section="faithfulness", measure="auc_minus_random")
    e = e[(e["mode"] == "deletion") & (e.method == "diffusion error-difference")]
    found, keys, fig = [], [], []
    for r in e.itertuples():
        own = r.judge_relation == "own model"
        label = f"3 · deletion AUC, random − map ({r.judge} judge{' = own model' if own else ''}, {r.fill} fill)"
        testable = str(r.interpretable) == "True"
        fig.append((label, -r.value, -r.ci_high, -r.ci_low) + (() if testable else (NOT_TESTABLE,)))
        if own:
            continue
        v = superiority(-r.ci_high, -r.ci_low) if testable else NOT_TESTABLE
        found.append(v)
        keys.append(f"{r.fill}: " + (_ci(-r.value, -r.ci_high, -r.ci_low) if testable else NOT_TESTABLE))
    verdict = combined(found)
    return {
        "metric": "deletion AUC, random − diffusion map (ResNet-18 judge)",
        "key": "; ".join(keys),
        "verdict": verdict,
        "agreement": f"map better than random in {sum(v == SUPPORTED for v in found)} of {len(found)} comparisons"
        if verdict != NOT_TESTABLE
        else "no independent judge is interpretable",
        "figure_rows": fig,
    }


def claim4(tables: Path, reruns: list[Path], task: str) -> dict:
    """Vote share as an error detector: its error-AUROC against chance (0.5); beside it, paired, the ResNet-18's max
    softmax."""
    r = _rows(_read(tables, "uncertainty"), task=task, model="diffusion-unet", score="vote_fraction").iloc[0]
    verdict = superiority(r.error_auroc_ci_low - 0.5, r.error_auroc_ci_high - 0.5)
    found = [
        superiority(x.error_auroc_ci_low - 0.5, x.error_auroc_ci_high - 0.5)
        for folder in reruns
        for x in _rows(
            _read(folder, "uncertainty"), task=task, model="diffusion-unet", score="vote_fraction"
        ).itertuples()
    ]
    fig = []
    for x in _rows(_read(tables, "uncertainty_paired"), task=task).itertuples():
        fig.append(
            (
                "4 · error-AUROC, vote share − max softmax",
                x.error_auroc_diff,
                x.error_auroc_diff_ci_low,
                x.error_auroc_diff_ci_high,
            )
        )
    return {
        "metric": "error-AUROC of the vote share (chance = 0.5)",
        "key": f"{r.error_auroc:.3f} ({r.error_auroc_ci_low:.3f} to {r.error_auroc_ci_high:.3f})",
        "verdict": verdict,
        "agreement": _agreement(found, verdict, "precision re-runs") or "one run",
        "figure_rows": fig,
        "versus_resnet": _ci(*fig[0][1:]) if fig else "",
    }


EVIDENCE = {  # (files under results/, notebooks); a file the run did not write is left out
    1: (["tables/diffusion_vs_baseline.csv", "tables/seed_runs.csv"], "notebooks 04, 09"),
    2: (["tables/ablation_paired.csv", "figures/04_voting_vs_draws_{task}.png"], "notebooks 04, 09"),
    3: (["tables/explainability.csv", "figures/05_faithfulness_{task}.png"], "notebook 05"),
    4: (["tables/uncertainty.csv", "figures/06_risk_coverage_{task}.png"], "notebook 06"),
}


def evidence(results: Path, claim: int, task: str) -> str:
    files, notebooks = EVIDENCE[claim]
    links = [f"[{Path(f).name}]({f})" for f in (f.format(task=task) for f in files) if (results / f).exists()]
    return ", ".join(links) + f"; {notebooks}"


def claims_table(results: Path, tasks: list[str], n_draws: dict[str, int]) -> list[dict]:
    """One dict per (claim, task): verdict, metric, key number with CI, agreement across replicates, evidence."""
    tables = results / "tables"
    reruns = sorted(p / "tables" for p in (results / "reruns").glob("*") if (p / "tables").is_dir())
    out = []
    for claim in CLAIMS:
        for task in tasks:
            n = n_draws[task]
            try:
                if claim == 1:
                    row = claim1(tables, reruns, task, n)
                elif claim == 2:
                    row = claim2(tables, reruns, task, n)
                elif claim == 3:
                    row = claim3(tables, task)
                else:
                    row = claim4(tables, reruns, task)
            except (
                IndexError,
                AttributeError,
                KeyError,
            ):  # the run did not write this claim's table or rows (a partial run)
                row = {
                    "verdict": NOT_TESTABLE,
                    "metric": "—",
                    "key": "not computed in this run",
                    "agreement": "",
                    "figure_rows": [],
                }
            out.append({"claim": claim, "task": task, "evidence": evidence(results, claim, task)} | row)
    return out


# ------------------------------------------------------------------------------------------- the figure
def forest_figure(rows: list[dict], tasks: list[str], path: Path) -> Path:
    """The headline paired differences with 95% CIs, one panel per task; replicate runs as small marks, comparisons
    that cannot be tested greyed and labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(fr[0] for r in rows for fr in r["figure_rows"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 0.45 * len(labels) + 1.6), sharey=True)
    axes = np.atleast_1d(axes)
    styles = {
        "training seeds": ("v", "tab:blue"),
        "draw replicates": ("|", "tab:green"),
        "precision re-runs": ("x", "tab:red"),
    }
    for ax, task in zip(axes, tasks):
        ax.axvline(0, color="black", lw=0.8)
        ax.axvline(-AUC_MARGIN, color="grey", ls=":", lw=0.8)
        for r in (r for r in rows if r["task"] == task):
            for label, v, lo, hi, *flag in r["figure_rows"]:
                y = labels.index(label)
                if flag:  # not testable: no point estimate is drawn (its scale would mislead), only the word
                    ax.text(0, y, f"  {flag[0]}", va="center", fontsize=8, color="grey")
                    continue
                ax.errorbar(v, y, xerr=[[v - lo], [hi - v]], fmt="o", color="black", capsize=3, ms=5)
                for what, values in r.get("marks", {}).get(label, {}).items():
                    marker, c = styles[what]
                    ax.scatter(values, [y + 0.22] * len(values), marker=marker, color=c, s=22, label=what)
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("paired difference (95% CI)")
    handles = {n: h for ax in axes for h, n in zip(*ax.get_legend_handles_labels())}
    if handles:
        fig.legend(
            handles.values(),
            handles.keys(),
            fontsize=8,
            loc="lower center",
            ncol=len(handles),
            title="replicate runs (same comparison)",
            title_fontsize=8,
            bbox_to_anchor=(0.5, -0.02),
        )
    axes[0].set_yticks(range(len(labels)), labels, fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(
        "The paper's four claims: > 0 favours the paper (dotted: claim 1's non-inferiority margin)", fontsize=10
    )
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path
