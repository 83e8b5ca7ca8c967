"""The glue the notebooks share: one call gives a task's settings, tensors and run folder, so that no
notebook repeats the loading, subsetting or path logic of another."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import profiles
from .classifier.engine import ScoringEngine, cache_dir_for
from .core.paths import runs_dir
from .data import preprocess
from .data.io import TaskData
from .data.tasks import load_task, task_source

# Where each artifact of a task's run lives, relative to its run folder. Notebooks ask for artifacts by name
# (`p.artifact("baseline_proba")`), so no notebook spells another notebook's paths.
ARTIFACTS = {
    "denoiser": "denoiser",  # the training run (checkpoints), notebook 02
    "denoiser_weights": "denoiser/final/ema",  # the EMA weights the classifier uses
    "baseline": "baseline",  # notebook 03's run folder
    "baseline_proba": "baseline/proba.npz",  # its softmax on val and test
    "score_cache": "scores",  # notebook 04's chunked score caches
    "scores": "scores_{split}.npz",  # E, U and labels of a split
    "sd_finetune": "sd-finetune",  # notebook 07
    "sd_scores": "sd-scores",
    "shift_run": "shift/trained_on_{source}_{steps}_steps",  # notebook 08 (the steps: a run of other length is another)
}


@dataclass
class Prepared:
    cfg: dict
    data: TaskData
    x: dict  # split -> float tensor (N, C, H, W) in [-1, 1]
    y: dict  # split -> int64 array (N,)
    run_dir: Path
    sources: dict  # split -> str array (N,) of per-image data sources, or None when the task has one source

    @property
    def class_names(self):
        return self.data.class_names

    def artifact(self, name: str, **fields) -> Path:
        """The path of a named artifact of this task's run (see ARTIFACTS), e.g. artifact("scores", split="val")."""
        if name == "denoiser_weights" and self.cfg["train"]["select_on"] == "val_f1":
            return self.run_dir / "denoiser" / "best" / "ema"  # the checkpoint chosen on validation F1 (training.BEST)
        return self.run_dir / ARTIFACTS[name].format(**fields)


def subset_indices(labels: np.ndarray, max_n: int | None, seed: int) -> np.ndarray:
    """At most max_n rows, the classes in their original proportions (at least one each), seeded; sorted."""
    if max_n is None or len(labels) <= max_n:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.maximum(1, np.round(counts / counts.sum() * max_n).astype(int))
    picks = [
        rng.choice(np.flatnonzero(labels == c), min(q, n), replace=False) for c, q, n in zip(classes, quota, counts)
    ]
    return np.sort(np.concatenate(picks))


# Settings added after run folders existed, at the value that behaves as before they existed: there they stay out of
# the key, so the run folders of existing configurations keep their names (tests/test_backbones.py checks them).
LATER_SETTINGS = {
    "data": {"wavelet": "none"},
    "diffusion": {"logsnr_clip": "unshifted", "time_input": "scaled"},
    "train": {"ema_every": 1, "select_on": "final", "select_every": None, "select_images": 256, "select_draws": 11},
}


def _keyed(name: str, section):
    later = LATER_SETTINGS.get(name, {})
    if not isinstance(section, dict):
        return section
    return {k: v for k, v in section.items() if not (k in later and v == later[k])}


def config_hash(cfg: dict, sections=("seed", "data", "diffusion", "unet", "train", "baseline", "data_seed")) -> str:
    key = {k: _keyed(k, cfg[k]) for k in sections if k in cfg}
    kind = cfg.get("model", {"kind": "unet"})["kind"]
    if kind != "unet":  # another backbone: its kind and its own section (the default UNet stays out, as before)
        key.update({"model": cfg["model"], kind: cfg[kind]})
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]


def prepare(
    task: str,
    profile: str = "cpu",
    data_root=None,
    seed: int = 0,
    overrides: dict | None = None,
    data_seed: int | None = None,
) -> Prepared:
    """A task's settings, tensors and run folder. `seed` seeds training (and, by default, the data: seeded splits and
    subsets); `data_seed` keeps the data of another seed, so that models of several training seeds are compared on
    the same images (it is then part of the run folder's key)."""
    cfg = profiles.get_profile(profile, task, {**(overrides or {}), "seed": seed})
    if data_seed is not None and data_seed != seed:
        cfg["data_seed"] = data_seed
    data_seed = seed if data_seed is None else data_seed
    res = cfg["data"]["resolution"]
    data = load_task(task, data_root, size=max(res, 64), seed=data_seed)
    x, y, sources = {}, {}, {}
    for split, s in data.splits.items():
        idx = subset_indices(s.labels, cfg["data"]["max_per_split"], data_seed)
        x[split] = preprocess.to_tensor(s.images[idx], res, name=f"{data.source} [{split}]")
        y[split] = s.labels[idx]
        sources[split] = None if s.sources is None else s.sources[idx]
    run = runs_dir() / profile / task / config_hash(cfg)
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps(cfg, indent=1))
    return Prepared(cfg, data, x, y, run, sources)


def available_tasks(tasks, data_root=None) -> tuple[list, list]:
    """Split the requested tasks into those whose data is present and those skipped (with the reason)."""
    ok, skipped = [], []
    for t in tasks:
        src = task_source(t, data_root)
        (ok if src.exists() else skipped).append(t if src.exists() else (t, f"{src} not found"))
    return ok, skipped


def setup(seed: int, tasks, data_root=None) -> tuple[list, Path]:
    """A notebook's setup in one call: seed numpy and torch, keep the tasks whose data is present (saying in the
    notebook which are skipped and why), and return (those tasks, the results tables folder)."""
    from .core.paths import results_dir

    seed_everything(seed)
    ok, skipped = available_tasks(tasks, data_root)
    if skipped:
        from IPython.display import Markdown, display

        for t, why in skipped:
            display(
                Markdown(f"**Skipped task `{t}`**: {why}. Place the data there (see data/README.md) to include it.")
            )
    return ok, results_dir() / "tables"


def seed_everything(seed: int):
    np.random.seed(seed)
    torch.manual_seed(seed)


def score_splits(p: Prepared, model, settings, splits=("val", "test"), desc: str = "score") -> dict:
    """{split: DrawErrors} of a prepared task's splits under `settings`, each cached in the run's score cache (keyed by
    the settings, the weights and the images, so a re-run reads what was scored)."""
    engine = ScoringEngine(model, settings)
    return {
        split: engine.score(
            p.x[split],
            model.n_classes,
            cache_dir_for(p.artifact("score_cache"), split, settings, model, p.x[split]),
            desc=f"{desc} {split}",
        )
        for split in splits
    }
