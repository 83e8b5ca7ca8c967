"""The stages' layering ([tool.importlinter] in pyproject.toml) holds, and the check can fail: an upward import planted
in a copy of the package (core importing an analysis) breaks the contract."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(src: Path, cwd: Path) -> subprocess.CompletedProcess:
    """lint-imports with the project's own contract, on the package under src (run from cwd, no cache written)."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [str(LINT), str(ROOT / "pyproject.toml"), "--no-cache"]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_the_stages_import_only_downwards(tmp_path):
    result = lint(ROOT / "src", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_a_planted_upward_import_breaks_the_layers(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "diffusion_classifier", src / "diffusion_classifier")
    paths = src / "diffusion_classifier" / "core" / "paths.py"
    paths.write_text(paths.read_text() + "\nfrom ..analyses import classification  # noqa: E402\n")
    result = lint(src, tmp_path)
    report = " ".join(result.stdout.split())  # the report wraps long lines
    assert result.returncode != 0 and "0 kept, 1 broken" in report
    assert "diffusion_classifier.core.paths -> diffusion_classifier.analyses.classification" in report
