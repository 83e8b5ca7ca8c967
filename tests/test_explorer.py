"""The analysts' explorer: its package functions reproduce every row of the committed kinds of tables from the
stored scores, and in a real JupyterLab in headless Chromium a changed control changes the rendered table to the
value the package gives."""

import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import REAL_DATA

from diffusion_classifier import study
from diffusion_classifier.analyses import classification
from diffusion_classifier.explorer import queries, widget

ROOT = Path(__file__).resolve().parents[1]
TASK = "melanoma_balanced"  # two data sources: the per-source rows are reproduced too
CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.notebooks,
    pytest.mark.skipif(not (REAL_DATA / "isic_melanoma_64.npz").exists(), reason="shared data absent"),
]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """Notebooks 01-04 and 06 of the smoke profile for one task: stored scores and both tables."""
    root = tmp_path_factory.mktemp("explorer")
    env = {
        **os.environ,
        "DATA_ROOT": str(REAL_DATA),
        "DC_RESULTS_DIR": str(root / "results"),
        "DC_RUNS_DIR": str(root / "runs"),
        "DC_CACHE_DIR": str(root / "cache"),
    }
    for args in (["--to", "04"], ["--only", "06"]):
        r = subprocess.run(
            ["bash", str(ROOT / "run_all.sh"), "--profile", "smoke", "--tasks", TASK, *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return root


@pytest.fixture
def stored(smoke_run, monkeypatch):
    monkeypatch.setenv("DC_RUNS_DIR", str(smoke_run / "runs"))
    monkeypatch.setenv("DC_RESULTS_DIR", str(smoke_run / "results"))
    p = study.prepare(TASK, "smoke", REAL_DATA, 0)
    return queries.StoredRun.load(p), smoke_run / "results" / "tables"


def _same(expected: pd.Series, got: dict, columns):
    """To the last digit: the CSV's floats round-trip exactly. Every column must be in the result and a blank (NaN)
    cell must be blank there too, so a stub that returns {} (or a row of NaN) fails: 'the result lacks ...'."""
    columns = list(columns)
    assert columns, "nothing to compare"
    missing = [c for c in columns if c not in got]
    assert not missing, f"the result lacks {missing}"
    for c in columns:
        if pd.isna(expected[c]):
            assert pd.isna(got[c]), (c, got[c], "blank in the table")
        else:
            assert float(got[c]) == float(expected[c]), (c, got[c], expected[c])


def reproduce_classification(run, table: pd.DataFrame):
    """Every row of a classification.csv table from the explorer's functions; returns the kinds of rows seen."""
    n_boot = run.cfg["ablation"]["n_bootstrap"]
    metrics = [c for c in classification.COLUMNS if c not in ("task", "source", "model", "rule", "n_draws", "t_range")]
    kinds = set()
    for r in table.itertuples():
        row = pd.Series(r._asdict())
        if r.model == "resnet18":
            got = queries.classification_row(run, "resnet18", source=r.source, n_boot=n_boot)
        elif str(r.t_range).startswith("val-selected"):
            got = queries.classification_row(run, rule=r.rule, t_range=queries.VAL_SELECTED, n_boot=n_boot)
        elif r.t_range == classification.FULL_RANGE:
            got = queries.classification_row(run, rule=r.rule, n_draws=int(r.n_draws), source=r.source, n_boot=n_boot)
        else:
            got = queries.classification_row(run, rule=r.rule, t_range=r.t_range, n_boot=n_boot)
        _same(row, got, metrics)
        kinds.add((r.model, r.source != "all", str(r.t_range).split(" ")[0] if r.model != "resnet18" else ""))
    return kinds


def test_explorer_reproduces_every_row_of_classification_csv(stored):
    """Every metric column of every row, to the last digit. Catches: classification_row returning {} (or dropping a
    column, or blanking one) - _same requires each of the table's columns in the result."""
    run, tables = stored
    kinds = reproduce_classification(run, pd.read_csv(tables / "classification.csv"))
    # N rows, the three range rows, val-selected rows, per-source diffusion rows, ResNet rows overall and per source
    assert {
        ("diffusion-unet", False, classification.FULL_RANGE),
        ("diffusion-unet", False, "[0.33,0.67)"),
        ("diffusion-unet", False, "val-selected"),
        ("diffusion-unet", True, classification.FULL_RANGE),
        ("resnet18", False, ""),
        ("resnet18", True, ""),
    } <= kinds


UNCERTAINTY_KEYS = ("task", "model", "rule", "score")
PAIRED_KEYS = ("task", "source", "a", "b", "n_draws", "n_images")  # paired_row returns the differences only


def reproduce_uncertainty(run, u: pd.DataFrame):
    """Row by row, in order: the keys name the same (model, rule, score) and every value column of the CSV (not of
    the result: empty dicts from uncertainty_rows would compare nothing) is reproduced."""
    u = u[u.task == run.task]
    assert len(u)
    rows, _, _ = queries.uncertainty_rows(run, None, run.cfg["uncertainty"]["n_bootstrap"])
    assert len(rows) == len(u)
    for expected, got in zip(u.itertuples(), rows):
        expected = pd.Series(expected._asdict())
        assert [got.get(k) for k in UNCERTAINTY_KEYS] == [expected[k] for k in UNCERTAINTY_KEYS]
        _same(expected, got, [c for c in u.columns if c not in UNCERTAINTY_KEYS])


def test_explorer_reproduces_the_paired_early_stopping_and_uncertainty_rows(stored):
    """Catches: paired_row returning {} and uncertainty_rows returning empty dicts (or rows in another order) - the
    columns compared are the CSV's, each required in the result."""
    run, tables = stored
    n_boot = run.cfg["ablation"]["n_bootstrap"]
    paired = pd.read_csv(tables / "ablation_paired.csv")
    assert len(paired)
    for r in paired.itertuples():
        got = queries.paired_row(run, n_draws=int(r.n_draws), n_boot=n_boot)
        _same(pd.Series(r._asdict()), got, [c for c in paired.columns if c not in PAIRED_KEYS])
    for r in pd.read_csv(tables / "early_stopping.csv").itertuples():
        got = queries.early_stopping_row(run, None, float(r.alpha) if r.stopping == "sequential" else 0.0, r.split)
        for c in ("unet_evals_per_image", "speedup", "changed_vs_full_vote", "vote_accuracy"):
            assert round(float(got[c]), 4) == pytest.approx(float(getattr(r, c)), abs=1e-9), c  # the CSV is rounded
    reproduce_uncertainty(run, pd.read_csv(tables / "uncertainty.csv"))


COMMITTED = ROOT / "results" / "tables"


@pytest.mark.parametrize("task", ["pneumonia", TASK])
def test_explorer_reproduces_the_committed_cpu_tables(task, monkeypatch):
    """The committed cpu tables, from this checkout's stored scores (runs/cpu: only where the cpu study has run)."""
    monkeypatch.delenv("DC_RUNS_DIR", raising=False)
    try:
        p = study.prepare(task, "cpu", REAL_DATA, 0)
        run = queries.StoredRun.load(p)
    except FileNotFoundError:
        pytest.skip("no stored cpu scores in runs/ (run_all.sh has not run here)")
    table = pd.read_csv(COMMITTED / "classification.csv")
    assert len(reproduce_classification(run, table[table.task == task])) >= 4
    reproduce_uncertainty(run, pd.read_csv(COMMITTED / "uncertainty.csv"))


def test_view_changes_with_its_settings_and_matches_the_rows(stored):
    run, _ = stored
    s = queries.defaults(run)
    v = queries.view(run, **{**s, "n_boot": 0}).set_index("quantity")
    assert v.loc["diffusion auc", "value"] == queries.classification_row(run, rule=s["rule"], n_boot=0)["auc"]
    v1 = queries.view(run, **{**s, "n_boot": 0, "n_draws": 1}).set_index("quantity")
    assert v1.loc["diffusion unet_evals_per_image", "value"] == 2.0  # one draw, two classes
    assert v1.loc["resnet18 auc", "value"] == v.loc["resnet18 auc", "value"]  # the ResNet does not depend on N
    src = [x for x in run.test_sources() if x != "all"][0]
    vs = queries.view(run, **{**s, "n_boot": 0, "source": src}).set_index("quantity")
    assert (
        vs.loc["diffusion auc", "value"] == queries.classification_row(run, rule=s["rule"], source=src, n_boot=0)["auc"]
    )
    assert 'id="dc-explorer-table"' in widget.view_html(v.reset_index())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cell_value(page, quantity: str) -> str:
    return page.locator("#dc-explorer-table tr", has_text=quantity).first.locator("td").nth(1).inner_text().strip()


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (.ci/run installs it)")
def test_explorer_in_jupyterlab_in_headless_chromium(stored, tmp_path):
    """JupyterLab serves a copy of notebook 04 (parameters: this smoke run's task); Chromium runs it, the explorer
    renders live, a changed 'draws N' control re-renders the table, and the value equals the package's."""
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    run, _ = stored
    nb = json.loads((ROOT / "notebooks" / "04_classify.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    source = "".join(cell["source"])
    assert 'tasks = ["pneumonia", "melanoma_balanced"]' in source
    cell["source"] = source.replace('tasks = ["pneumonia", "melanoma_balanced"]', f'tasks = ["{TASK}"]')
    (tmp_path / "explore.ipynb").write_text(json.dumps(nb))
    # user settings of this lab only: render every cell (no windowing, so outputs below the fold are in the page)
    # and no news pop-up over the page
    settings = tmp_path / "lab-settings" / "@jupyterlab"
    for ext, name, value in (
        ("notebook-extension", "tracker", {"windowingMode": "none"}),
        ("apputils-extension", "notification", {"fetchNews": "false"}),
    ):
        (settings / ext).mkdir(parents=True, exist_ok=True)
        (settings / ext / f"{name}.jupyterlab-settings").write_text(json.dumps(value))
    port, token = _free_port(), "dc-test-token"
    env = {
        **os.environ,
        "DATA_ROOT": str(REAL_DATA),
        "DC_RESULTS_DIR": str(tmp_path / "results"),
        "DC_RUNS_DIR": os.environ["DC_RUNS_DIR"],
        "DC_STATIC_VIEWS": "",
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "ws"),
    }
    log = (tmp_path / "jupyter.log").open("w")
    server = subprocess.Popen(
        [
            str(ROOT / ".venv" / "bin" / "jupyter"),
            "lab",
            "--no-browser",
            "--allow-root",
            f"--port={port}",
            "--ServerApp.ip=127.0.0.1",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={tmp_path}",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(120):
            assert server.poll() is None, f"jupyter lab exited; see {tmp_path / 'jupyter.log'}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(CHROMIUM),
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                ],
            )
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.goto(f"http://127.0.0.1:{port}/lab/tree/explore.ipynb?token={token}", timeout=120_000)
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=120_000)
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)

            def run_all_cells():
                page.locator(".lm-MenuBar-item", has_text="Run").first.click()
                page.locator(".lm-Menu-item", has_text="Run All Cells").first.click()

            # a cell that has run, or is running, shows a number or * in its prompt
            ran = page.locator(".jp-CodeCell .jp-InputPrompt", has_text=re.compile(r"\[[0-9*]+\]"))
            run_all_cells()
            clicked = time.monotonic()
            # JupyterLab sometimes asks which kernel to use even though the notebook's own one has started (a race
            # of its session dialog): accept the preselected kernel (the notebook's) and run all cells again. And a
            # click on the menu can come before the menu acts on it (a CI run once ended with no cell run at all):
            # if no cell has started 30 s after a click, click again
            table, deadline = page.locator("#dc-explorer-table"), time.monotonic() + 300
            while not table.count() and time.monotonic() < deadline:
                accept = page.locator(".jp-Dialog .jp-mod-accept")
                if accept.count() and accept.first.is_visible():
                    accept.first.click()
                    page.wait_for_timeout(2000)
                    run_all_cells()
                    clicked = time.monotonic()
                elif not ran.count() and time.monotonic() - clicked > 30:
                    run_all_cells()
                    clicked = time.monotonic()
                page.wait_for_timeout(1000)
            if not table.count():
                page.screenshot(path=str(tmp_path / "failed.png"), full_page=True)
                errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
                raise AssertionError(
                    f"no explorer table ({ran.count()} code cells started; stderr: "
                    f"{errors.first.inner_text()[-500:] if errors.count() else 'none'}); screenshot "
                    f"{tmp_path / 'failed.png'}, server log {tmp_path / 'jupyter.log'}"
                )
            before = _cell_value(page, "diffusion auc")
            default = queries.classification_row(run, rule=run.cfg["decision"]["rule"], n_boot=0)["auc"]
            assert before == f"{default:.4f}"
            first_timing = page.locator("#dc-explorer-timing").inner_text()
            dropdown = page.locator(".widget-dropdown", has_text="draws N").locator("select")
            dropdown.select_option(label="3")
            expected = (
                f"{queries.classification_row(run, rule=run.cfg['decision']['rule'], n_draws=3, n_boot=0)['auc']:.4f}"
            )
            assert expected != before  # the control must change what is shown
            page.wait_for_function(
                "([q, v]) => [...document.querySelectorAll('#dc-explorer-table tr')].some("
                "tr => tr.cells[0] && tr.cells[0].innerText.trim() === q && tr.cells[1].innerText.trim() === v)",
                arg=["diffusion auc", expected],
                timeout=60_000,
            )
            page.wait_for_function(
                "t => document.querySelector('#dc-explorer-timing').innerText !== t", arg=first_timing, timeout=60_000
            )
            timing = page.locator("#dc-explorer-timing").inner_text()
            (tmp_path / "timing.txt").write_text(timing)  # first view, then the N change
            print(f"explorer in JupyterLab (smoke scores): first view {first_timing}; after the N change {timing}")
            page.locator(".widget-dropdown", has_text="draws N").scroll_into_view_if_needed()
            shot = os.environ.get("DC_EXPLORER_SCREENSHOT")
            page.screenshot(path=shot or str(tmp_path / "explorer.png"))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
