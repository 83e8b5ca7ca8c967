"""Readers for the tasks of the study. Every reader returns a `TaskData`: per split, uint8 images
(N, H, W, C) and int64 labels, plus the class names. Every malformed input raises `DataError` with a
one-line message naming the file (and CSV line) and the problem (never a traceback from deep inside numpy or PIL).

Ground truth is checked, not trusted: ids must be unique within and across splits, each image has exactly one
class, every listed image exists, and images the ground truth does not list are reported (a warning, or an error
with `strict=True`). Decoded folder images are cached under data/cache, keyed by the decode settings and by the
path, size and modification time of every source image: any change is noticed and decoded again.

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

import csv
import hashlib
import io
import json
import re
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import PIL
import pooch
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from .errors import DataError
from .paths import cache_dir, data_root

SPLITS = ("train", "val", "test")
# Bump when decoding/resizing of folder layouts or the cache format changes. 2: caches record their sources.
CACHE_VERSION = 2
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
    if labels.ndim == 2:
        raise DataError(
            f"{name}: labels have {labels.shape[1]} columns (one-hot or multi-label); "
            f"this task expects one class per image, shape (N,) or (N, 1)"
        )
    if labels.ndim != 1:
        raise DataError(f"{name}: labels must have shape (N,) or (N, 1), got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        if (
            np.issubdtype(labels.dtype, np.floating)
            and np.all(np.isfinite(labels))
            and np.all(labels == np.round(labels))
        ):
            labels = labels.astype(np.int64)
        else:
            raise DataError(f"{name}: labels must be integers, got {labels.dtype}")
    if len(images) == 0:
        raise DataError(f"{name}: split is empty")
    if len(images) != len(labels):
        raise DataError(f"{name}: {len(images)} images but {len(labels)} labels")
    bad = (labels < 0) | (labels >= n_classes)
    if bad.any():
        raise DataError(
            f"{name}: labels out of range [0, {n_classes - 1}]: found {sorted(set(labels[bad].tolist()))[:5]}"
        )
    return Split(np.ascontiguousarray(images), labels.astype(np.int64))


def _require(path: Path, what: str, hint: str = "") -> Path:
    if not path.exists():
        raise DataError(f"{path}: missing {what}{'; ' + hint if hint else ''}")
    return path


_MAGIC = (
    (b"\x93NUMPY", "a single .npy array, not an .npz archive"),
    (b"PK", "a zip archive (.zip, .xlsx, .npz)"),
    (b"\x1f\x8b", "gzip-compressed data"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"%PDF", "a PDF document"),
    (b"\x80", "a Python pickle"),
)


def _describe(path: Path) -> str:
    """What a file really is, for messages about a file that is not what its name says: size, first bytes, a guess."""
    size = path.stat().st_size
    if size == 0:
        return "it is empty (0 bytes)"
    with open(path, "rb") as f:
        head = f.read(16)
    guess = next((what for magic, what in _MAGIC if head.startswith(magic)), None)
    if guess is None and head.lstrip().lower().startswith((b"<!doctype", b"<html", b"<?xml")):
        guess = "an HTML or XML page (a failed download?)"
    if guess is None and all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        guess = "plain text"
    return f"{size} bytes starting {head!r}" + (f", {guess}" if guess else "")


def _check_unique_ids(ids, source: Path, where, seen: dict):
    """No image id twice, within or across splits: a repeated id is a counted-twice image or a train/test leak.
    `where(i)` names row i of `source`; `seen` maps ids to the (source, row) they were first met at."""
    for i, iid in enumerate(map(str, ids)):
        if iid in seen:
            first_source, first = seen[iid]
            first = first if first_source == source else f"{first_source}: {first}"
            raise DataError(
                f"{source}: {where(i)}: id {iid!r} repeats {first} (one row per image, no image in two splits)"
            )
        seen[iid] = (source, where(i))


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


# ----------------------------------------------------------------------------- ground-truth CSVs


@dataclass
class Table:
    """A ground-truth CSV: its rows and, for messages, the file line each row came from."""

    path: Path
    columns: list[str]
    rows: list[dict]
    lines: list[int]

    def at(self, i: int) -> str:
        return f"{self.path}: line {self.lines[i]}"

    def need(self, columns: list[str]):
        missing = [c for c in columns if c not in self.columns]
        if missing:
            raise DataError(f"{self.path}: CSV lacks columns {missing} (has {self.columns})")


def read_csv(path: Path, required: list[str] = ()) -> Table:
    """A UTF-8 CSV with a header (a byte-order mark is allowed), every row as long as the header."""
    raw = _require(Path(path), "ground-truth CSV").read_bytes()
    if not raw:
        raise DataError(f"{path}: empty file (0 bytes); expected a CSV with a header row")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}: line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); "
            f"save it as UTF-8 CSV ({_describe(Path(path))})"
        ) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows, lines = [], []
    try:
        for row in reader:
            if None in row or None in row.values():  # DictReader's marks for extra and missing fields
                n = len(reader.fieldnames) + len(row.get(None, [])) - sum(v is None for v in row.values())
                raise DataError(f"{path}: line {reader.line_num}: {n} fields, the header has {len(reader.fieldnames)}")
            rows.append(row)
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise DataError(f"{path}: line {reader.line_num}: cannot parse CSV ({exc})") from None
    if not rows:
        raise DataError(f"{path}: CSV has no rows{' (header only)' if reader.fieldnames else ''}")
    table = Table(Path(path), list(reader.fieldnames), rows, lines)
    table.need(list(required))
    return table


def _number(table: Table, i: int, column: str) -> float:
    value = table.rows[i][column]
    try:
        return float(value) if value.strip() else float("nan")
    except ValueError:
        raise DataError(f"{table.at(i)}, column {column!r}: not a number: {value!r}") from None


def _binary(table: Table, column: str) -> np.ndarray:
    """A 0/1 column as int64; anything else (blank included) names its line."""
    values = np.array([_number(table, i, column) for i in range(len(table.rows))])
    bad = np.flatnonzero(~np.isin(values, (0.0, 1.0)))
    if len(bad):
        raise DataError(f"{table.at(bad[0])}, column {column!r}: must be 0 or 1, got {table.rows[bad[0]][column]!r}")
    return values.astype(np.int64)


def _check_one_class(table: Table, id_column: str, columns: list[str], default: str | None = None):
    """One class per image in one-hot diagnosis columns: at most one 1 when no 1 means `default` (ISIC 2017:
    nevus), exactly one otherwise (ISIC 2019: MEL, NV, BCC, ...). Checked when at least two columns are there."""
    present = [c for c in columns if c in table.columns]
    if len(present) < 2:
        return
    hot = np.stack([_binary(table, c) for c in present], axis=1)
    for i, n in enumerate(hot.sum(1)):
        if n > 1 or (n == 0 and default is None):
            marked = " and ".join(c for c, h in zip(present, hot[i]) if h) or f"none of {present}"
            raise DataError(
                f"{table.at(i)}: image {table.rows[i][id_column]!r} is marked {marked}; one class per image expected"
            )


def _ids(table: Table, column: str, seen: dict) -> list[str]:
    """The id column, non-empty and unique within this table and the other splits' tables (`seen`)."""
    ids = [r[column].strip() for r in table.rows]
    if "" in ids:
        raise DataError(f"{table.at(ids.index(''))}: empty {column}")
    _check_unique_ids(ids, table.path, lambda i: f"line {table.lines[i]}", seen)
    return ids


def _check_images(table: Table, paths: list[Path], folder: Path, pattern: str, strict: bool, rows=None):
    """Every image the ground truth lists must exist (only those of `rows`, when given: a reader that uses a subset
    of the table). Images in `folder` it does not list usually mean a wrong or incomplete CSV: a warning, or an
    error with `strict`."""
    for i in range(len(paths)) if rows is None else rows:
        p = paths[i]
        if not p.is_file():
            raise DataError(f"{p}: listed in {table.at(i)} but missing")
    listed = set(paths)
    unlisted = sorted(p for p in folder.glob(pattern) if p not in listed)
    if unlisted:
        msg = f"{folder}: {len(unlisted)} images not listed in {table.path.name} (first {unlisted[0].name})"
        if strict:
            raise DataError(f"{msg}; strict mode refuses them")
        warnings.warn(f"{msg}; they are ignored", stacklevel=3)


# ----------------------------------------------------------------------------- decoded-image cache


def _decode(path: Path, size: int, mode: str) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im = im.convert(mode)
            # BICUBIC with PIL's antialiasing: the same resampling used to build the shared 64 px files.
            im = im.resize((size, size), Image.BICUBIC)
            return np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: cannot decode image ({exc})") from None


def _sources(paths: list[Path]) -> list[list]:
    """[resolved path, bytes, mtime_ns] of each image: what a decoded cache depends on besides the settings."""
    out = []
    for p in paths:
        st = p.stat()
        out.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
    return out


def _what_changed(made: dict, settings: dict, files: list) -> str:
    made_with = made.get("settings", {})
    if made_with != settings:
        return f"made with other decode settings {sorted(k for k in settings if made_with.get(k) != settings[k])}"
    old, new = {f[0]: f[1:] for f in made.get("files", [])}, {f[0]: f[1:] for f in files}
    kinds = (
        ([p for p in new if p in old and old[p] != new[p]], "changed"),
        ([p for p in new if p not in old], "new"),
        ([p for p in old if p not in new], "no longer listed"),
    )
    parts = [f"{len(ps)} {what} (first {Path(ps[0]).name})" for ps, what in kinds if ps]
    return "made from other images: " + ", ".join(parts) if parts else "made from the same images in another order"


def _read_cache(cache: Path, settings: dict, files: list) -> tuple[np.ndarray | None, str | None]:
    """The cached images if `cache` was made from exactly these files with these settings; else (None, why not)."""
    if not cache.exists():
        return None, None
    try:
        with np.load(cache, allow_pickle=False) as z:
            made = json.loads(str(z["manifest"]))
            if made == {"settings": settings, "files": files}:
                return z["images"], None
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError) as exc:
        return None, f"unreadable ({type(exc).__name__})"
    return None, _what_changed(made, settings, files)


def _cached_decode(key: str, paths: list[Path], size: int, mode: str = "RGB") -> np.ndarray:
    """Decode and resize a list of images once. The cache records the decode settings and every source's path,
    size and modification time; any difference (an edited, replaced, added or removed image, another folder)
    is named in a warning and the images are decoded again."""
    settings = {"size": size, "mode": mode, "resample": "bicubic", "pillow": PIL.__version__, "version": CACHE_VERSION}
    files = _sources(paths)
    # one cache file per source folder set, so two copies of a dataset do not evict each other
    folders = hashlib.sha1(json.dumps(sorted({str(Path(f[0]).parent) for f in files})).encode()).hexdigest()[:8]
    cache = cache_dir() / f"{key}_{size}px_{mode}_{folders}_v{CACHE_VERSION}.npz"
    images, stale = _read_cache(cache, settings, files)
    if images is not None:
        return images
    if stale:
        warnings.warn(f"{cache}: {stale}; decoding the images again", stacklevel=3)
    images = np.stack([_decode(p, size, mode) for p in tqdm(paths, desc=f"decode {key} @{size}px", leave=False)])
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, images=images, manifest=np.array(json.dumps({"settings": settings, "files": files})))
    tmp.replace(cache)  # atomic: a killed run never leaves a half-written cache
    return images


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


def _subset(s: Split, keep: np.ndarray) -> Split:
    return Split(
        s.images[keep],
        s.labels[keep],
        None if s.ids is None else s.ids[keep],
        None if s.sources is None else s.sources[keep],
    )


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


def _seeded_split(n: int, labels: np.ndarray, seed: int, fractions=(0.8, 0.1, 0.1)) -> dict[str, np.ndarray]:
    """Stratified train/val/test index split (the authors' ISIC code split 80/10/10)."""
    rng = np.random.default_rng(seed)
    out = {s: [] for s in SPLITS}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_train = int(round(fractions[0] * len(idx)))
        n_val = int(round(fractions[1] * len(idx)))
        out["train"] += idx[:n_train].tolist()
        out["val"] += idx[n_train : n_train + n_val].tolist()
        out["test"] += idx[n_train + n_val :].tolist()
    return {s: np.sort(np.array(v, dtype=np.int64)) for s, v in out.items()}


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


def _grouped_split(groups, labels: np.ndarray, seed: int, fractions=(0.8, 0.1, 0.1)) -> dict[str, np.ndarray]:
    """Train/val/test index split that never puts one group (a patient) in two splits, stratified by class as far as
    the groups allow. A group's class is its majority label; within each class the groups are shuffled with the
    seed and dealt out by where their first image falls along the class's images: the first 80 % go to train, the
    next 10 % to val, the rest to test. Deterministic given the seed; groups are taken in sorted order, so the
    order of the rows does not matter."""
    rng = np.random.default_rng(seed)
    names, group = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    size = np.bincount(group, minlength=len(names))
    votes = np.zeros((len(names), int(labels.max()) + 1))
    np.add.at(votes, (group, labels), 1)
    group_class = votes.argmax(1)
    which = np.empty(len(names), dtype=np.int64)
    for c in np.unique(group_class):
        g = rng.permutation(np.flatnonzero(group_class == c))
        start = np.cumsum(size[g]) - size[g]
        bounds = np.round(np.cumsum(fractions)[:-1] * size[g].sum())
        which[g] = np.searchsorted(bounds, start, side="right")
    return {s: np.flatnonzero(which[group] == k) for k, s in enumerate(SPLITS)}


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
