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
    for table in (
        "baseline",
        "explainability",
        "uncertainty",
        "ablation_paired",
        "diffusion_vs_baseline",
        "paper_comparison",
        "uncertainty_removal",
    ):
        assert len(pd.read_csv(res / "tables" / f"{table}.csv"))
    assert len(list((res / "figures").glob("*.png"))) >= 20
    text = (res / "SUMMARY.md").read_text()
    assert "profile **smoke**" in text and "figures/" in text and "## Verdicts (generated)" in text
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


def recompute_a_row_from_predictions(tables):
    """predictions.csv alone reproduces classification.csv: the headline vote row and a per-source ResNet row."""
    from diffusion_classifier.metrics import binary_metrics

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
