"""File reading and its checks, shared by every reader: `Split` and `TaskData` (per split, uint8 images
(N, H, W, C) and int64 labels, plus the class names), ground-truth CSVs (`Table`, `read_csv`), image decoding with
a cache, and the seeded and patient-grouped train/val/test splits. Every malformed input raises `DataError` with a
one-line message naming the file (and CSV line) and the problem (never a traceback from deep inside numpy or PIL).

Ground truth is checked, not trusted: ids must be unique within and across splits, each image has exactly one
class, every listed image exists, and images the ground truth does not list are reported (a warning, or an error
with `strict=True`). Decoded folder images are cached under data/cache, keyed by the decode settings and by the
path, size and modification time of every source image: any change is noticed and decoded again.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from ..core.errors import DataError
from ..core.paths import cache_dir

SPLITS = ("train", "val", "test")
# Bump when decoding/resizing of folder layouts or the cache format changes. 2: caches record their sources.
CACHE_VERSION = 2


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


def _subset(s: Split, keep: np.ndarray) -> Split:
    return Split(
        s.images[keep],
        s.labels[keep],
        None if s.ids is None else s.ids[keep],
        None if s.sources is None else s.sources[keep],
    )


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
