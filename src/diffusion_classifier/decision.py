"""Decision rules over the error tensor E[N, C, K] (NaN = not evaluated). Pure numpy functions.

mean error (Li et al. 2023): argmin_c mean_k E[:, c, k]
majority vote (Favero et al.): every draw votes for its argmin class; most votes wins.
    Tie rule (the paper's is unverified): among the classes tied on votes, the one with the lowest mean error
    wins; a tie on both goes to the lowest class index.
"""
import numpy as np


def restrict(E: np.ndarray, U: np.ndarray, t_min: float = 0.0, t_max: float = 1.0, n_draws: int | None = None):
    """E with the draws outside [t_min, t_max) and beyond the first n_draws set to NaN."""
    keep = (U >= t_min) & (U < t_max)
    if n_draws is not None:
        keep &= np.arange(U.shape[1])[None, :] < n_draws
    return np.where(keep[:, None, :], E, np.nan)


def mean_errors(E: np.ndarray) -> np.ndarray:
    """(N, C) mean error over the evaluated draws; +inf for a class never evaluated."""
    n = np.isfinite(E).sum(2)
    s = np.nansum(E, axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / np.maximum(n, 1), np.inf)


def votes(E: np.ndarray) -> np.ndarray:
    """(N, C) vote counts: each draw with at least one evaluated class votes for its lowest-error class."""
    N, C, K = E.shape
    filled = np.where(np.isfinite(E), E, np.inf)
    voting = np.isfinite(E).any(1)  # (N, K)
    winner = filled.argmin(1)  # (N, K)
    counts = np.zeros((N, C), dtype=np.int64)
    for c in range(C):
        counts[:, c] = ((winner == c) & voting).sum(1)
    return counts


def predict_mean(E: np.ndarray) -> np.ndarray:
    return mean_errors(E).argmin(1)


def predict_vote(E: np.ndarray) -> np.ndarray:
    v = votes(E)
    tied = v == v.max(1, keepdims=True)
    return np.where(tied, mean_errors(E), np.inf).argmin(1)


def predict(E: np.ndarray, rule: str) -> np.ndarray:
    return {"mean": predict_mean, "vote": predict_vote}[check_rule(rule)](E)


def check_rule(rule: str) -> str:
    if rule not in ("mean", "vote"):
        raise ValueError(f"rule must be 'mean' or 'vote', got {rule!r}")
    return rule


def class_scores(E: np.ndarray, rule: str) -> np.ndarray:
    """(N, C) scores, higher = more likely, for ranking metrics (AUC): minus the mean error for the mean rule;
    the vote fraction for the vote rule (ties among images stay ties: the vote is a coarse score by design)."""
    if check_rule(rule) == "mean":
        return -mean_errors(E)
    v = votes(E)
    return v / np.maximum(v.sum(1, keepdims=True), 1)


def positive_score(E: np.ndarray, rule: str) -> np.ndarray:
    """Binary tasks: a score that grows with the evidence for class 1."""
    s = class_scores(E, rule)
    return s[:, 1] - s[:, 0]


def vote_decided(E: np.ndarray, remaining: int) -> np.ndarray:
    """(N,) True where the remaining draws cannot change the majority vote's winner: the leader's margin over
    the runner-up exceeds the draws left (a margin equal to them could still end in a tie)."""
    v = np.sort(votes(E), axis=1)
    return (v[:, -1] - v[:, -2]) > remaining if v.shape[1] > 1 else np.ones(len(v), dtype=bool)
