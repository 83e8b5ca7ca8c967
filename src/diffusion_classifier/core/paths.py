"""Where things live. Every location can be overridden by an environment variable so that
notebooks run by papermill (whose working directory is notebooks/) and the CLI agree."""

import os
from pathlib import Path


def project_root() -> Path:
    """The checkout holding pyproject.toml (the package is installed editable), else the working directory."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").exists() and (parent / "src" / "diffusion_classifier").exists():
            return parent
    return Path.cwd()


def data_root(root=None) -> Path:
    """Data root: the argument, else $DATA_ROOT, else ../shared/data beside the checkout, else data/."""
    if root:
        return Path(root).expanduser().resolve()
    if os.environ.get("DATA_ROOT"):
        return Path(os.environ["DATA_ROOT"]).expanduser().resolve()
    shared = project_root().parent / "shared" / "data"
    return shared if shared.exists() else project_root() / "data"


def cache_dir() -> Path:
    """Decoded-image caches ($DC_CACHE_DIR, default data/cache, git-ignored)."""
    path = Path(os.environ.get("DC_CACHE_DIR", project_root() / "data" / "cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def runs_dir() -> Path:
    """Checkpoints and score tensors ($DC_RUNS_DIR, default runs/, git-ignored)."""
    path = Path(os.environ.get("DC_RUNS_DIR", project_root() / "runs"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def results_dir() -> Path:
    """Committed results ($DC_RESULTS_DIR, default results/)."""
    path = Path(os.environ.get("DC_RESULTS_DIR", project_root() / "results"))
    for sub in ("tables", "figures", "notebooks", "benchmarks"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path
