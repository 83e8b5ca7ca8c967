"""Every numbered notebook runs end to end through run_all.sh (papermill) at the smoke profile, the Stable
Diffusion arm included (on a tiny random pipeline), and a failing notebook stops the run with its name."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REAL_DATA
from tiny_sd import build_tiny_sd

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.notebooks


def run_all(tmp_path, *args, **env):
    full_env = {
        **os.environ,
        "DATA_ROOT": str(REAL_DATA),
        "DC_RESULTS_DIR": str(tmp_path / "results"),
        "DC_RUNS_DIR": str(tmp_path / "runs"),
        **env,
    }
    return subprocess.run(
        ["bash", str(ROOT / "run_all.sh"), *args], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=1800
    )


@pytest.mark.skipif(not (REAL_DATA / "pneumoniamnist.npz").exists(), reason="shared data absent")
def test_smoke_profile_runs_every_notebook(tmp_path):
    sd = build_tiny_sd(tmp_path / "tiny-sd")
    r = run_all(tmp_path, "--profile", "smoke", SD_WEIGHTS=str(sd))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = tmp_path / "results"
    # the default run: every numbered notebook before 08 (08 and later are extra evidence, run with --extra)
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb") if p.stem < "08")
    assert sorted(p.stem for p in (res / "notebooks").glob("*.ipynb")) == notebooks
    prov = json.loads((res / "provenance.json").read_text())
    assert prov["profile"] == "smoke" and [n["name"] for n in prov["notebooks"]] == notebooks
    assert prov["git"]["commit"] and prov["environment"]["packages"]["torch"]
    summary = pd.read_csv(res / "tables" / "data_summary.csv")
    counts = summary.set_index(["task", "split", "class"])["count"]
    assert counts["pneumonia", "test", "pneumonia"] == 390 and counts["melanoma_balanced", "train", "melanoma"] == 812
    cls = pd.read_csv(res / "tables" / "classification.csv")
    assert {"diffusion-unet", "resnet18"} <= set(cls.model) and {"mean", "vote"} <= set(cls.rule)
    sd_table = pd.read_csv(res / "tables" / "foundation_classification.csv")
    assert {"stable-diffusion", "stable-diffusion-finetuned"} == set(sd_table.model)
    recompute_a_row_from_predictions(res / "tables")
    check_result_tables(res / "tables", ["pneumonia", "melanoma_balanced"], "smoke")
    assert len(list((res / "figures").glob("*.png"))) >= 20
    text = (res / "SUMMARY.md").read_text()
    assert text.index("| claim | task | verdict") < 3000 and "profile **smoke**" in text
    assert "figures/claims.png" in text
    assert (res / "figures" / "claims.png").exists() and "## Verdicts (generated)" in (res / "DETAILS.md").read_text()
    # a notebook re-run alone rewrites its own tables only, and keeps the other notebooks' provenance records
    before = {p.name: p.read_bytes() for p in (res / "tables").glob("*.csv")}
    r = run_all(tmp_path, "--profile", "smoke", "--only", "04", SD_WEIGHTS=str(sd))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    after = {p.name: p.read_bytes() for p in (res / "tables").glob("*.csv")}
    own = {
        "classification.csv",
        "ablation_paired.csv",
        "diffusion_vs_baseline.csv",
        "predictions.csv",
        "paper_comparison.csv",
        "early_stopping.csv",
    }
    assert after.keys() == before.keys()
    assert all(after[n] == before[n] for n in after if n not in own)
    assert all(after[n] == before[n] for n in own)  # same seed, same cached scores: byte-identical
    assert [n["name"] for n in json.loads((res / "provenance.json").read_text())["notebooks"]] == notebooks


@pytest.mark.skipif(not (REAL_DATA / "isic_melanoma_64.npz").exists(), reason="shared data absent")
def test_extra_shift_notebook_runs_alone_after_the_default_run(tmp_path):
    r = run_all(tmp_path, "--profile", "smoke", "--tasks", "melanoma_balanced", "--to", "04")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    r = run_all(tmp_path, "--profile", "smoke", "--tasks", "melanoma_balanced", "--only", "08")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    shift = pd.read_csv(tmp_path / "results" / "tables" / "shift_test.csv")
    assert set(shift.measure) == {"auc", "auc_drop", "drop_difference"}
    # the 2 x 2 design: each source's test images, each with the in-source and the cross-source models of both families
    assert sorted(shift.target_source.unique()) == ["isic2017", "isic2018"]
    assert (shift.groupby("target_source").size() == 7).all()
    prov = json.loads((tmp_path / "results" / "provenance.json").read_text())
    assert [n["name"] for n in prov["notebooks"]] == [
        "01_data",
        "02_train_diffusion",
        "03_baseline",
        "04_classify",
        "08_shift",
    ]


@pytest.mark.skipif(not (REAL_DATA / "pneumoniamnist.npz").exists(), reason="shared data absent")
def test_extra_seeds_notebook_extends_the_main_draws_and_trains_new_seeds(tmp_path):
    for step in (["--to", "04"], ["--only", "09"]):
        r = run_all(tmp_path, "--profile", "smoke", "--tasks", "pneumonia", *step)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    tables = tmp_path / "results" / "tables"
    main, large = pd.read_csv(tables / "classification.csv"), pd.read_csv(tables / "classification_large_n.csv")
    key = ["model", "rule", "n_draws"]
    both = main[main.t_range == "[0.00,1.00)"].merge(large, on=key, suffixes=("_04", "_09"))
    assert len(both) >= 4  # N = 1, 3, 11 for both rules: the long sequence starts with notebook 04's draws
    np.testing.assert_allclose(both.accuracy_04, both.accuracy_09)
    np.testing.assert_allclose(both.auc_04, both.auc_09)
    runs = pd.read_csv(tables / "seed_runs.csv")
    assert sorted(runs.variance_source.unique()) == ["draws", "training"]
    assert len(runs[runs.variance_source == "draws"]) == 2 and sorted(runs.training_seed.unique()) == [0, 1]
    # the two training seeds are different models: their AUCs differ
    t = runs[runs.variance_source == "training"].set_index("training_seed")
    assert t.loc[0, "auc"] != t.loc[1, "auc"] and t.loc[0, "resnet_auc"] != t.loc[1, "resnet_auc"]
    assert (tables / "seed_spread.csv").exists()
    stop = pd.read_csv(tables / "early_stopping_large_n.csv")
    assert (stop.n_draws > 11).all() and (stop.unet_evals_per_image <= stop.full_evals_per_image).all()
    cal = pd.read_csv(tables / "early_stopping_calibration.csv")
    assert set(cal.split) == {"val", "test", "test_fresh_draws"} and set(cal.n_draws) == set(stop.n_draws)
    # the confirmatory rows read other draws of the same test images: same cap, same alpha, their own votes
    assert stop.draws.nunique() == 2 and stop.alpha_cap.nunique() == 1
    per_split = cal.set_index(["split", "n_draws", "alpha"]).fraction_of_full_mean_over_orders
    assert not np.allclose(per_split["test_fresh_draws"], per_split["test"])


@pytest.mark.skipif(not (REAL_DATA / "isic2017").exists(), reason="shared data absent")
def test_official_isic2017_runs_with_near_duplicates_dropped(tmp_path):
    r = run_all(tmp_path, "--profile", "smoke", "--tasks", "melanoma", "--to", "04")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = pd.read_csv(tmp_path / "results" / "tables" / "data_summary.csv")
    dropped = summary.groupby("split").near_duplicates_dropped_from_split.first()
    assert dropped.to_dict() == {"test": 17, "train": 10, "val": 2}
    assert len(pd.read_csv(tmp_path / "results" / "tables" / "classification.csv"))


def test_a_failing_notebook_stops_the_run_with_its_name(tmp_path):
    r = run_all(tmp_path, "--profile", "smoke", "--tasks", "no_such_task", "--only", "01")
    assert r.returncode != 0
    assert "FAILED: notebook notebooks/01_data.ipynb" in r.stderr
    assert "unknown task 'no_such_task'" in r.stderr


def _close(a, b, what):
    assert a == pytest.approx(b, abs=1e-9, nan_ok=True), what


def _in_unit_interval(values, what):
    v = pd.to_numeric(pd.Series(values), errors="raise").dropna()
    assert ((v >= 0) & (v <= 1)).all(), (what, v[(v < 0) | (v > 1)].tolist()[:5])


def _cis_ordered(table: pd.DataFrame, what):
    """Every (m, m_ci_low, m_ci_high) column triple: low <= high wherever both are given."""
    for c in table.columns:
        if c.endswith("_ci_low") and c.replace("_ci_low", "_ci_high") in table:
            lo, hi = table[c], table[c.replace("_ci_low", "_ci_high")]
            both = lo.notna() & hi.notna()
            assert (lo[both] <= hi[both] + 1e-12).all(), (what, c)


def check_result_tables(tables, tasks, profile):
    """What the seven result tables of notebooks 03-06 must hold for a default run, beyond being non-empty: their
    columns, a row for every task (and rule, score, N or source), values in range, and agreement with
    classification.csv (and with each other) to the last digit where one is read off the other. No accuracy
    threshold: smoke models are near chance. Catches: a stub table with the right name and any one row, a table
    written for one task only, a swapped or missing model or rule, a paired difference of the wrong sign, and an
    uncertainty or removal table that does not follow from the same predictions."""
    from diffusion_classifier import profiles
    from diffusion_classifier.analyses import classification, reference, uncertainty
    from diffusion_classifier.classifier.confidence import RULE_SCORES
    from diffusion_classifier.data.tasks import TASKS
    from diffusion_classifier.evaluation import calibration

    read = {t: pd.read_csv(tables / f"{t}.csv") for t in (
        "classification", "baseline", "explainability", "uncertainty", "ablation_paired", "diffusion_vs_baseline",
        "paper_comparison", "uncertainty_removal",
    )}  # fmt: skip
    metrics = [f"{m}{s}" for m in ("accuracy", "balanced_accuracy", "auc", "f1") for s in ("", "_ci_low", "_ci_high")]
    diffs = [
        f"{m}_diff{s}" for m in ("accuracy", "balanced_accuracy", "auc", "f1") for s in ("", "_ci_low", "_ci_high")
    ]
    columns = {
        "classification": classification.COLUMNS,
        "baseline": ["task", "model", "epochs_run", "selected_epoch", "sensitivity", "specificity", *metrics],
        "explainability": ["task", "section", "method", "judge", "fill", "mode", "measure", "value", "ci_low"]
        + ["ci_high", "n_images", "interpretable"],
        "uncertainty": uncertainty.TABLE_COLUMNS,
        "ablation_paired": [*classification.PAIRED_COLUMNS, "source", "a", "b", "n_images", *diffs],
        "diffusion_vs_baseline": ["task", "source", "a", "b", "n_images", "a_auc_ci_low", "b_auc_ci_low", *diffs]
        + ["only_a_right", "only_b_right", "mcnemar_p"],
        "paper_comparison": ["source", "data", "model", "accuracy", "f1", "auc", "balanced_accuracy"],
        "uncertainty_removal": ["task", "model", "score", "removed", "accuracy"],
    }
    for name, t in read.items():
        missing = [c for c in columns[name] if c not in t.columns]
        assert not missing, (name, "lacks", missing)
        assert len(t) and sorted(t.task.unique() if "task" in t else tasks) == sorted(tasks), name
    cls = read["classification"]
    for task in tasks:
        cfg = profiles.get_profile(profile, task)
        rule, n_max = cfg["decision"]["rule"], cfg["scoring"]["n_draws"]
        c = cls[(cls.task == task) & cls.t_range.fillna("").isin([classification.FULL_RANGE, ""])]
        diffusion = c[(c.model == "diffusion-unet") & (c.source == "all")].set_index(["rule", "n_draws"])
        resnet = c[c.model == "resnet18"].set_index("source")

        # baseline.csv (notebook 03): the ResNet's test metrics, the same as classification.csv's ResNet row
        b = read["baseline"][read["baseline"].task == task]
        assert len(b) == 1 and b.model.iloc[0] == "resnet18", task
        assert 1 <= b.selected_epoch.iloc[0] <= b.epochs_run.iloc[0], task
        for m in ("accuracy", "balanced_accuracy", "auc", "f1", "sensitivity", "specificity"):
            _in_unit_interval(b[[m, f"{m}_ci_low", f"{m}_ci_high"]].to_numpy().ravel(), ("baseline", m))
            _close(b[m].iloc[0], resnet.loc["all", m], ("baseline vs classification", task, m))
        _cis_ordered(b, "baseline")

        # ablation_paired.csv: vote - mean at every N of the ablation, overall; the accuracy difference is the
        # difference of classification.csv's two rows at that N
        pr = read["ablation_paired"][read["ablation_paired"].task == task]
        assert sorted(pr.n_draws) == sorted(cfg["ablation"]["n_draws"]) and (pr.source == "all").all(), task
        for r in pr.itertuples():
            assert (r.a, r.b) == (f"vote N={r.n_draws}", f"mean N={r.n_draws}"), (task, r.a, r.b)
            vote, mean = diffusion.loc[("vote", r.n_draws)], diffusion.loc[("mean", r.n_draws)]
            _close(r.accuracy_diff, vote.accuracy - mean.accuracy, ("paired accuracy_diff", task, r.n_draws))
            assert r.n_images == vote.n_images and 0 <= r.mcnemar_p <= 1, task
            assert r.only_a_right >= 0 and r.only_b_right >= 0 and r.only_a_right + r.only_b_right <= r.n_images
            # McNemar's discordant counts are the accuracy difference
            _close((r.only_a_right - r.only_b_right) / r.n_images, r.accuracy_diff, ("discordant", task, r.n_draws))
        one = pr[pr.n_draws == 1]  # one draw: the vote is the mean rule
        assert (one.accuracy_diff == 0).all() and (one.only_a_right + one.only_b_right == 0).all(), task
        _cis_ordered(pr, "ablation_paired")

        # diffusion_vs_baseline.csv: the headline rule at N_max - ResNet-18, overall and per data source
        vb = read["diffusion_vs_baseline"][read["diffusion_vs_baseline"].task == task]
        assert sorted(vb.source) == sorted(c.source.unique()) and "all" in set(vb.source), task
        for r in vb.itertuples():
            d = c[(c.model == "diffusion-unet") & (c.source == r.source) & (c.rule == rule) & (c.n_draws == n_max)]
            assert len(d) == 1 and (r.a, r.b) == (f"diffusion-unet {rule} N={n_max}", "resnet18"), (task, r.a)
            _close(r.accuracy_diff, d.accuracy.iloc[0] - resnet.loc[r.source, "accuracy"], ("vs baseline", r.source))
            _close(r.auc_diff, d.auc.iloc[0] - resnet.loc[r.source, "auc"], ("vs baseline auc", task, r.source))
            _close(r.a_auc_ci_low, d.auc_ci_low.iloc[0], ("a_auc_ci_low", task, r.source))
            _close(r.b_auc_ci_low, resnet.loc[r.source, "auc_ci_low"], ("b_auc_ci_low", task, r.source))
            assert r.n_images == d.n_images.iloc[0] and 0 <= r.mcnemar_p <= 1, task
        _cis_ordered(vb, "diffusion_vs_baseline")

        # uncertainty.csv: every rule's scores and the ResNet's, in order; accuracies are classification.csv's;
        # calibration columns only for the scores that are confidences
        u = read["uncertainty"][read["uncertainty"].task == task]
        expected = [("diffusion-unet", r, sc) for r, scores in RULE_SCORES.items() for sc in scores]
        expected += [("resnet18", "softmax", "max_softmax"), ("resnet18", "softmax", "predictive_entropy")]
        assert list(zip(u.model, u.rule, u.score)) == expected, task
        assert set(uncertainty.TABLE_COLUMNS) <= set(u.columns)
        for r in u.itertuples():
            acc = resnet.loc["all", "accuracy"] if r.model == "resnet18" else diffusion.loc[(r.rule, n_max), "accuracy"]
            _close(r.accuracy, acc, ("uncertainty accuracy", task, r.score))
            confidence = r.score in ("vote_fraction", "error_softmax", "max_softmax")
            for col in ("ece", "ece_calibrated", "brier", "brier_calibrated"):
                assert pd.isna(getattr(r, col)) != confidence, (task, r.score, col)
        cols = [c for c in u.columns if c.startswith(("accuracy", "error_auroc", "aurc", "acc_at", "ece", "brier"))]
        for col in cols:
            _in_unit_interval(u[col], ("uncertainty", col))
        _cis_ordered(u, "uncertainty")

        # uncertainty_removal.csv: the paper's curve for the vote share and the ResNet's max softmax, read off the
        # same predictions: nothing removed is the accuracy, 20 % removed is the accuracy at 80 % coverage
        rm = read["uncertainty_removal"][read["uncertainty_removal"].task == task]
        for key in (("diffusion-unet", "vote_fraction"), ("resnet18", "max_softmax")):
            curve = rm[(rm.model == key[0]) & (rm.score == key[1])].set_index("removed").accuracy
            np.testing.assert_allclose(curve.index, calibration.REMOVAL_FRACTIONS, atol=1e-9)
            _in_unit_interval(curve, ("removal", key))
            row = u[(u.model == key[0]) & (u.score == key[1])].iloc[0]
            _close(curve.iloc[0], row.accuracy, ("removal at 0", task, key))
            _close(curve.loc[curve.index[np.isclose(curve.index, 0.2)][0]], row.acc_at_80_coverage, ("at 0.2", key))
        assert len(rm) == 2 * len(calibration.REMOVAL_FRACTIONS), task

        # explainability.csv (notebook 05): every section, both maps and the random control in both modes, rates
        # and correlations in range, and a counterfactual flip and keep rate towards every class
        e = read["explainability"][read["explainability"].task == task]
        assert {"faithfulness", "randomisation", "counterfactual", "test_retest"} <= set(e.section), task
        f = e[e.section == "faithfulness"]
        assert {"diffusion error-difference", "Grad-CAM (ResNet-18)", "random"} <= set(f.method), task
        assert {"deletion", "insertion"} <= set(f["mode"].dropna()) and f.fill.notna().all(), task
        assert f.interpretable.isin([True, False, "True", "False"]).all(), task
        assert (e.n_images >= 0).all(), task
        _cis_ordered(e, "explainability")
        corr = e[e.measure.str.startswith("spearman")]
        assert len(corr) and (corr.value.dropna().abs() <= 1 + 1e-9).all(), task
        cf = e[e.section == "counterfactual"]
        for name in TASKS[task].classes:
            for kind in ("flip_rate", "keep_rate"):
                rates = cf[cf.measure == f"{kind}_to_{name}"]
                assert len(rates) >= 1, (task, kind, name)
                _in_unit_interval(rates.value, ("counterfactual", task, kind, name))

    # paper_comparison.csv: the paper's table as transcribed, then per task our headline rule at N_max and the
    # ResNet, with classification.csv's numbers
    pc = read["paper_comparison"]
    paper = pc[pc.source == "paper"].reset_index(drop=True)
    pd.testing.assert_frame_equal(paper[["source", "data", "model", "accuracy", "f1"]], reference.paper_rows())
    ours = pc[pc.source == "this study"]
    assert len(pc) == len(paper) + len(ours) and len(ours) == 2 * len(tasks)
    for task in tasks:
        cfg = profiles.get_profile(profile, task)
        rule, n_max = cfg["decision"]["rule"], cfg["scoring"]["n_draws"]
        rows = ours[ours.data.str.startswith(f"{task}, ")].set_index("model")
        headline = cls[
            (cls.task == task) & (cls.source == "all") & (cls.model == "diffusion-unet") & (cls.rule == rule)
            & (cls.n_draws == n_max) & (cls.t_range == classification.FULL_RANGE)
        ].iloc[0]  # fmt: skip
        base = cls[(cls.task == task) & (cls.source == "all") & (cls.model == "resnet18")].iloc[0]
        for model, expected in (
            (f"diffusion-unet ({rule}, N = {n_max})", headline),
            ("ResNet-18 (from scratch)", base),
        ):
            for m in ("accuracy", "f1", "auc", "balanced_accuracy"):
                _close(rows.loc[model, m], expected[m], ("paper_comparison", task, model, m))


def recompute_a_row_from_predictions(tables):
    """predictions.csv alone reproduces classification.csv: the headline vote row and a per-source ResNet row."""
    from diffusion_classifier.evaluation.metrics import binary_metrics

    preds, cls = pd.read_csv(tables / "predictions.csv"), pd.read_csv(tables / "classification.csv")
    for task, source, model, rule, n in (
        ("pneumonia", "all", "diffusion-unet", "vote", cls.n_draws.max()),
        ("melanoma_balanced", "isic2018", "resnet18", "softmax", 0),
    ):
        p = preds[
            (preds.task == task)
            & (preds.split == "test")
            & (preds.model == model)
            & (preds.rule == rule)
            & (preds.n_draws == n)
        ]
        if source != "all":
            p = p[p.source == source]
        m = binary_metrics(p.label.to_numpy(), p.prediction.to_numpy(), p.score.to_numpy())
        row = cls[
            (cls.task == task)
            & (cls.source == source)
            & (cls.model == model)
            & (cls.rule == rule)
            & (cls.n_draws == n)
            & cls.t_range.fillna("").isin(["[0.00,1.00)", ""])
        ].iloc[0]
        for k in ("auc", "accuracy", "balanced_accuracy", "f1"):
            assert m[k] == pytest.approx(row[k], abs=1e-9), (task, k)


@pytest.mark.skipif(not (REAL_DATA / "pneumoniamnist.npz").exists(), reason="shared data absent")
def test_extra_backbones_notebook_scores_a_dit_on_the_unets_draws(tmp_path):
    for step in (["--to", "04"], ["--only", "10"]):
        r = run_all(tmp_path, "--profile", "smoke", "--tasks", "pneumonia", *step)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    tables = tmp_path / "results" / "tables"
    models = pd.read_csv(tables / "backbones.csv")
    assert list(models.model) == ["diffusion-unet", "diffusion-dit", "resnet18"]
    main = pd.read_csv(tables / "classification.csv")
    unet = main[(main.model == "diffusion-unet") & (main.rule == "vote") & (main.t_range == "[0.00,1.00)")]
    # the UNet's row is notebook 04's headline, read back from its stored errors
    assert models.auc[0] == pytest.approx(unet[unet.n_draws == unet.n_draws.max()].auc.iloc[0])
    pairs = pd.read_csv(tables / "backbones_paired.csv")
    assert {("diffusion-unet", "diffusion-dit"), ("diffusion-dit", "resnet18")} <= set(zip(pairs.a, pairs.b))
    assert set(pd.read_csv(tables / "classification_backbones.csv").model) == {"diffusion-dit"}
    unc = pd.read_csv(tables / "uncertainty_backbones.csv")
    assert set(unc.model) == {"diffusion-unet", "diffusion-dit", "resnet18"} and (unc.model == "resnet18").sum() == 2
    # the DiT has its own run folder beside the UNet's
    runs = list((tmp_path / "runs" / "smoke" / "pneumonia").iterdir())
    assert len(runs) == 2
