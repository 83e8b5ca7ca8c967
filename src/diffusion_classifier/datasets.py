"""Readers for the tasks of the study. Every reader returns a `TaskData`: per split, uint8 images
(N, H, W, C) and int64 labels, plus the class names. Every malformed input raises `DataError` with a
one-line message naming the file and the problem (never a traceback from deep inside numpy or PIL).

Tasks
    pneumonia          PneumoniaMNIST npz (0 normal, 1 pneumonia); stands in for the paper's CheXpert
    melanoma           ISIC 2017 Task 3a, official folder layout (1 melanoma vs 0 nevus / seborrheic keratosis)
    melanoma_balanced  ISIC 2017 + 2018, balanced, 64 px npz (closest to the authors' balanced ISIC set)
    dermamnist         DermaMNIST npz: melanoma (4) vs melanocytic nevus (5)
    isic2020           ISIC 2019/2020 layout: CSV `image_name,target` + JPEG folder, split 80/10/10 seeded
    chexpert           CheXpert CSV + images, one finding (default Pleural Effusion), frontal views
"""
from __future__ import annotations

import csv
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from .errors import DataError
from .paths import cache_dir, data_root

SPLITS = ("train", "val", "test")
# Bump when decoding/resizing of folder layouts changes, so stale caches are never reused.
CACHE_VERSION = 1

# Official MedMNIST v2 files (28 px): zenodo record 10519652, md5 from medmnist's INFO table.
MEDMNIST_FILES = {
    "pneumoniamnist.npz": ("https://zenodo.org/records/10519652/files/pneumoniamnist.npz?download=1",
                           "md5:28209eda62fecd6e6a2d98b1501bb15f"),
    "dermamnist.npz": ("https://zenodo.org/records/10519652/files/dermamnist.npz?download=1",
                       "md5:0744692d530f8e62ec473284d019b0c7"),
}


@dataclass
class Split:
    images: np.ndarray  # uint8 (N, H, W, C)
    labels: np.ndarray  # int64 (N,)
    ids: np.ndarray | None = None
    sources: np.ndarray | None = None  # per-image data source (e.g. isic2017 / isic2018), for per-source results

    def __len__(self):
        return len(self.labels)

    def counts(self, n_classes: int) -> np.ndarray:
        return np.bincount(self.labels, minlength=n_classes)


@dataclass
class TaskData:
    task: str
    class_names: list[str]
    splits: dict[str, Split]
    source: str
    notes: dict = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return self.splits["train"].images.shape[-1]


# ----------------------------------------------------------------------------- checks

def _check_split(images, labels, n_classes, path, split) -> Split:
    """Validate one split and normalise it to images (N, H, W, C) uint8 and labels (N,) int64."""
    name = f"{path} [{split}]"
    if images.dtype != np.uint8:
        raise DataError(f"{name}: images must be uint8, got {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise DataError(f"{name}: images must have shape (N, H, W) or (N, H, W, 1|3), got {images.shape}")
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(f"{name}: labels must have shape (N,) or (N, 1), got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        if np.issubdtype(labels.dtype, np.floating) and np.all(np.isfinite(labels)) and np.all(labels == np.round(labels)):
            labels = labels.astype(np.int64)
        else:
            raise DataError(f"{name}: labels must be integers, got {labels.dtype}")
    if len(images) == 0:
        raise DataError(f"{name}: split is empty")
    if len(images) != len(labels):
        raise DataError(f"{name}: {len(images)} images but {len(labels)} labels")
    bad = (labels < 0) | (labels >= n_classes)
    if bad.any():
        raise DataError(f"{name}: labels out of range [0, {n_classes - 1}]: found {sorted(set(labels[bad].tolist()))[:5]}")
    return Split(np.ascontiguousarray(images), labels.astype(np.int64))


def _require(path: Path, what: str, hint: str = "") -> Path:
    if not path.exists():
        raise DataError(f"{path}: missing {what}{'; ' + hint if hint else ''}")
    return path


# ----------------------------------------------------------------------------- npz (MedMNIST layout)

def fetch_medmnist(filename: str, root: Path, download: bool = True) -> Path:
    """Return root/filename; if it is absent and `download`, fetch the official file (md5 checked) with pooch."""
    path = root / filename
    if path.exists():
        return path
    hint = f"place the official MedMNIST file {filename} there (DATA_ROOT={root})"
    if filename in MEDMNIST_FILES and download:
        import pooch

        url, known_hash = MEDMNIST_FILES[filename]
        try:
            root.mkdir(parents=True, exist_ok=True)
            return Path(pooch.retrieve(url, known_hash, fname=filename, path=root, progressbar=True,
                                       downloader=pooch.HTTPDownloader(timeout=30)))
        except Exception as exc:  # no internet, read-only root, bad hash: all end in the same advice
            raise DataError(f"{path}: missing and could not be downloaded ({type(exc).__name__}); {hint}") from None
    raise DataError(f"{path}: missing; {hint}")


def read_npz(path: Path, n_classes: int, label_map: dict[int, int] | None = None) -> dict[str, Split]:
    """Read a MedMNIST-layout npz (`{split}_images`, `{split}_labels`). `label_map` keeps and renumbers labels."""
    path = Path(path)
    _require(path, "npz file")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a readable npz file (truncated or corrupt: {exc})") from None
    splits = {}
    for split in SPLITS:
        missing = [k for k in (f"{split}_images", f"{split}_labels") if k not in arrays]
        if missing:
            raise DataError(f"{path}: missing keys {missing} (has {sorted(arrays)})")
        images, labels = arrays[f"{split}_images"], np.asarray(arrays[f"{split}_labels"])
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if label_map is not None and len(labels) == len(images):
            keep = np.isin(labels, list(label_map))
            images, labels = images[keep], np.vectorize(label_map.get, otypes=[np.int64])(labels[keep])
        s = _check_split(images, labels, n_classes, path, split)
        if label_map is None:
            for key, attr in (("ids", "ids"), ("source", "sources")):
                if f"{split}_{key}" in arrays:
                    values = np.asarray(arrays[f"{split}_{key}"]).astype(str)
                    if len(values) != len(s):
                        raise DataError(f"{path}: {split}_{key} has {len(values)} entries for {len(s)} images")
                    setattr(s, attr, values)
        splits[split] = s
    return splits


# ----------------------------------------------------------------------------- image folders

def _decode(path: Path, size: int, mode: str) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im = im.convert(mode)
            # BICUBIC with PIL's antialiasing: the same resampling used to build the shared 64 px files.
            im = im.resize((size, size), Image.BICUBIC)
            return np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: image listed in the ground truth is missing") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: cannot decode image ({exc})") from None


def _cached_decode(key: str, paths: list[Path], size: int, mode: str = "RGB") -> np.ndarray:
    """Decode and resize a list of images once; later calls read a cache keyed by source, size and code version."""
    cache = cache_dir() / f"{key}_{size}px_v{CACHE_VERSION}.npy"
    if cache.exists():
        arr = np.load(cache, allow_pickle=False)
        if len(arr) == len(paths):
            return arr
    arr = np.stack([_decode(p, size, mode) for p in tqdm(paths, desc=f"decode {key} @{size}px", leave=False)])
    tmp = cache.with_suffix(".tmp.npy")
    np.save(tmp, arr)
    tmp.replace(cache)  # atomic: a killed run never leaves a half-written cache
    return arr


def _read_csv(path: Path, required: list[str]) -> list[dict]:
    _require(path, "ground-truth CSV")
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read CSV ({exc})") from None
    if not rows:
        raise DataError(f"{path}: CSV has no rows")
    missing = [c for c in required if c not in rows[0]]
    if missing:
        raise DataError(f"{path}: CSV lacks columns {missing} (has {list(rows[0])})")
    return rows


def _float_label(value: str, path: Path, row: int, column: str) -> float:
    try:
        return float(value) if value not in ("", None) else float("nan")
    except ValueError:
        raise DataError(f"{path}: row {row + 2}, column {column!r}: not a number: {value!r}") from None


def read_isic2017(root: Path, size: int) -> dict[str, Split]:
    """ISIC 2017 Task 3a in the official layout: melanoma (1) vs nevus or seborrheic keratosis (0)."""
    folders = {"train": "Training", "val": "Validation", "test": "Test_v2"}
    splits = {}
    for split, name in folders.items():
        csv_path = root / f"ISIC-2017_{name}_Part3_GroundTruth.csv"
        rows = _read_csv(csv_path, ["image_id", "melanoma"])
        labels = np.array([_float_label(r["melanoma"], csv_path, i, "melanoma") for i, r in enumerate(rows)])
        if not np.isin(labels, (0.0, 1.0)).all():
            raise DataError(f"{csv_path}: column 'melanoma' must be 0/1, found {sorted(set(labels.tolist()))[:5]}")
        image_dir = _require(root / f"ISIC-2017_{name}_Data", "image folder")
        paths = [image_dir / f"{r['image_id']}.jpg" for r in rows]
        images = _cached_decode(f"isic2017_{split}", paths, size)
        s = _check_split(images, labels.astype(np.int64), 2, csv_path, split)
        s.ids = np.array([r["image_id"] for r in rows])
        splits[split] = s
    return splits


def _seeded_split(n: int, labels: np.ndarray, seed: int, fractions=(0.8, 0.1, 0.1)) -> dict[str, np.ndarray]:
    """Stratified train/val/test index split (the authors' ISIC code split 80/10/10)."""
    rng = np.random.default_rng(seed)
    out = {s: [] for s in SPLITS}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_train = int(round(fractions[0] * len(idx)))
        n_val = int(round(fractions[1] * len(idx)))
        out["train"] += idx[:n_train].tolist()
        out["val"] += idx[n_train:n_train + n_val].tolist()
        out["test"] += idx[n_train + n_val:].tolist()
    return {s: np.sort(np.array(v, dtype=np.int64)) for s, v in out.items()}


def read_isic_csv(csv_path: Path, image_dir: Path, size: int, seed: int = 0) -> dict[str, Split]:
    """ISIC 2019/2020 layout: CSV with `image_name,target` (2020) or `image,MEL` (2019) + a JPEG folder."""
    csv_path = Path(csv_path)
    with open(_require(csv_path, "ground-truth CSV"), newline="") as f:
        header = next(csv.reader(f), [])
    name_col, label_col = ("image", "MEL") if "MEL" in header else ("image_name", "target")
    rows = _read_csv(csv_path, [name_col, label_col])
    labels = np.array([_float_label(r[label_col], csv_path, i, label_col) for i, r in enumerate(rows)])
    if not np.isin(labels, (0.0, 1.0)).all():
        raise DataError(f"{csv_path}: column {label_col!r} must be 0/1")
    labels = labels.astype(np.int64)
    paths = [Path(image_dir) / f"{r[name_col]}.jpg" for r in rows]
    images = _cached_decode(f"isic_csv_{csv_path.stem}", paths, size)
    return {s: _check_split(images[idx], labels[idx], 2, csv_path, s)
            for s, idx in _seeded_split(len(rows), labels, seed).items()}


def read_chexpert(root: Path, size: int, finding: str = "Pleural Effusion", uncertain: str = "drop",
                  balance: bool = True, seed: int = 0) -> dict[str, Split]:
    """CheXpert (v1.0 or -small): frontal views, one finding as positive.

    Policy as in the paper (METHOD.md): uncertain (-1) labels are dropped (`uncertain='drop'`; 'zeros' and
    'ones' are the U-Zeros/U-Ones alternatives), missing labels count as 0, classes balanced by subsampling.
    train.csv is split 90/10 into train/val by patient-free seeded draw; the official valid.csv is the test split.
    """
    if uncertain not in ("drop", "zeros", "ones"):
        raise DataError(f"chexpert: uncertain policy must be drop, zeros or ones, got {uncertain!r}")
    root = Path(root)
    out = {}
    for csv_name, target in (("train.csv", "train"), ("valid.csv", "test")):
        csv_path = root / csv_name
        rows = _read_csv(csv_path, ["Path", "Frontal/Lateral", finding])
        paths, labels = [], []
        for i, r in enumerate(rows):
            if r["Frontal/Lateral"] != "Frontal":
                continue
            v = _float_label(r[finding], csv_path, i, finding)
            v = 0.0 if np.isnan(v) else v
            if v == -1:
                if uncertain == "drop":
                    continue
                v = 0.0 if uncertain == "zeros" else 1.0
            # CSV paths start with the dataset folder name (CheXpert-v1.0-small/train/...)
            paths.append(root.parent / r["Path"])
            labels.append(int(v))
        labels = np.array(labels, dtype=np.int64)
        idx = np.arange(len(labels))
        if balance:
            rng = np.random.default_rng(seed)
            n = np.bincount(labels, minlength=2).min()
            idx = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), n, replace=False) for c in (0, 1)]))
        images = _cached_decode(f"chexpert_{target}_{finding.replace(' ', '_')}_{uncertain}_{int(balance)}",
                                [paths[i] for i in idx], size, mode="L")
        out[target] = (images, labels[idx], csv_path)
    images, labels, csv_path = out["train"]
    parts = _seeded_split(len(labels), labels, seed, fractions=(0.9, 0.1, 0.0))
    splits = {s: _check_split(images[parts[s]], labels[parts[s]], 2, csv_path, s) for s in ("train", "val")}
    images, labels, csv_path = out["test"]
    splits["test"] = _check_split(images, labels, 2, csv_path, "test")
    return splits


# ----------------------------------------------------------------------------- registry

TASKS = {
    "pneumonia": ["normal", "pneumonia"],
    "melanoma": ["benign", "melanoma"],
    "melanoma_balanced": ["benign", "melanoma"],
    "dermamnist": ["nevus", "melanoma"],
    "isic2020": ["benign", "melanoma"],
    "chexpert": ["negative", "pleural effusion"],
}


def task_source(task: str, root=None) -> Path:
    """The file or folder a task reads, under the data root."""
    root = data_root(root)
    return {
        "pneumonia": root / "pneumoniamnist.npz",
        "melanoma": root / "isic2017",
        "melanoma_balanced": root / "isic_melanoma_64.npz",
        "dermamnist": root / "dermamnist.npz",
        "isic2020": root / "isic2020",
        "chexpert": root / "CheXpert-v1.0-small",
    }[check_task(task)]


def check_task(task: str) -> str:
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    return task


def task_available(task: str, root=None) -> bool:
    return task_source(task, root).exists()


def load_task(task: str, root=None, size: int = 64, download: bool = True, seed: int = 0) -> TaskData:
    """Load a task's train/val/test splits. `size` applies to folder layouts (decoded and cached once);
    npz layouts are returned at their stored size and resized by `preprocess`."""
    source = task_source(task, root)
    names = TASKS[task]
    if task == "pneumonia":
        splits = read_npz(fetch_medmnist("pneumoniamnist.npz", source.parent, download), 2)
    elif task == "dermamnist":
        splits = read_npz(fetch_medmnist("dermamnist.npz", source.parent, download), 2, label_map={5: 0, 4: 1})
    elif task == "melanoma_balanced":
        splits = read_npz(source, 2)
    elif task == "melanoma":
        splits = read_isic2017(_require(source, "ISIC 2017 folder", "see data/README.md"), size)
    elif task == "isic2020":
        csv_path = next(iter(sorted(source.glob("*GroundTruth*.csv"))), source / "ISIC_2020_Training_GroundTruth.csv")
        image_dir = source / "train" if (source / "train").exists() else source
        splits = read_isic_csv(csv_path, image_dir, size, seed)
    else:
        splits = read_chexpert(_require(source, "CheXpert folder", "see data/README.md"), size, seed=seed)
    return TaskData(task, names, splits, str(source))


def summary_table(data: TaskData) -> list[dict]:
    """Rows (task, split, class, count) for results/tables/data_summary.csv."""
    return [{"task": data.task, "split": split, "class": name, "label": c, "count": int(n)}
            for split, s in data.splits.items() for c, (name, n) in enumerate(zip(data.class_names, s.counts(data.n_classes)))]
