"""Confidence and uncertainty scores of the diffusion classifier: pure functions of E[N, C, K], each belonging to
one decision rule (`RULE_SCORES`) and judged on that rule's predictions only:
    vote rule   vote_fraction (share of draws voting for the winner: a confidence), vote_entropy (uncertainty)
    mean rule   error_softmax (softmax over `error_logits` = -mean error / T, T fitted on val: a probability),
                margin_z ((runner-up - best) mean error over the standard error of the per-draw difference)
`vote_logits`: log smoothed vote shares, the vote's own probability, scalable by a temperature.
"""

import numpy as np

from . import rules

# The uncertainty scores of each rule, its confidence first. The paper's two rules have their own; a rule added to
# rules.RULES has none until it is given some here. The order is that of uncertainty.csv's rows.
RULE_SCORES = {"vote": ("vote_fraction", "vote_entropy"), "mean": ("error_softmax", "margin_z")}


def vote_fraction(E):
    return rules.vote_shares(E).max(1)


def vote_entropy(E):
    p = rules.vote_shares(E)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.nansum(np.where(p > 0, p * np.log(p), 0.0), axis=1)


def margin_z(E):
    """Confidence: how many standard errors separate the two best classes' mean errors."""
    m = rules.mean_errors(E)
    order = np.argsort(m, axis=1)
    idx = np.arange(len(E))
    d = E[idx, order[:, 1]] - E[idx, order[:, 0]]  # (N, K) per-draw difference, runner-up - best
    n = np.isfinite(d).sum(1)
    se = np.nanstd(d, axis=1, ddof=1) / np.sqrt(np.maximum(n, 1))
    return np.nanmean(d, axis=1) / np.maximum(se, 1e-12)


def error_logits(E):
    return -rules.mean_errors(E)


def vote_logits(E):
    """Log of smoothed vote shares: the vote's own probability, scalable by a temperature."""
    v = rules.votes(E).astype(float) + 0.5
    return np.log(v / v.sum(1, keepdims=True))
