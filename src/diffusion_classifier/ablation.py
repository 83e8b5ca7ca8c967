"""Voting ablations: metrics of each decision rule as a function of the number of draws K and of the
timestep range, all read off one error tensor (the first K draws of the same seeded draws)."""
import numpy as np
import pandas as pd

from . import decision
from .metrics import metrics_with_ci

COLUMNS = ["task", "model", "rule", "n_draws", "t_range", "accuracy", "accuracy_ci_low", "accuracy_ci_high",
           "balanced_accuracy", "auc", "auc_ci_low", "auc_ci_high", "f1", "sensitivity", "specificity",
           "unet_evals_per_image"]


def fmt_range(lo, hi) -> str:
    return f"[{lo:.2f},{hi:.2f})"


def rule_row(E, y, rule, n_boot, seed) -> dict:
    row = metrics_with_ci(y, decision.predict(E, rule), decision.positive_score(E, rule), n_boot, seed)
    row["unet_evals_per_image"] = float(np.isfinite(E).sum((1, 2)).mean())
    return row


def ablation_table(E, U, y, task: str, model: str, n_draws_list, t_ranges, n_boot=1000, seed=0) -> pd.DataFrame:
    rows = []
    for rule in ("mean", "vote"):
        for k in n_draws_list:
            Ek = decision.restrict(E, U, n_draws=k)
            rows.append({"task": task, "model": model, "rule": rule, "n_draws": k, "t_range": fmt_range(0, 1),
                         **rule_row(Ek, y, rule, n_boot, seed)})
        for lo, hi in t_ranges:
            Er = decision.restrict(E, U, lo, hi)
            used = np.isfinite(Er).any(1).sum(1)
            rows.append({"task": task, "model": model, "rule": rule, "n_draws": int(np.median(used)),
                         "t_range": fmt_range(lo, hi), **rule_row(Er, y, rule, n_boot, seed)})
    return pd.DataFrame(rows)[COLUMNS]


def baseline_row(task, y, proba, n_boot=1000, seed=0) -> dict:
    row = metrics_with_ci(y, proba.argmax(1), proba[:, 1], n_boot, seed)
    return {"task": task, "model": "resnet18", "rule": "softmax", "n_draws": 0, "t_range": "", **row,
            "unet_evals_per_image": 0.0}


def voting_verdict(table: pd.DataFrame, task: str) -> str:
    """Plain-language comparison of majority vote vs mean error, read off the full-range rows."""
    t = table[(table.task == task) & (table.t_range == fmt_range(0, 1)) & table.rule.isin(["mean", "vote"])]
    piv = t.pivot_table(index="n_draws", columns="rule", values=["accuracy", "auc"])
    k_max = piv.index.max()
    acc_v, acc_m = piv.loc[k_max, ("accuracy", "vote")], piv.loc[k_max, ("accuracy", "mean")]
    auc_v, auc_m = piv.loc[k_max, ("auc", "vote")], piv.loc[k_max, ("auc", "mean")]
    wins = int((piv["accuracy"]["vote"] > piv["accuracy"]["mean"]).sum())
    ties = int((piv["accuracy"]["vote"] == piv["accuracy"]["mean"]).sum())
    ci = t[(t.rule == "vote") & (t.n_draws == k_max)].iloc[0]
    holds = acc_v > acc_m and ci.accuracy_ci_low > acc_m
    verdict = ("holds: the vote is more accurate and the mean rule's accuracy lies below the vote's 95% CI" if holds
               else "is not supported here" if acc_v <= acc_m
               else "points the same way, but the difference lies inside the vote's 95% CI")
    return (f"**{task}**: at K = {k_max} draws, majority vote accuracy {acc_v:.3f} "
            f"(95% CI {ci.accuracy_ci_low:.3f}-{ci.accuracy_ci_high:.3f}) vs mean error {acc_m:.3f}; "
            f"AUC {auc_v:.3f} vs {auc_m:.3f}. The vote beats the mean rule in accuracy at {wins} of {len(piv)} "
            f"values of K (ties: {ties}). The paper's voting claim {verdict}.")


def val_selected_rows(E_val, U_val, y_val, E_test, U_test, y_test, task, model, t_ranges, n_boot=1000, seed=0):
    """Per rule, the timestep range (full or one of `t_ranges`) with the best validation AUC, evaluated once on
    test: model selection on val, never on test."""
    from .metrics import binary_metrics

    rows = []
    for rule in ("mean", "vote"):
        candidates = [(0.0, 1.0)] + [tuple(r) for r in t_ranges]
        val_auc = [binary_metrics(y_val, decision.predict(decision.restrict(E_val, U_val, lo, hi), rule),
                                  decision.positive_score(decision.restrict(E_val, U_val, lo, hi), rule))["auc"]
                   for lo, hi in candidates]
        lo, hi = candidates[int(np.nanargmax(val_auc))]
        Er = decision.restrict(E_test, U_test, lo, hi)
        used = np.isfinite(Er).any(1).sum(1)
        rows.append({"task": task, "model": model, "rule": rule, "n_draws": int(np.median(used)),
                     "t_range": f"val-selected {fmt_range(lo, hi)}", **rule_row(Er, y_test, rule, n_boot, seed)})
    return pd.DataFrame(rows)[COLUMNS]


def early_stopping_table(E: np.ndarray, y: np.ndarray, task: str, split: str, round_size: int,
                         alphas=(0.0001, 0.001, 0.01, 0.05)) -> pd.DataFrame:
    """What stopping the vote early would have saved on stored full scores, and what it would have changed:
    UNet evaluations per image, the speed-up over the full K draws, and the images whose vote differs from the
    full vote (exact stopping: none by construction; sequential: a chance of at most alpha per image)."""
    full = decision.predict_vote(E)
    rows = []
    for stopping, alpha in [("exact", 0.0)] + [("sequential", a) for a in alphas]:
        Es = decision.replay_early_stop(E, round_size, alpha)
        pred, evals = decision.predict_vote(Es), np.isfinite(Es).sum((1, 2)).mean()
        rows.append({"task": task, "split": split, "stopping": stopping, "alpha": alpha, "round_size": round_size,
                     "n_draws": E.shape[2], "n_images": len(E), "unet_evals_per_image": evals,
                     "speedup": E.shape[1] * E.shape[2] / evals, "changed_vs_full_vote": int((pred != full).sum()),
                     "vote_accuracy": float((pred == y).mean()), "full_vote_accuracy": float((full == y).mean())})
    return pd.DataFrame(rows)


def early_stopping_verdict(table: pd.DataFrame, task: str, alpha: float) -> str:
    """Plain-language summary of `early_stopping_table` for one task: exact vs sequential at the profile's alpha."""
    t = table[table.task == task]
    ex = t[(t.stopping == "exact") & (t.split == "test")].iloc[0]
    seq = t[(t.stopping == "sequential") & np.isclose(t.alpha, alpha)].set_index("split")
    val, test = seq.loc["val"] if "val" in seq.index else None, seq.loc["test"]
    return (f"**{task}** (K = {ex.n_draws}, test, {ex.n_images} images): exact stopping needs "
            f"{ex.unet_evals_per_image:.1f} UNet evaluations per image instead of {ex.speedup * ex.unet_evals_per_image:.0f} "
            f"({ex.speedup:.2f}x fewer, no vote changed); sequential stopping at α = {alpha:g} needs "
            f"{test.unet_evals_per_image:.1f} ({test.speedup:.2f}x fewer) and changes {test.changed_vs_full_vote} of "
            f"{test.n_images} votes" + (f" (validation: {val.speedup:.2f}x, {val.changed_vs_full_vote} of {val.n_images} changed)"
                                         if val is not None else "")
            + f"; vote accuracy {test.vote_accuracy:.3f} vs {test.full_vote_accuracy:.3f} with all draws.")
