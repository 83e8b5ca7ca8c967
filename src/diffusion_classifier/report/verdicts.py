"""The generated verdict sentences of notebooks 04-10 for DETAILS.md, rebuilt from their tables."""

import pandas as pd

from ..analyses import backbones, classification, early_stopping, explanations, shift, uncertainty, variance


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
                & c.t_range.fillna("").isin([classification.FULL_RANGE, ""])
                & (((c.rule == rule) & (c.n_draws == n_max)) | (c.model == "resnet18"))
            ]
            for r in rows.itertuples():
                out.append(
                    f"- **{task}** ({r.source}) {r.model}: {classification.signal_phrase(r)}; balanced accuracy "
                    f"{r.balanced_accuracy:.3f}, accuracy {r.accuracy:.3f} "
                    f"(majority-class rate {r.majority_rate:.3f}), "
                    f"F1 {r.f1:.3f}, sensitivity {r.sensitivity:.3f}, specificity {r.specificity:.3f}."
                )
            if "diffusion_vs_baseline" in read:
                out += [
                    f"- {line}" for line in classification.competitiveness_verdict(read["diffusion_vs_baseline"], task)
                ]
            head = c[
                (c.task == task)
                & (c.source == "all")
                & (c.rule == rule)
                & (c.n_draws == n_max)
                & (c.t_range == classification.FULL_RANGE)
            ]
            if "ablation_paired" in read and len(head):
                out.append(f"- {classification.voting_verdict(read['ablation_paired'], head.iloc[0], task)}")
    if "explainability" in read:
        e = read["explainability"]
        out += [f"- {line}" for task in e.task.unique() for line in explanations.verdicts(e, task)]
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
            n_head = settings.get(task, {}).get("scoring", {}).get("n_draws", 0)
            if len(head):
                n = head.n_draws.iloc[0]
                later = sorted(x for x in pairs[pairs.task == task].n_draws.unique() if n_head < x <= n)
                look = 1 + len(later)  # look 1: the pre-specified N
                out.append(
                    f"- (notebook 09, one long draw sequence, N = {n}: look {look}, exploratory, after the "
                    "pre-specified N, no multiplicity correction, one training seed and one draw "
                    f"sequence) {classification.voting_verdict(pairs, head.iloc[0], task, look=look)}"
                )
    if (tables / "early_stopping_large_n.csv").exists():
        stopping = pd.read_csv(tables / "early_stopping_large_n.csv")
        out += [f"- (notebook 09) {early_stopping.stopping_at_scale_verdict(r)}" for r in stopping.itertuples()]
        if (tables / "early_stopping_calibration.csv").exists():
            cal = pd.read_csv(tables / "early_stopping_calibration.csv")
            verdict = early_stopping.stopping_calibration_verdict
            out += [
                f"- (notebook 09) {verdict(cal, r.n_draws, r.alpha_selected_on_val)}"
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
            out += [
                f"- (notebook 10) {line}" for line in classification.other_n_findings(g, head, f"**{task}**, {name}")
            ]
    if (tables / "uncertainty_backbones.csv").exists():
        unc = pd.read_csv(tables / "uncertainty_backbones.csv")
        out += [f"- (notebook 10) {line}" for line in backbones.uncertainty_lines(unc)]
    return out
