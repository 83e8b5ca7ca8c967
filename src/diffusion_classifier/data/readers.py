"""One reader per source: MedMNIST npz files (fetched with their md5 when absent), the official ISIC 2017
folders (and their near-duplicate pairs, package data), ISIC 2019/2020 CSV + JPEG folders, and CheXpert-v1.0-small
as the authors cut it. Each returns {split: Split}, checked by the shared checks of `io`.
"""

from __future__ import annotations

import csv
import io
import re
import warnings
import zipfile
from importlib import resources
from pathlib import Path

import numpy as np
import pooch

from ..core.errors import DataError
from .io import (
    SPLITS,
    Split,
    Table,
    _binary,
    _cached_decode,
    _check_images,
    _check_one_class,
    _check_split,
    _check_unique_ids,
    _describe,
    _grouped_split,
    _ids,
    _number,
    _require,
    _seeded_split,
    _subset,
    read_csv,
)

# Pairs of ISIC 2017 ids showing the same lesion image (package data; see isic2017_near_duplicates()).
NEAR_DUPLICATES_CSV = "isic2017_near_duplicates.csv"

# Official MedMNIST v2 files (28 px): zenodo record 10519652, md5 from medmnist's INFO table.
MEDMNIST_FILES = {
    "pneumoniamnist.npz": (
        "https://zenodo.org/records/10519652/files/pneumoniamnist.npz?download=1",
        "md5:28209eda62fecd6e6a2d98b1501bb15f",
    ),
    "dermamnist.npz": (
        "https://zenodo.org/records/10519652/files/dermamnist.npz?download=1",
        "md5:0744692d530f8e62ec473284d019b0c7",
    ),
}


# ----------------------------------------------------------------------------- npz (MedMNIST layout)


def fetch_medmnist(filename: str, root: Path, download: bool = True) -> Path:
    """Return root/filename; if it is absent and `download`, fetch the official file (md5 checked) with pooch."""
    path = root / filename
    if path.exists():
        return path
    hint = f"place the official MedMNIST file {filename} there (DATA_ROOT={root})"
    if filename in MEDMNIST_FILES and download:
        url, known_hash = MEDMNIST_FILES[filename]
        try:
            root.mkdir(parents=True, exist_ok=True)
            return Path(
                pooch.retrieve(
                    url,
                    known_hash,
                    fname=filename,
                    path=root,
                    progressbar=True,
                    downloader=pooch.HTTPDownloader(timeout=30),
                )
            )
        except Exception as exc:  # no internet, read-only root, bad hash: all end in the same advice
            raise DataError(f"{path}: missing and could not be downloaded ({type(exc).__name__}); {hint}") from None
    raise DataError(f"{path}: missing; {hint}")


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an npz, refusing pickled (object) arrays. A file that is no zip archive at all is described
    (size, first bytes) rather than handed to numpy, which would call it pickled data."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise DataError(f"{path}: not an npz file (an npz is a zip archive): {_describe(path)}")
    arrays = {}
    try:
        with np.load(path, allow_pickle=False) as z:
            for key in z.files:
                try:
                    arrays[key] = z[key]
                except ValueError as exc:
                    if "pickle" not in str(exc):
                        raise
                    raise DataError(
                        f"{path}: key {key!r} holds pickled Python objects, which are never loaded; "
                        f"store plain numeric or string arrays"
                    ) from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: truncated or corrupt npz ({path.stat().st_size} bytes; {exc})") from None
    return arrays


def read_npz(path: Path, n_classes: int, label_map: dict[int, int] | None = None) -> dict[str, Split]:
    """Read a MedMNIST-layout npz (`{split}_images`, `{split}_labels`). `label_map` keeps and renumbers labels."""
    path = Path(path)
    _require(path, "npz file")
    arrays = _load_npz(path)
    splits, seen = {}, {}
    for split in SPLITS:
        missing = [k for k in (f"{split}_images", f"{split}_labels") if k not in arrays]
        if missing:
            raise DataError(f"{path}: missing keys {missing} (has {sorted(arrays)})")
        images, labels = arrays[f"{split}_images"], np.asarray(arrays[f"{split}_labels"])
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if label_map is not None and labels.ndim == 1 and len(labels) == len(images):
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
            if s.ids is not None:  # ids of different sources may coincide (ISIC 2017 and 2018 are separate archives)
                keys = s.ids if s.sources is None else [f"{src}/{i}" for src, i in zip(s.sources, s.ids)]
                _check_unique_ids(keys, path, lambda i, split=split: f"{split}_ids[{i}]", seen)
        splits[split] = s
    return splits


# ----------------------------------------------------------------------------- folder layouts


def read_isic2017(root: Path, size: int, strict: bool = False) -> dict[str, Split]:
    """ISIC 2017 Task 3a in the official layout: melanoma (1) vs nevus or seborrheic keratosis (0)."""
    folders = {"train": "Training", "val": "Validation", "test": "Test_v2"}
    splits, seen = {}, {}
    for split, name in folders.items():
        table = read_csv(root / f"ISIC-2017_{name}_Part3_GroundTruth.csv", ["image_id", "melanoma"])
        ids = _ids(table, "image_id", seen)
        labels = _binary(table, "melanoma")
        _check_one_class(table, "image_id", ["melanoma", "seborrheic_keratosis"], default="nevus")
        image_dir = _require(root / f"ISIC-2017_{name}_Data", "image folder")
        paths = [image_dir / f"{iid}.jpg" for iid in ids]
        _check_images(table, paths, image_dir, "*.jpg", strict)
        images = _cached_decode(f"isic2017_{split}", paths, size)
        s = _check_split(images, labels, 2, table.path, split)
        s.ids = np.array(ids)
        splits[split] = s
    return splits


def isic2017_near_duplicates() -> list[tuple[str, str]]:
    """The 29 pairs of ISIC 2017 image ids that show the same lesion image (re-uploads, some with other colour
    processing). Found on 16 px grey thumbnails (cosine >= 0.98) and checked by eye when the shared data was
    built (`near_duplicates` of isic2017_melanoma_64.npz); shipped with the package as ids only."""
    text = resources.files(__package__).joinpath(NEAR_DUPLICATES_CSV).read_text(encoding="utf-8")
    return [(r["image_id"], r["duplicate_id"]) for r in csv.DictReader(io.StringIO(text))]


def drop_near_duplicates(splits: dict[str, Split], pairs) -> dict[str, int]:
    """Drop the later member of each pair present, in the order train < val < test and, within a split, the later
    row: the first copy of an image stays, so a test image that repeats a train image leaves the test set.
    Changes `splits` in place; returns the number dropped per split."""
    where = {iid: (rank, row) for rank, split in enumerate(SPLITS) for row, iid in enumerate(splits[split].ids)}
    drop = {max(where[a], where[b]) for a, b in pairs if a in where and b in where}
    dropped = {}
    for rank, split in enumerate(SPLITS):
        rows = [row for r, row in drop if r == rank]
        splits[split] = _subset(splits[split], np.setdiff1d(np.arange(len(splits[split])), rows))
        dropped[split] = len(rows)
    return dropped


ISIC2019_CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]


def read_isic_csv(csv_path: Path, image_dir: Path, size: int, seed: int = 0, strict: bool = False) -> dict[str, Split]:
    """ISIC 2019/2020 layout: CSV with `image_name,target` (2020) or `image,MEL` (2019) + a JPEG folder."""
    table = read_csv(csv_path)
    name_col, label_col = ("image", "MEL") if "MEL" in table.columns else ("image_name", "target")
    table.need([name_col, label_col])
    ids = _ids(table, name_col, {})
    labels = _binary(table, label_col)
    _check_one_class(table, name_col, ISIC2019_CLASSES)
    if "benign_malignant" in table.columns:  # ISIC 2020 states the diagnosis twice; they must agree
        for i, r in enumerate(table.rows):
            if {"benign": 0, "malignant": 1}.get(r["benign_malignant"].strip().lower()) != labels[i]:
                raise DataError(
                    f"{table.at(i)}: {label_col} {labels[i]} contradicts benign_malignant {r['benign_malignant']!r}"
                )
    paths = [Path(image_dir) / f"{iid}.jpg" for iid in ids]
    _check_images(table, paths, Path(image_dir), "*.jpg", strict)
    images = _cached_decode(f"isic_csv_{table.path.stem}", paths, size)
    return {
        s: _check_split(images[idx], labels[idx], 2, table.path, s)
        for s, idx in _seeded_split(len(ids), labels, seed).items()
    }


def _chexpert_label(table: Table, i: int, column: str) -> float:
    """1 positive, 0 negative, -1 uncertain, blank not mentioned (counted as 0)."""
    v = _number(table, i, column)
    if not (np.isnan(v) or v in (1.0, 0.0, -1.0)):
        raise DataError(f"{table.at(i)}, column {column!r}: must be 1, 0, -1 or blank, got {table.rows[i][column]!r}")
    return 0.0 if np.isnan(v) else v


# A CheXpert image path: .../patient<id>/study<n>/<view>.jpg (the patient id and study number come from the path).
CHEXPERT_PATH = re.compile(r"(?:^|/)(patient\d+)/study(\d+)/[^/]+$")


def read_chexpert(
    root: Path,
    size: int,
    finding: str = "Pleural Effusion",
    balance: bool = True,
    seed: int = 0,
    strict: bool = False,
) -> dict[str, Split]:
    """CheXpert-v1.0-small as the authors cut it (METHOD.md, "Data in the paper"; their
    `dataset/chexpert.py::_filter_study1_frontal`): `train.csv` only (valid.csv is not read), and of it only the rows
    whose Path ends in `study1/view1_frontal.jpg`: one image per patient, and a patient without that file (no study1,
    or only a lateral or a second frontal view in it) contributes nothing. The Path alone decides, as in theirs (the
    Frontal/Lateral column is only checked to be Frontal or Lateral). Positive (1) = `finding` is 1, negative (0) =
    "No Finding" is 1. Rows with an uncertain (-1) label in either column, with neither label, or with both
    (contradictory: a warning names them) are dropped; blank means not mentioned. The larger class is subsampled to
    the smaller one with the seed (`balance`), then the images are split 80/10/10 by patient (parsed from Path; no
    patient in two splits), stratified by class: our own seeded split, where the authors ship fixed split CSVs (not
    available here). On the full train.csv the authors report train 16,324 / val 2,040 / test 2,040 (20,404 images,
    balanced); not checked here (no CheXpert copy). Split ids are the CSV Paths.
    """
    root = Path(root)
    table = read_csv(root / "train.csv", ["Path", "Frontal/Lateral", "No Finding", finding])
    ids = _ids(table, "Path", {})
    patients, chosen = [], []
    for i, path in enumerate(ids):
        m = CHEXPERT_PATH.search(path.replace("\\", "/"))
        if m is None:
            raise DataError(
                f"{table.at(i)}: Path {path!r} has no patient id and study "
                f"(expected .../patient<digits>/study<digits>/<view>.jpg)"
            )
        patients.append(m.group(1))
        chosen.append(path.replace("\\", "/").endswith("/study1/view1_frontal.jpg"))
        view = table.rows[i]["Frontal/Lateral"].strip()
        if view not in ("Frontal", "Lateral"):
            raise DataError(f"{table.at(i)}, column 'Frontal/Lateral': must be Frontal or Lateral, got {view!r}")
    rows, labels, both = [], [], []
    for i in range(len(ids)):
        positive, negative = _chexpert_label(table, i, finding), _chexpert_label(table, i, "No Finding")
        if not chosen[i]:
            continue  # the authors' filter: the Path alone decides (study1/view1_frontal.jpg)
        if -1.0 in (positive, negative) or positive == negative == 0.0:
            continue  # uncertain, or neither class
        if positive == negative == 1.0:
            both.append(i)
            continue
        rows.append(i)
        labels.append(int(positive))
    if both:
        warnings.warn(
            f"{table.path}: {len(both)} study1/view1_frontal rows marked both 'No Finding' and {finding!r} "
            f"(first line {table.lines[both[0]]}); contradictory labels, dropped",
            stacklevel=2,
        )
    rows, labels = np.array(rows, dtype=np.int64), np.array(labels, dtype=np.int64)
    n = np.bincount(labels, minlength=2)
    if n.min() == 0:
        raise DataError(
            f"{table.path}: no study1/view1_frontal row with {['No Finding', finding][int(n.argmin())]!r} = 1 "
            f"(found {n[0]} 'No Finding', {n[1]} {finding!r}); nothing to classify"
        )
    keep = np.arange(len(rows))
    if balance:
        rng = np.random.default_rng(seed)
        keep = np.concatenate([rng.choice(np.flatnonzero(labels == c), n.min(), replace=False) for c in (0, 1)])
        keep = np.sort(keep)
    rows, labels = rows[keep], labels[keep]
    # CSV paths start with the dataset folder name (CheXpert-v1.0-small/train/...)
    paths = [root.parent / p for p in ids]
    _check_images(table, paths, root / "train", "**/*.jpg", strict, rows=rows)
    images = _cached_decode(
        f"chexpert_{finding.replace(' ', '_')}_study1_view1_frontal_{int(balance)}_seed{seed}",
        [paths[i] for i in rows],
        size,
        mode="L",
    )
    splits = {}
    for s, idx in _grouped_split(np.array(patients)[rows], labels, seed).items():
        splits[s] = _check_split(images[idx], labels[idx], 2, table.path, s)
        splits[s].ids = np.array(ids)[rows[idx]]
    return splits
