"""The claims page: one vocabulary, rules that follow the numbers, planted tables for every verdict."""

import re
from pathlib import Path

import pandas as pd
import pytest

from diffusion_classifier.evaluation import paired
from diffusion_classifier.evaluation.paired import INCONCLUSIVE, NOT_SUPPORTED, NOT_TESTABLE, SUPPORTED
from diffusion_classifier.report import claims

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "ci_low,ci_high,p,look,expected",
    [
        (0.01, 0.05, 0.01, 1, SUPPORTED),
        (0.002, 0.034, 0.052, 1, INCONCLUSIVE),  # the CI excludes 0 but McNemar does not: never "supported"
        (0.002, 0.034, 0.052, 3, INCONCLUSIVE),  # ... nor nominal at a later look
        (0.01, 0.05, 0.01, 3, "nominal (exploratory, look 3)"),  # a later look is at most nominal
        (-0.05, -0.01, 0.01, 1, NOT_SUPPORTED),  # significantly the other way
        (-0.05, -0.01, 0.2, 1, INCONCLUSIVE),  # ... by the CI only: the rule is symmetric
        (-0.05, -0.01, 0.01, 2, "nominal (exploratory, look 2)"),  # a later look either way: nominal
        (-0.01, 0.02, 0.4, 1, INCONCLUSIVE),
        (0.01, 0.05, None, 1, SUPPORTED),  # comparisons without a McNemar test: the CI alone
    ],
)
def test_superiority_needs_both_tests_at_the_prespecified_look(ci_low, ci_high, p, look, expected):
    """Mutations caught: McNemar ignored (0.052 -> supported), later looks allowed to be 'supported', the sign of the
    'not supported' branch reversed, an asymmetric rule."""
    assert paired.superiority(ci_low, ci_high, p, look) == expected


@pytest.mark.parametrize(
    "ci_low,ci_high,expected",
    [(-0.04, 0.01, SUPPORTED), (-0.12, -0.06, NOT_SUPPORTED), (-0.07, 0.0, INCONCLUSIVE), (-0.028, -0.006, SUPPORTED)],
)
def test_non_inferiority_reads_the_ci_against_the_margin(ci_low, ci_high, expected):
    """A significantly lower AUC within the margin is still non-inferior (the last case: pneumonia's)."""
    assert paired.non_inferiority(ci_low, ci_high, 0.05) == expected


def test_combined_is_unanimous_or_inconclusive():
    assert claims.combined([SUPPORTED, SUPPORTED]) == SUPPORTED
    assert claims.combined([SUPPORTED, INCONCLUSIVE]) == INCONCLUSIVE
    assert claims.combined([NOT_TESTABLE, NOT_SUPPORTED]) == NOT_SUPPORTED
    assert claims.combined([NOT_TESTABLE, NOT_TESTABLE]) == NOT_TESTABLE
    assert claims.combined([]) == NOT_TESTABLE


def _write(folder: Path, name: str, rows: list[dict]):
    (folder / "tables").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / "tables" / f"{name}.csv", index=False)


def _ci(name, v, lo, hi):
    return {name: v, f"{name}_ci_low": lo, f"{name}_ci_high": hi}


def _faith(task, judge, relation, fill, v, lo, hi, interpretable):
    return dict(
        task=task, section="faithfulness", measure="auc_minus_random", mode="deletion",
        method="diffusion error-difference", judge=judge, judge_relation=relation, fill=fill, value=v, ci_low=lo,
        ci_high=hi, interpretable=interpretable,
    )  # fmt: skip


N, RULES = {"a": 51, "b": 51}, {"a": "vote", "b": "vote"}


@pytest.fixture
def planted(tmp_path) -> Path:
    """Task 'a': claim 1 not testable (the ResNet at chance), claim 2 supported at N = 51 and nominal at N = 251,
    claim 3 supported (map deletes faster than random under both fills), claim 4 not supported (error-AUROC below
    chance). Task 'b': claim 1 not supported (CI below the margin), claim 2 not supported, claim 3 not testable
    (judge not interpretable), claim 4 inconclusive."""
    res = tmp_path / "results"
    ba = _ci("balanced_accuracy_diff", 0.0, -0.01, 0.01) | _ci("f1_diff", 0.0, -0.01, 0.01)
    _write(res, "diffusion_vs_baseline", [
        dict(task="a", source="all", a_auc_ci_low=0.8, b_auc_ci_low=0.45, **_ci("auc_diff", 0.1, 0.05, 0.15), **ba),
        dict(task="b", source="all", a_auc_ci_low=0.6, b_auc_ci_low=0.8, **_ci("auc_diff", -0.1, -0.14, -0.06), **ba),
    ])  # fmt: skip
    _write(res, "ablation_paired", [
        dict(task="a", source="all", n_draws=51, mcnemar_p=0.001, **_ci("accuracy_diff", 0.05, 0.02, 0.08)),
        dict(task="b", source="all", n_draws=51, mcnemar_p=0.001, **_ci("accuracy_diff", -0.05, -0.08, -0.02)),
    ])  # fmt: skip
    seed = dict(
        task="b",
        n_draws=51,
        rule="vote",
        vote_minus_mean_accuracy=0.0,
        vote_minus_mean_mcnemar_p=0.001,
        vote_minus_mean_accuracy_ci_low=-0.08,
        vote_minus_mean_accuracy_ci_high=-0.02,
        minus_resnet_auc=-0.1,
    )
    _write(res, "seed_runs", [  # task b: the headline run (seed 0, block 0) must not be counted as its own replicate
        seed | dict(variance_source="training", training_seed=0, draw_replicate=0, minus_resnet_auc_ci_low=-0.14,
                    minus_resnet_auc_ci_high=-0.06),
        seed | dict(variance_source="training", training_seed=1, draw_replicate=0, minus_resnet_auc_ci_low=-0.04,
                    minus_resnet_auc_ci_high=0.02),
        seed | dict(variance_source="training", training_seed=2, draw_replicate=0, minus_resnet_auc_ci_low=-0.14,
                    minus_resnet_auc_ci_high=-0.06),
        seed | dict(variance_source="training", training_seed=1, draw_replicate=0, minus_resnet_auc_ci_low=-0.14,
                    minus_resnet_auc_ci_high=-0.06, rule="mean"),  # another rule: not counted
        seed | dict(variance_source="draws", training_seed=0, draw_replicate=0, minus_resnet_auc_ci_low=-0.14,
                    minus_resnet_auc_ci_high=-0.06),
        seed | dict(variance_source="draws", training_seed=0, draw_replicate=1, minus_resnet_auc_ci_low=-0.14,
                    minus_resnet_auc_ci_high=-0.06),
    ])  # fmt: skip
    _write(res, "ablation_paired_large_n", [
        dict(task="a", source="all", n_draws=51, mcnemar_p=0.001, **_ci("accuracy_diff", 0.05, 0.02, 0.08)),
        dict(task="a", source="all", n_draws=101, mcnemar_p=0.2, **_ci("accuracy_diff", 0.01, -0.01, 0.03)),
        dict(task="a", source="all", n_draws=251, mcnemar_p=0.01, **_ci("accuracy_diff", 0.05, 0.02, 0.08)),
    ])  # fmt: skip
    _write(res, "explainability", [
        _faith("a", "resnet18", "other model", "grey", -0.2, -0.3, -0.1, True),
        _faith("a", "resnet18", "other model", "blur", -0.1, -0.2, -0.05, True),
        _faith("a", "diffusion", "own model", "blur", 0.5, 0.4, 0.6, True),  # own model: must not count
        _faith("b", "resnet18", "other model", "grey", -0.2, -0.3, -0.1, False),
    ])  # fmt: skip
    _write(res, "uncertainty_paired", [
        dict(task="b", **_ci("error_auroc_diff", -0.05, -0.1, 0.0), **_ci("e_aurc_diff", 0.03, 0.01, 0.05)),
    ])  # fmt: skip
    _write(res, "uncertainty", [
        dict(task="a", model="diffusion-unet", score="vote_fraction", ece=0.1, ece_calibrated=0.05,
             **_ci("error_auroc", 0.4, 0.35, 0.45)),
        dict(task="b", model="diffusion-unet", score="vote_fraction", ece=0.1, ece_calibrated=0.05,
             **_ci("error_auroc", 0.55, 0.45, 0.65)),
    ])  # fmt: skip
    return res


def test_planted_tables_give_every_verdict(planted):
    """Each claim's rule on planted tables: every word of the vocabulary appears where the numbers put it."""
    rows = {(r["claim"], r["task"]): r for r in claims.claims_table(planted, ["a", "b"], N, RULES)}
    assert rows[(1, "a")]["verdict"] == NOT_TESTABLE
    assert rows[(1, "b")]["verdict"] == NOT_SUPPORTED
    # replicates: seed 1 disagrees, seed 2 agrees; the headline rows and the other rule's row are not counted
    assert rows[(1, "b")]["agreement"] == "1 of 2 other training seeds; 1 of 1 other draw blocks"
    assert rows[(1, "b")]["lower_in"] == "1 of 2 other training seeds; 1 of 1 other draw blocks"
    assert rows[(2, "b")]["agreement"] == "2 of 2 other training seeds; 1 of 1 other draw blocks"
    assert rows[(2, "a")]["verdict"] == SUPPORTED
    assert [(n, v) for n, _, v, _ in rows[(2, "a")]["later_looks"]] == [
        (101, INCONCLUSIVE),
        (251, "nominal (exploratory, look 3)"),
    ]
    assert rows[(2, "b")]["verdict"] == NOT_SUPPORTED
    assert rows[(3, "a")]["verdict"] == SUPPORTED  # the own-model row (worse than random) is not counted
    assert rows[(3, "a")]["key"] == "grey: +0.200 (+0.100 to +0.300); blur: +0.100 (+0.050 to +0.200)"
    assert rows[(3, "b")]["verdict"] == NOT_TESTABLE
    assert rows[(4, "a")]["verdict"] == NOT_SUPPORTED
    assert rows[(4, "b")]["verdict"] == INCONCLUSIVE
    assert "E-AURC +0.030 (+0.010 to +0.050) (significantly worse" in rows[(4, "b")]["versus_resnet"]


def test_a_renamed_column_raises_instead_of_reading_not_testable(planted):
    """Only an absent table or row makes a claim "not testable"; a coding or schema error is not hidden."""
    path = planted / "tables" / "ablation_paired.csv"
    pd.read_csv(path).rename(columns={"mcnemar_p": "p_mcnemar"}).to_csv(path, index=False)
    with pytest.raises(AttributeError):
        claims.claims_table(planted, ["a", "b"], N, RULES)
    path.unlink()
    rows = {(r["claim"], r["task"]): r for r in claims.claims_table(planted, ["a", "b"], N, RULES)}
    assert rows[(2, "a")]["verdict"] == NOT_TESTABLE and "not computed" in rows[(2, "a")]["key"]


def test_planted_page_uses_only_the_vocabulary(planted):
    text = claims.page(planted, ["a", "b"], N, RULES, "provenance line")
    found = re.findall(r"^\| \d [^|]+\| \w+ \| \*\*([^*]+)\*\* \|", text, re.M)
    assert len(found) == 8
    assert set(found) == {SUPPORTED, NOT_SUPPORTED, NOT_TESTABLE, INCONCLUSIVE}


def verdict_words(summary: str) -> list[str]:
    return re.findall(r"^\| \d [^|]+\| \w+ \| \*\*([^*]+)\*\* \|", summary, re.M)


def test_committed_summary_opens_with_the_claims_in_the_vocabulary():
    """SUMMARY.md: the four-claim table within its first 3,000 characters, every verdict from the vocabulary, the
    whole page ≤ 12 KB (a summary that regrows, or a hand-typed verdict word, fails)."""
    text = (ROOT / "results" / "SUMMARY.md").read_text()
    assert len(text.encode()) <= 12_000
    table = text[: text.index("\n\n", text.index("| claim | task | verdict"))]
    assert text.index("| claim | task | verdict") < 3000 and len(table) > 0
    words = verdict_words(text)
    assert len(words) >= 8 and {int(d) for _, d in re.findall(r"^(\| )(\d) ", text, re.M)} == {1, 2, 3, 4}
    nominal = re.compile(r"nominal \(exploratory, look \d+\)")
    assert all(w in paired.VOCABULARY[:4] or nominal.fullmatch(w) for w in words)


def test_a_word_outside_the_vocabulary_is_caught():
    bad = "| 2 the vote beats the mean | pneumonia | **holds** | x | y | z |\n"
    assert verdict_words(bad) == ["holds"] and "holds" not in paired.VOCABULARY
