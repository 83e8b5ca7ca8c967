"""The task registry: one `Task` per dataset (classes, source under the data root, reader, prompts, channels),
and `load_task`, the one call that reads a task's train/val/test splits.

Tasks
    pneumonia          PneumoniaMNIST npz (0 normal, 1 pneumonia); stands in for the paper's CheXpert
    melanoma           ISIC 2017 Task 3a, official folder layout (1 melanoma vs 0 nevus / seborrheic keratosis),
                       near-duplicate images dropped (the later of each pair, train < val < test)
    melanoma_balanced  ISIC 2017 + 2018, balanced, 64 px npz (closest to the authors' balanced ISIC set)
    dermamnist         DermaMNIST npz: melanoma (4) vs melanocytic nevus (5)
    isic2020           ISIC 2019/2020 layout: CSV `image_name,target` + JPEG folder, split 80/10/10 seeded
    chexpert           CheXpert-v1.0-small train.csv + images as the authors cut it: each patient's
                       study1/view1_frontal.jpg only, Pleural Effusion (1) vs No Finding (0), balanced,
                       split 80/10/10 by patient
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import DataError
from ..core.paths import data_root
from .io import TaskData, _require
from .readers import (
    drop_near_duplicates,
    fetch_medmnist,
    isic2017_near_duplicates,
    read_chexpert,
    read_isic2017,
    read_isic_csv,
    read_npz,
)

# ----------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Task:
    """One entry of the task registry: everything a task needs, in one place.

    read(source, size, seed, strict, download) -> (splits, notes), where source = data root / `source`."""

    classes: tuple
    source: str  # file or folder under the data root
    read: Callable[..., tuple[dict, dict]]
    prompts: tuple = ()  # one text prompt per class for the Stable Diffusion arm (empty: a generic template)
    channels: int = field(kw_only=True)  # image channels the reader returns (1 grey, 3 colour); required


def _read_medmnist(filename, label_map=None):
    def read(source, size, seed, strict, download):
        return read_npz(fetch_medmnist(filename, source.parent, download), 2, label_map=label_map), {}

    return read


def _read_isic2017(source, size, seed, strict, download):
    splits = read_isic2017(_require(source, "ISIC 2017 folder", "see data/README.md"), size, strict)
    return splits, {"near_duplicates_dropped": drop_near_duplicates(splits, isic2017_near_duplicates())}


def _read_isic2020(source, size, seed, strict, download):
    csv_path = next(iter(sorted(source.glob("*GroundTruth*.csv"))), source / "ISIC_2020_Training_GroundTruth.csv")
    image_dir = source / "train" if (source / "train").exists() else source
    return read_isic_csv(csv_path, image_dir, size, seed, strict), {}


def _read_chexpert(source, size, seed, strict, download):
    return read_chexpert(_require(source, "CheXpert folder", "see data/README.md"), size, seed=seed, strict=strict), {}


_SKIN = ("a dermoscopy image of a benign skin lesion", "a dermoscopy image of a melanoma")
# A new dataset is one entry here (and its tests).
TASKS: dict[str, Task] = {
    "pneumonia": Task(
        ("normal", "pneumonia"),
        "pneumoniamnist.npz",
        _read_medmnist("pneumoniamnist.npz"),
        ("a normal chest x-ray", "a chest x-ray with pneumonia"),
        channels=1,
    ),
    "melanoma": Task(("benign", "melanoma"), "isic2017", _read_isic2017, _SKIN, channels=3),
    "melanoma_balanced": Task(
        ("benign", "melanoma"), "isic_melanoma_64.npz", lambda source, *_: (read_npz(source, 2), {}), _SKIN, channels=3
    ),
    "dermamnist": Task(
        ("nevus", "melanoma"),
        "dermamnist.npz",
        _read_medmnist("dermamnist.npz", {5: 0, 4: 1}),
        ("a dermoscopy image of a melanocytic nevus", "a dermoscopy image of a melanoma"),
        channels=3,
    ),
    "isic2020": Task(("benign", "melanoma"), "isic2020", _read_isic2020, _SKIN, channels=3),
    "chexpert": Task(
        ("no finding", "pleural effusion"),
        "CheXpert-v1.0-small",
        _read_chexpert,
        ("a chest x-ray with no finding", "a chest x-ray with pleural effusion"),
        channels=1,
    ),
}


def check_task(task: str) -> str:
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    return task


def task_source(task: str, root=None) -> Path:
    """The file or folder a task reads, under the data root."""
    return data_root(root) / TASKS[check_task(task)].source


def load_task(
    task: str, root=None, size: int = 64, download: bool = True, seed: int = 0, strict: bool = False
) -> TaskData:
    """Load a task's train/val/test splits. `size` applies to folder layouts (decoded and cached once);
    npz layouts are returned at their stored size and resized by `preprocess`. `strict`: images in a folder that
    its ground truth does not list are an error, not a warning."""
    source = task_source(task, root)
    splits, notes = TASKS[task].read(source, size, seed, strict, download)
    return TaskData(task, list(TASKS[task].classes), splits, str(source), notes)


def summary_table(data: TaskData) -> list[dict]:
    """Rows (task, split, class, count) for results/tables/data_summary.csv, plus the near-duplicates a reader
    dropped from the split (official ISIC 2017) where it dropped any."""
    dropped = data.notes.get("near_duplicates_dropped", {})
    return [
        {
            "task": data.task,
            "split": split,
            "class": name,
            "label": c,
            "count": int(n),
            **({"near_duplicates_dropped_from_split": int(dropped.get(split, 0))} if dropped else {}),
        }
        for split, s in data.splits.items()
        for c, (name, n) in enumerate(zip(data.class_names, s.counts(data.n_classes)))
    ]
