"""Early stopping of the vote, replayed on stored full scores (notebook 04): what stopping would have saved and
changed (`early_stopping_table`), the stopping threshold chosen on validation at scale, the calibration of the
stop's confidence, and their verdict sentences.
"""

import math

import numpy as np
import pandas as pd
from scipy.stats import poisson

from ..classifier import rules
from ..evaluation.metrics import binary_metrics


def early_stopping_table(
    E: np.ndarray, y: np.ndarray, task: str, split: str, round_size: int, alphas=(0.0001, 0.001, 0.01, 0.05)
) -> pd.DataFrame:
    """What stopping the vote early would have saved on stored full scores, and what it would have changed:
    UNet evaluations per image, the speed-up over the full K draws, and the images whose vote differs from the
    full vote (exact stopping: none by construction; sequential: a chance of at most alpha per image)."""
    full = rules.predict_vote(E)
    rows = []
    for stopping, alpha in [("exact", 0.0)] + [("sequential", a) for a in alphas]:
        Es = rules.replay_early_stop(E, round_size, alpha)
        pred, evals = rules.predict_vote(Es), np.isfinite(Es).sum((1, 2)).mean()
        rows.append(
            {
                "task": task,
                "split": split,
                "stopping": stopping,
                "alpha": alpha,
                "round_size": round_size,
                "n_draws": E.shape[2],
                "n_images": len(E),
                "unet_evals_per_image": evals,
                "speedup": E.shape[1] * E.shape[2] / evals,
                "changed_vs_full_vote": int((pred != full).sum()),
                "vote_accuracy": float((pred == y).mean()),
                "full_vote_accuracy": float((full == y).mean()),
            }
        )
    return pd.DataFrame(rows)


# α candidates at large N: the notebook-04 grid plus 0.002 and 0.005, so that an α at or below the target rate exists
SCALE_ALPHAS = (0.0001, 0.001, 0.002, 0.005, 0.01, 0.05)
# the chance with which one run must meet the changed-votes target (the target is judged on one run, not on average)
STOP_TARGET_CONFIDENCE = 0.95


def allowed_changes(n_images: int, max_changed_rate: float) -> int:
    """The most changed votes a target of max_changed_rate allows on n_images (the guard keeps 0.29 * 100 at 29)."""
    return math.floor(max_changed_rate * n_images + 1e-9)


def changed_tail_bound(allowed: int, mean: float) -> float:
    """An upper bound on P(count > allowed) for a sum of independent per-image events whose expected total is at most
    `mean`: the Poisson tail where allowed >= mean (for counts of at least the mean + 1 such a sum's tail is at most
    the binomial's of the same mean, Hoeffding 1956, and that at most the Poisson's, Anderson & Samuels 1967; the
    Poisson tail grows with its mean, so a smaller true mean only helps), else Markov's mean / (allowed + 1)."""
    if allowed >= mean:
        return float(poisson.sf(allowed, mean))
    return min(1.0, mean / (allowed + 1))


def alpha_cap(
    n_images: int, max_changed_rate: float, alphas=SCALE_ALPHAS, confidence: float = STOP_TARGET_CONFIDENCE
) -> float:
    """The largest alpha of `alphas` at which one run on n_images changes at most max_changed_rate of its votes
    with the given confidence, *if* alpha bounds the expected share of changed votes; 0 if none qualifies:
    `changed_tail_bound(floor(max_changed_rate * n_images), alpha * n_images) <= 1 - confidence`.

    Why: alpha bounds the expected share of changed votes only as an average over images whose vote shares follow
    the prior (see `select_stop_alpha`), so an alpha at the target rate makes the target the expected count, which
    one run can exceed often (at 624 images and 0.5 %: a mean of up to 3.1 changed against 3 allowed; a Poisson count
    of that mean exceeds 3 with chance 0.38). Depends on the number of images only, not on any score, so it can be
    fixed before a split is read."""
    if n_images <= 0:
        raise ValueError(f"alpha_cap needs at least one image, got n_images = {n_images}")
    allowed = allowed_changes(n_images, max_changed_rate)
    ok = [a for a in alphas if a <= max_changed_rate and changed_tail_bound(allowed, a * n_images) <= 1 - confidence]
    return float(max(ok, default=0.0))


def select_stop_alpha(
    E_val: np.ndarray,
    y_val: np.ndarray,
    round_size: int,
    alphas=SCALE_ALPHAS,
    max_changed_rate: float = 0.005,
    n_images: int | None = None,
    confidence: float = STOP_TARGET_CONFIDENCE,
) -> float:
    """The largest alpha, no larger than `alpha_cap` for a run on n_images (the set the target is judged on; default
    the validation set's size), whose sequential stopping, replayed on validation, changes at most max_changed_rate
    of the full votes (0, exact stopping, if none does).

    Why a cap: an image stops only when the beta-binomial predictive chance that the full vote ends otherwise is
    <= alpha, and that bound survives optional stopping, so alpha bounds the expected share of changed votes
    averaged over images whose vote shares follow the Jeffreys prior. It is a prior-averaged bound: images nearer
    a tie than the prior puts them change more often, and a set of them (a harder test set) can exceed alpha. The
    cap turns the expected bound into one that a single run meets with the given confidence (`alpha_cap`).
    Validation can only veto an alpha under the cap; `stopping_calibration` shows how the realised share compares
    with alpha on both splits (README: three earlier readings of test, before this cap)."""
    cap = alpha_cap(len(y_val) if n_images is None else n_images, max_changed_rate, alphas, confidence)
    t = early_stopping_table(E_val, y_val, "", "val", round_size, [a for a in alphas if a <= cap])
    ok = t[(t.stopping == "sequential") & (t.changed_vs_full_vote <= max_changed_rate * t.n_images)]
    return float(ok.alpha.max()) if len(ok) else 0.0


def _stopped(full: np.ndarray, round_size: int, alpha: float):
    """Stopping replayed on the draws of `full`: (stopped E, votes changed against full's own vote, UNet
    evaluations per image)."""
    Es = rules.replay_early_stop(full, round_size, alpha)
    changed = int((rules.predict_vote(Es) != rules.predict_vote(full)).sum())
    return Es, changed, float(np.isfinite(Es).sum((1, 2)).mean())


def changed_over_draw_orders(E: np.ndarray, n_draws: int, round_size: int, alpha: float, n_orders: int, seed: int):
    """Votes changed by stopping (against each order's own full vote) and UNet evaluations per image, over n_orders
    random orders of E's draws, each cut to its first n_draws. Valid because the engine's draws are i.i.d. given the
    image, so a permuted sequence is as likely as the one drawn; but every order reuses the same stored draws (at
    N close to E's length, nearly all of them), so the spread is that of the order given these draws, not of
    independent scoring runs. Returns two arrays of length n_orders: changed counts and evaluations per image."""
    if E.shape[2] < n_draws:
        raise ValueError(f"{n_draws} draws per order need at least as many stored draws; E has {E.shape[2]}")
    rng = np.random.default_rng(seed)
    # images stop independently, so all orders replay at once as one stack of n_orders copies of the images
    full = np.concatenate([E[:, :, rng.permutation(E.shape[2])[:n_draws]] for _ in range(n_orders)])
    Es = rules.replay_early_stop(full, round_size, alpha)
    changed = (rules.predict_vote(Es) != rules.predict_vote(full)).reshape(n_orders, len(E)).sum(1)
    return changed, np.isfinite(Es).sum((1, 2)).reshape(n_orders, len(E)).mean(1)


# the band of vote shares near a tie, and the Jeffreys prior's mass in it (Beta(1/2, 1/2): 2/pi asin(sqrt(p)))
NEAR_TIE = (0.35, 0.65)
JEFFREYS_NEAR_TIE = float(2 / np.pi * (np.arcsin(np.sqrt(NEAR_TIE[1])) - np.arcsin(np.sqrt(NEAR_TIE[0]))))


def stopping_calibration(
    E_by_split: dict, task: str, n_draws_list, round_size: int, alphas=SCALE_ALPHAS, n_orders: int = 50, seed: int = 0
) -> pd.DataFrame:
    """Is alpha what it says? Per split, N and alpha: the share of votes that sequential stopping changes, on the
    stored draw order and averaged over n_orders random orders (`changed_over_draw_orders`), beside alpha (the
    prior-averaged bound), and the share of images whose full vote is near a tie (vote share of class 1 in
    NEAR_TIE) beside the Jeffreys prior's mass there: more images near a tie than the prior expects is where
    the realised share can exceed alpha. The validation rows are the table `select_stop_alpha` chose from."""
    rows = []
    for split, E in E_by_split.items():
        for k in n_draws_list:
            full = E[:, :, :k]
            share = rules.votes(full)[:, 1] / k
            near = float(((share >= NEAR_TIE[0]) & (share <= NEAR_TIE[1])).mean())
            for alpha in alphas:
                _, stored_changed, _ = _stopped(full, round_size, alpha)
                changed, evals = changed_over_draw_orders(E, k, round_size, alpha, n_orders, seed)
                rows.append(
                    {
                        "task": task,
                        "split": split,
                        "n_draws": k,
                        "alpha": alpha,
                        "n_images": len(E),
                        "changed_share": stored_changed / len(E),
                        "changed_share_mean_over_orders": float(changed.mean() / len(E)),
                        "changed_max_over_orders": int(changed.max()),
                        "fraction_of_full_mean_over_orders": float(evals.mean() / (E.shape[1] * k)),
                        "n_draw_orders": n_orders,
                        "near_tie_share": near,
                        "jeffreys_near_tie_share": JEFFREYS_NEAR_TIE,
                    }
                )
    return pd.DataFrame(rows)


def stopping_calibration_verdict(cal: pd.DataFrame, n_draws: int, alpha: float) -> str:
    """Generated sentence: at one N and alpha, the realised changed share on each split beside alpha, and the
    share of images near a tie beside the Jeffreys prior's."""
    c = cal[(cal.n_draws == n_draws) & np.isclose(cal.alpha, alpha)].set_index("split")
    task = c.task.iloc[0]
    parts = [
        f"{split} {r.changed_share:.2%} on the stored order, {r.changed_share_mean_over_orders:.2%} averaged over "
        f"{r.n_draw_orders} orders, {r.near_tie_share:.1%} of images near a tie"
        for split, r in c.iterrows()
    ]
    over = [split for split, r in c.iterrows() if r.changed_share_mean_over_orders > alpha]
    return (
        f"**{task}**, N = {n_draws}, α = {alpha:g}: votes changed by stopping: {'; '.join(parts)} (vote share of "
        f"class 1 in {NEAR_TIE[0]:g}–{NEAR_TIE[1]:g}; the Jeffreys prior puts {c.jeffreys_near_tie_share.iloc[0]:.1%} "
        "there). "
        + (
            f"The average over orders exceeds α on {' and '.join(over)}: α is a prior-averaged bound, not a "
            "guarantee for these images."
            if over
            else "The average over orders stays within α on every split."
        )
    )


def stopping_at_scale(
    E_val,
    y_val,
    E_test,
    y_test,
    task: str,
    n_draws_list,
    round_size: int,
    alphas=SCALE_ALPHAS,
    max_changed_rate: float = 0.005,
    n_orders: int = 50,
    seed: int = 0,
    draws: str = "",
    scoring_seed: int | None = None,
    confidence: float = STOP_TARGET_CONFIDENCE,
) -> pd.DataFrame:
    """Sequential stopping at large N: per N (the first N draws), alpha by `select_stop_alpha` (capped by
    `alpha_cap` for one run on the test images, vetoed by validation), then on test the UNet
    evaluations per image against the full N, the votes changed against the full vote, and accuracy and AUC of the
    stopped vote beside the full vote's. The changed votes and evaluations are also given over n_orders random
    orders of the stored draws (`changed_over_draw_orders`; needs at least N stored draws), so a target is judged
    against the draws' spread as well as the one order the engine drew. `draws` describes the test draws in the
    table (e.g. whether they were read before the rule was fixed), `scoring_seed` names them. The validation
    votes changed at the cap are given beside the count a veto needs, to show the veto's power."""
    rows = []
    cap = alpha_cap(len(y_test), max_changed_rate, alphas, confidence)
    for k in n_draws_list:
        alpha = select_stop_alpha(E_val[:, :, :k], y_val, round_size, alphas, max_changed_rate, len(y_test), confidence)
        _, val_changed, _ = _stopped(E_val[:, :, :k], round_size, cap)  # what the veto saw at the cap
        full = E_test[:, :, :k]
        Es, stored_changed, evals = _stopped(full, round_size, alpha)
        full_evals = float(np.isfinite(full).sum((1, 2)).mean())
        stopped, whole = (
            binary_metrics(y_test, rules.predict(e, "vote"), rules.positive_score(e, "vote")) for e in (Es, full)
        )
        changed, order_evals = changed_over_draw_orders(E_test, k, round_size, alpha, n_orders, seed)
        rows.append(
            {
                "task": task,
                "scoring_seed": scoring_seed,
                "draws": draws,
                "n_draws": k,
                "confidence": confidence,
                "alpha_cap": cap,
                "alpha_selected_on_val": alpha,
                "val_changed_at_cap": val_changed,
                "val_veto_needs": allowed_changes(len(y_val), max_changed_rate) + 1,
                "n_val_images": len(y_val),
                "max_changed_rate": max_changed_rate,
                "n_images": len(y_test),
                "unet_evals_per_image": evals,
                "full_evals_per_image": full_evals,
                "fraction_of_full": evals / full_evals,
                "changed_vs_full_vote": stored_changed,
                "accuracy": stopped["accuracy"],
                "full_accuracy": whole["accuracy"],
                "auc": stopped["auc"],
                "full_auc": whole["auc"],
                "n_draw_orders": n_orders,
                "changed_mean_over_orders": float(changed.mean()),
                "changed_max_over_orders": int(changed.max()),
                "share_of_orders_meeting_target": float(
                    ((changed <= max_changed_rate * len(y_test)) & (order_evals <= 0.25 * full_evals)).mean()
                ),
                "fraction_of_full_mean_over_orders": float(order_evals.mean() / full_evals),
            }
        )
    return pd.DataFrame(rows)


def stopping_at_scale_verdict(row) -> str:
    """Generated sentence for one row of `stopping_at_scale`, against the target of at most a quarter of the
    evaluations with at most max_changed_rate of the votes changed: judged on the engine's draw order, with the
    spread over random orders of the same draws beside it."""
    limit = row.max_changed_rate * row.n_images
    met = row.fraction_of_full <= 0.25 and row.changed_vs_full_vote <= limit
    if row.alpha_selected_on_val <= 0:
        how = (
            "exact stopping (no α on the grid meets the cap)"
            if row.alpha_cap <= 0
            else f"exact stopping (no α under the cap changed ≤ {row.max_changed_rate:.1%} of the validation votes; "
            f"{row.val_changed_at_cap:.0f} of {row.n_val_images:.0f} at the cap)"
        )
    else:
        cap = (
            f"the cap {row.alpha_cap:g}: the largest α on the grid with which one run on {row.n_images} images stays "
            f"within the target with {row.confidence:.0%} confidence, if α bounds the expected changed share"
        )
        veto = (
            f"validation changed {row.val_changed_at_cap:.0f} of {row.n_val_images:.0f} votes at the cap, where a "
            f"veto needs {row.val_veto_needs:.0f}"
        )
        how = (
            f"sequential stopping at α = {row.alpha_selected_on_val:g} ({cap}; {veto})"
            if row.alpha_selected_on_val == row.alpha_cap
            else f"sequential stopping at α = {row.alpha_selected_on_val:g} (the largest α under {cap}, that "
            f"validation did not veto; {veto})"
        )
    drawn = f", {row.draws}" if isinstance(row.draws, str) and row.draws else ""  # "" reads back from CSV as NaN
    if pd.notna(row.scoring_seed):  # None, or NaN from CSV: not named
        drawn = f", scoring seed {row.scoring_seed:.0f}{drawn}"
    orders = (
        f" Over {row.n_draw_orders:.0f} random orders of the same stored draws (a spread given these draws, "
        f"not of independent runs): {row.changed_mean_over_orders:.1f} "
        f"votes changed on average (at most {row.changed_max_over_orders:.0f}; target met in "
        f"{row.share_of_orders_meeting_target:.0%} of orders), {row.fraction_of_full_mean_over_orders:.1%} "
        "of the evaluations."
    )
    return (
        f"**{row.task}**, N = {row.n_draws} (test, {row.n_images} images{drawn}): {how} "
        f"uses {row.unet_evals_per_image:.1f} of {row.full_evals_per_image:.0f} UNet evaluations per image "
        f"({row.fraction_of_full:.1%}) and changes {row.changed_vs_full_vote} "
        f"vote{'' if row.changed_vs_full_vote == 1 else 's'}; accuracy {row.accuracy:.3f} vs "
        f"{row.full_accuracy:.3f}, AUC {row.auc:.3f} vs {row.full_auc:.3f} with every draw. Target (≤ 25% of the "
        f"evaluations, ≤ {row.max_changed_rate:.1%} changed): **{'met' if met else 'not met'}**." + orders
    )


def early_stopping_verdict(table: pd.DataFrame, task: str, alpha: float) -> str:
    """Plain-language summary of `early_stopping_table` for one task: exact vs sequential at the profile's alpha."""
    t = table[table.task == task]
    ex = t[(t.stopping == "exact") & (t.split == "test")].iloc[0]
    seq = t[(t.stopping == "sequential") & np.isclose(t.alpha, alpha)].set_index("split")
    val, test = seq.loc["val"] if "val" in seq.index else None, seq.loc["test"]
    return (
        f"**{task}** (K = {ex.n_draws}, test, {ex.n_images} images): exact stopping needs "
        f"{ex.unet_evals_per_image:.1f} UNet evaluations per image instead of "
        f"{ex.speedup * ex.unet_evals_per_image:.0f} "
        f"({ex.speedup:.2f}x fewer, no vote changed); sequential stopping at α = {alpha:g} needs "
        f"{test.unet_evals_per_image:.1f} ({test.speedup:.2f}x fewer) and changes {test.changed_vs_full_vote} of "
        f"{test.n_images} votes"
        + (
            f" (validation: {val.speedup:.2f}x, {val.changed_vs_full_vote} of {val.n_images} changed)"
            if val is not None
            else ""
        )
        + f"; vote accuracy {test.vote_accuracy:.3f} vs {test.full_vote_accuracy:.3f} with all draws."
    )
