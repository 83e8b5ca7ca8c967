"""Write results/SUMMARY.md (the four claims on one page, `claims.page`), results/DETAILS.md (every other generated
table and sentence) and results/figures/claims.png from results/tables/*.csv and provenance.json (nothing in them is
typed by hand).

python -m diffusion_classifier.summary
"""

import json

import pandas as pd

from . import ablation, backbones, claims, deviations, explainability, rerun, shift, uncertainty, variance
from .paths import results_dir


def _table(df: pd.DataFrame, cols, digits=3) -> str:
    cols = [c for c in cols if c in df.columns]
    d = df[cols].copy()
    for c in cols:
        if pd.api.types.is_float_dtype(d[c]):
            d[c] = d[c].map(lambda v: "" if pd.isna(v) else f"{v:.{digits}f}")
        else:
            d[c] = d[c].fillna("")
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    return head + "\n".join("| " + " | ".join(str(v) for v in row) + " |" for row in d.itertuples(index=False))


def _ci(df, m):
    if f"{m}_ci_low" in df.columns:
        df[f"{m} (95% CI)"] = [
            f"{v:.3f} ({lo:.3f}-{hi:.3f})" for v, lo, hi in zip(df[m], df[f"{m}_ci_low"], df[f"{m}_ci_high"])
        ]
    return df


def _verdicts(tables, prov, seed_runs: pd.DataFrame | None = None) -> list[str]:
    """The generated verdict sentences of notebooks 04-09, rebuilt from their tables (seed_runs: notebook 09's
    seed_runs.csv, read once by the caller)."""
    out, settings = [], prov.get("settings", {})
    read = {
        name: pd.read_csv(tables / f"{name}.csv")
        for name in (
            "classification",
            "diffusion_vs_baseline",
            "ablation_paired",
            "explainability",
            "uncertainty",
            "uncertainty_paired",
            "shift_test",
        )
        if (tables / f"{name}.csv").exists()
    }
    if "classification" in read:
        c = read["classification"]
        for task in c.task.unique():
            cfg = settings.get(task, {})
            rule = cfg.get("decision", {}).get("rule", "vote")
            n_max = cfg.get("scoring", {}).get("n_draws", c[c.task == task].n_draws.max())
            rows = c[
                (c.task == task)
                & c.t_range.fillna("").isin([ablation.FULL_RANGE, ""])
                & (((c.rule == rule) & (c.n_draws == n_max)) | (c.model == "resnet18"))
            ]
            for r in rows.itertuples():
                out.append(
                    f"- **{task}** ({r.source}) {r.model}: {ablation.signal_phrase(r)}; balanced accuracy "
                    f"{r.balanced_accuracy:.3f}, accuracy {r.accuracy:.3f} "
                    f"(majority-class rate {r.majority_rate:.3f}), "
                    f"F1 {r.f1:.3f}, sensitivity {r.sensitivity:.3f}, specificity {r.specificity:.3f}."
                )
            if "diffusion_vs_baseline" in read:
                out += [f"- {line}" for line in ablation.competitiveness_verdict(read["diffusion_vs_baseline"], task)]
            head = c[
                (c.task == task)
                & (c.source == "all")
                & (c.rule == rule)
                & (c.n_draws == n_max)
                & (c.t_range == ablation.FULL_RANGE)
            ]
            if "ablation_paired" in read and len(head):
                out.append(f"- {ablation.voting_verdict(read['ablation_paired'], head.iloc[0], task)}")
    if "explainability" in read:
        e = read["explainability"]
        out += [f"- {line}" for task in e.task.unique() for line in explainability.verdicts(e, task)]
    if "uncertainty" in read:
        u = read["uncertainty"]
        out += [f"- {uncertainty.verdict(u, task, read.get('uncertainty_paired'))}" for task in u.task.unique()]
    if "shift_test" in read:
        st = read["shift_test"]
        for (task, target), g in st.groupby(["task", "target_source"]):
            out.append(
                f"- **{task}** (notebook 08): " + shift.verdict(g.to_dict("records"), target, g.other_source.iloc[0])
            )
    if seed_runs is not None:
        out += [
            f"- (notebook 09) {line}" for task, g in seed_runs.groupby("task") for line in variance.verdicts(g, task)
        ]
    if (tables / "classification_large_n.csv").exists() and (tables / "ablation_paired_large_n.csv").exists():
        large, pairs = (pd.read_csv(tables / f"{n}.csv") for n in ("classification_large_n", "ablation_paired_large_n"))
        for task, g in large[large.model != "resnet18"].groupby("task"):
            rule = settings.get(task, {}).get("decision", {}).get("rule", "vote")
            head = g[(g.rule == rule) & (g.n_draws == g.n_draws.max())]
            if len(head):
                out.append(
                    f"- (notebook 09, one long draw sequence, N = {head.n_draws.iloc[0]}: an exploratory second "
                    "look after the pre-specified N, no multiplicity correction, one training seed and one draw "
                    f"sequence) {ablation.voting_verdict(pairs, head.iloc[0], task)}"
                )
    if (tables / "early_stopping_large_n.csv").exists():
        stopping = pd.read_csv(tables / "early_stopping_large_n.csv")
        out += [f"- (notebook 09) {ablation.stopping_at_scale_verdict(r)}" for r in stopping.itertuples()]
        if (tables / "early_stopping_calibration.csv").exists():
            cal = pd.read_csv(tables / "early_stopping_calibration.csv")
            out += [
                f"- (notebook 09) {ablation.stopping_calibration_verdict(cal, r.n_draws, r.alpha_selected_on_val)}"
                for r in stopping.drop_duplicates(["n_draws", "alpha_selected_on_val"]).itertuples()
                if r.alpha_selected_on_val > 0
            ]
    if (tables / "backbones.csv").exists() and (tables / "backbones_paired.csv").exists():
        models, pairs = (pd.read_csv(tables / f"{n}.csv") for n in ("backbones", "backbones_paired"))
        out += [f"- (notebook 10) {line}" for line in backbones.verdicts(models, pairs)]
    if (tables / "ablation_paired_backbones.csv").exists():
        grid = pd.read_csv(tables / "ablation_paired_backbones.csv")
        for (task, name), g in grid.groupby(["task", "model"]):
            head = int(g.n_draws.max())  # the profile's headline N is the top of the grid
            out += [f"- (notebook 10) {line}" for line in ablation.other_n_findings(g, head, f"**{task}**, {name}")]
    if (tables / "uncertainty_backbones.csv").exists():
        unc = pd.read_csv(tables / "uncertainty_backbones.csv")
        out += [f"- (notebook 10) {line}" for line in backbones.uncertainty_lines(unc)]
    return out


def _default_run_minutes(prov: dict) -> float:
    """Wall time of notebooks 01-07 as first run: a notebook re-run later (e.g. to reload a finished model) counts
    with its earlier, from-scratch record."""
    first = {n["name"]: n["wall_s"] for n in prov.get("notebooks", [])}
    first.update({n["name"]: n["wall_s"] for n in prov.get("superseded", [])})
    return sum(v for k, v in first.items() if k < "08") / 60


def _provenance_line(prov: dict) -> str:
    commits = sorted(
        {
            n.get("git", {}).get("commit", "?")[:12]
            + (" (dirty)" if n.get("git", {}).get("dirty") or n.get("git", {}).get("dirty_at_start") else "")
            for n in prov.get("notebooks", [])
        }
    )
    env = prov.get("environment", {})
    return (
        f"Generated by `run_all.sh` — profile **{prov.get('profile', '?')}**, seed {prov.get('seed', '?')}, "
        f"notebooks run at commit(s) {', '.join(f'`{c}`' for c in commits) or '?'}, device {env.get('device', '?')} "
        f"(bf16 support: {env.get('cpu_bf16', '?')}), {env.get('torch_threads', '?')} torch threads; notebook wall "
        f"times "
        + ", ".join(f"{n['name'][:2]} {n['wall_s'] / 60:.1f}" for n in prov.get("notebooks", []))
        + f" min; the default run (01-07) from scratch: {_default_run_minutes(prov):.1f} min"
        + "".join(
            f"; earlier run of {n['name'][:2]} (replaced by a re-run): {n['wall_s'] / 60:.1f} min at "
            f"`{n.get('git', {}).get('commit', '?')[:12]}`"
            for n in prov.get("superseded", [])
        )
        + "."
    )


def _provenance() -> dict:
    path = results_dir() / "provenance.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _headline_n(prov: dict, tasks: list[str]) -> dict[str, int]:
    """The pre-specified N of each task, as the profile fixed it (provenance's settings)."""
    return {t: int(prov["settings"][t].get("scoring", {}).get("n_draws", 0)) for t in tasks}


def build() -> str:
    """SUMMARY.md: the four claims first (claims.page)."""
    prov = _provenance()
    tasks = [t for t in prov.get("tasks", []) if t in prov.get("settings", {})]
    return claims.page(results_dir(), tasks, _headline_n(prov, tasks), _provenance_line(prov))


def details() -> str:
    """DETAILS.md: every generated table and verdict sentence, by notebook."""
    res = results_dir()
    tables, figs = res / "tables", res / "figures"
    prov = _provenance()
    out = [
        "# Results in detail",
        "",
        "The four claims' verdicts are on the first page, [SUMMARY.md](SUMMARY.md); this page holds every other "
        "generated table and sentence. " + _provenance_line(prov) + " Every number below is read from "
        "`results/tables/`; every sentence is generated from them.",
        "",
    ]
    table = deviations.rows()
    out += ["## Deviations from the authors' code", "", deviations.summary_line(table), ""]
    seed_runs = pd.read_csv(tables / "seed_runs.csv") if (tables / "seed_runs.csv").exists() else None
    verdicts = _verdicts(tables, prov, seed_runs)
    if verdicts:
        out += ["## Verdicts (generated)", ""] + verdicts + [""]

    def section(title, csv, cols, note="", ci=(), where=None):
        path = tables / csv
        if not path.exists():
            return
        df = pd.read_csv(path)
        if where is not None:
            df = df[where(df)]
        for col in ("alpha", "alpha_cap", "alpha_selected_on_val"):  # 0.0001 must not print as 0.000
            if col in df.columns:
                df[col] = df[col].map("{:g}".format)
        for m in ci:
            df = _ci(df, m)
        out.extend(
            [f"## {title}", "", note, "", _table(df, cols), ""] if note else [f"## {title}", "", _table(df, cols), ""]
        )

    section("Data", "data_summary.csv", ["task", "split", "class", "count"])
    section(
        "Classification at the headline N (test split)",
        "classification.csv",
        [
            "task",
            "source",
            "model",
            "rule",
            "n_draws",
            "n_images",
            "auc (95% CI)",
            "balanced_accuracy (95% CI)",
            "majority_rate",
            "accuracy",
            "f1",
            "sensitivity",
            "specificity",
        ],
        "Every rule, N and timestep range: `results/tables/classification.csv`; per-image predictions: "
        "`results/tables/predictions.csv`.",
        ci=("auc", "balanced_accuracy"),
        where=lambda d: (
            d.t_range.fillna("").isin([ablation.FULL_RANGE, ""])
            & (d.n_draws == d.groupby("task").n_draws.transform("max"))
            | (d.model == "resnet18")
        ),
    )
    section(
        "Stable Diffusion arm (notebook 07; skipped without local weights)",
        "foundation_classification.csv",
        ["task", "model", "rule", "n_draws", "n_images", "auc (95% CI)", "balanced_accuracy", "accuracy", "f1"],
        ci=("auc",),
        where=lambda d: d.n_draws == d.n_draws.max(),
    )
    section(
        "Diffusion classifier vs ResNet-18 (paired, test split)",
        "diffusion_vs_baseline.csv",
        [
            "task",
            "source",
            "a",
            "n_images",
            "auc_diff",
            "auc_diff_ci_low",
            "auc_diff_ci_high",
            "balanced_accuracy_diff",
            "balanced_accuracy_diff_ci_low",
            "balanced_accuracy_diff_ci_high",
            "mcnemar_p",
        ],
    )
    section(
        "Majority vote − mean error at each N (paired, test split)",
        "ablation_paired.csv",
        ablation.PAIRED_COLUMNS,
    )
    section(
        "Beside the paper (different data and scale: context, not a test)",
        "paper_comparison.csv",
        ["source", "data", "model", "accuracy", "f1", "auc", "balanced_accuracy"],
    )
    section(
        "Early stopping of the majority vote (replayed on the stored full scores)",
        "early_stopping.csv",
        [
            "task",
            "split",
            "stopping",
            "alpha",
            "n_draws",
            "n_images",
            "unet_evals_per_image",
            "speedup",
            "changed_vs_full_vote",
            "vote_accuracy",
            "full_vote_accuracy",
        ],
    )
    section(
        "Explainability: paired faithfulness differences",
        "explainability.csv",
        [
            "task",
            "judge",
            "judge_relation",
            "fill",
            "mode",
            "method",
            "measure",
            "versus",
            "value",
            "ci_low",
            "ci_high",
            "n_images",
        ],
        "Deletion: negative = more faithful than the map compared with; insertion: positive. Rows of judges whose "
        "clean-vs-fill score gap CI contains 0 are left out (not interpretable; they are in the CSV).",
        where=lambda d: (
            d.measure.isin(["auc_minus_random", "auc_minus_rival", "score_gap"])
            & d.interpretable.astype(str).isin(["True", "true", "1", "1.0"])
        ),
    )
    section(
        "Explainability: sanity checks and counterfactuals",
        "explainability.csv",
        ["task", "section", "method", "judge", "measure", "stage_name", "value", "ci_low", "ci_high", "n_images"],
        where=lambda d: d.section.isin(["randomisation", "test_retest", "counterfactual"]),
    )
    section(
        "Uncertainty: calibration, error detection, selective prediction",
        "uncertainty.csv",
        uncertainty.TABLE_COLUMNS,
    )
    section(
        "Uncertainty: vote share − ResNet max softmax (paired, test split)",
        "uncertainty_paired.csv",
        [
            "task",
            "n_images",
            "error_auroc_diff",
            "error_auroc_diff_ci_low",
            "error_auroc_diff_ci_high",
            "e_aurc_diff",
            "e_aurc_diff_ci_low",
            "e_aurc_diff_ci_high",
            "referral_gain_at_80_diff",
            "referral_gain_at_80_diff_ci_low",
            "referral_gain_at_80_diff_ci_high",
        ],
    )
    section(
        "Source-shift test (notebook 08, run separately)",
        "shift_test.csv",
        [
            "task",
            "target_source",
            "other_source",
            "n_test_images",
            "family",
            "trained_on",
            "measure",
            "value",
            "ci_low",
            "ci_high",
        ],
    )
    section(
        "Backbones: the DiT beside the UNet and the ResNet-18 (notebook 10, run separately)",
        "backbones.csv",
        [
            "task",
            "model",
            "rule",
            "n_draws",
            "n_images",
            "majority_rate",
            "auc",
            "auc_ci_low",
            "auc_ci_high",
            "balanced_accuracy",
            "accuracy",
            "f1",
            "vote_minus_mean_accuracy",
            "voting_outcome",
        ],
        "The same test images and, between the diffusion models, the same draws; paired differences in "
        "`backbones_paired.csv`, the DiT's voting ablation in `classification_backbones.csv` and "
        "`ablation_paired_backbones.csv`.",
    )
    section(
        "Three sources of variance (notebook 09, run separately)",
        "seed_spread.csv",
        [
            "task",
            "variance_source",
            "measure",
            "n_runs",
            "mean",
            "sd",
            "sd_ci_low",
            "sd_ci_high",
            "min",
            "max",
            "test_image_sd",
        ],
        "Spread of each headline measure over disjoint draw replicates (one trained model) and over training seeds "
        "(denoiser and ResNet-18 retrained), beside the SD over test images that the runs' bootstrap CIs imply. "
        "Each run: `results/tables/seed_runs.csv`.",
    )
    if seed_runs is not None:
        out.extend(
            [
                "## Headline across training seeds and draw replicates (notebook 09)",
                "",
                "Mean (SD, min–max) of each run's headline numbers; each run is in `seed_runs.csv` with its CIs.",
                "",
                _table(
                    variance.headline_across_runs(seed_runs),
                    [
                        "task",
                        "variance_source",
                        "n_runs",
                        "auc",
                        "balanced_accuracy",
                        "accuracy",
                        "resnet_auc",
                        "minus_resnet_auc",
                        "vote_minus_mean_accuracy",
                        "voting_outcomes",
                    ],
                ),
                "",
            ]
        )
    for path in sorted(tables.glob("rerun_*.csv")):
        name = path.stem.removeprefix("rerun_")
        rr = pd.read_csv(path)
        heads = {t: prov.get("settings", {}).get(t, {}) for t in rr.task.unique()}
        sentences = []
        for task, g in rr.groupby("task", sort=False):
            cfg = heads[task]
            head = {
                "rule": cfg.get("decision", {}).get("rule", "vote"),
                # the profile's N; where provenance lacks the task's settings, the top of its grid (as _verdicts)
                "n_draws": cfg.get("scoring", {}).get("n_draws", g.n_draws.max()),
            }
            sentences += [f"- {s}" for s in rerun.verdict(g, name, head)]
        out.extend(
            [
                f"## The same study re-run: {name} (`rerun_{name}.csv`)",
                "",
                f"One `{name}` re-run (same profile, seed and test images, checked; its folder, commit and CPU in the "
                "table's `rerun_*` columns) against the committed models, paired on the test images "
                "(`python -m diffusion_classifier.rerun`). Rows at the headline rule and N, and the ResNet-18:",
                "",
                *sentences,
                "",
            ]
        )
    section(
        "Sequential early stopping at large N, alpha capped for one run at 95 % confidence if alpha bounds the "
        "expected changed share, validation veto; the fresh draws are the confirmatory reading (notebook 09)",
        "early_stopping_large_n.csv",
        [
            "task",
            "scoring_seed",
            "draws",
            "n_draws",
            "alpha_cap",
            "alpha_selected_on_val",
            "val_changed_at_cap",
            "val_veto_needs",
            "n_images",
            "unet_evals_per_image",
            "full_evals_per_image",
            "fraction_of_full",
            "changed_vs_full_vote",
            "changed_mean_over_orders",
            "changed_max_over_orders",
            "accuracy",
            "full_accuracy",
            "auc",
            "full_auc",
        ],
    )
    section(
        "Is α what it says? Votes changed by sequential stopping against α, validation and both test draw sets "
        "(notebook 09)",
        "early_stopping_calibration.csv",
        [
            "split",
            "n_draws",
            "alpha",
            "n_images",
            "changed_share",
            "changed_share_mean_over_orders",
            "changed_max_over_orders",
            "fraction_of_full_mean_over_orders",
            "near_tie_share",
            "jeffreys_near_tie_share",
        ],
        note="changed_share: on the stored draw order; mean over orders: the same stored draws in random orders; "
        "near_tie_share: images whose full vote share of class 1 lies in 0.35–0.65 (the Jeffreys prior's mass there "
        "beside it). Validation rows are the table the veto read under the cap.",
    )
    section(
        "Majority vote − mean error up to the paper's regime (notebook 09, one long draw sequence)",
        "ablation_paired_large_n.csv",
        ablation.PAIRED_COLUMNS,
    )
    for name in ("scoring", "training"):
        bench = res / "benchmarks" / f"{name}.csv"
        if bench.exists():
            b = pd.read_csv(bench)
            out.extend(
                [
                    f"## {name.capitalize()} speed (benchmarks/{name}.py)",
                    "",
                    "Written by its own run of the benchmark script, not by run_all.sh: it may predate the code "
                    "and models above (its setup row says what it measured).",
                    "",
                    _table(b, [c for c in b.columns if c != "setup"]),
                    "",
                ]
            )
    pngs = sorted(figs.glob("*.png"))
    if pngs:
        out.extend(["## Figures", ""] + [f"- [{p.stem}](figures/{p.name})" for p in pngs] + [""])
    nbs = sorted((res / "notebooks").glob("*.ipynb"))
    if nbs:
        out.extend(["## Executed notebooks", ""] + [f"- [{p.stem}](notebooks/{p.name})" for p in nbs] + [""])
    return "\n".join(out)


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
