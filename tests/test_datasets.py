"""Data layer: real counts on the shared files, the readers on synthetic layouts, and the bad-input catalogue."""

import io

import numpy as np
import pytest
import torch
from conftest import REAL_DATA
from PIL import Image

from diffusion_classifier.core.errors import DataError
from diffusion_classifier.data import io as data_io
from diffusion_classifier.data import preprocess, readers, tasks


def counts(data):
    return {s: data.splits[s].counts(2).tolist() for s in ("train", "val", "test")}


@pytest.mark.skipif(not (REAL_DATA / "pneumoniamnist.npz").exists(), reason="shared data absent")
def test_pneumonia_official_counts():
    data = tasks.load_task("pneumonia", REAL_DATA, download=False)
    assert counts(data) == {"train": [1214, 3494], "val": [135, 389], "test": [234, 390]}
    assert data.class_names == ["normal", "pneumonia"]
    assert data.splits["train"].images.shape[1:] == (28, 28, 1) and tasks.TASKS["pneumonia"].channels == 1


@pytest.mark.skipif(not (REAL_DATA / "isic2017").exists(), reason="shared data absent")
def test_melanoma_official_counts_near_duplicates_dropped_and_cache(monkeypatch):
    official = readers.read_isic2017(REAL_DATA / "isic2017", 32)
    assert {s: official[s].counts(2).tolist() for s in data_io.SPLITS} == {
        "train": [1626, 374],
        "val": [120, 30],
        "test": [483, 117],
    }
    data = tasks.load_task("melanoma", REAL_DATA, size=32)
    # 29 pairs: 10 inside train, 2 train-val, 11 train-test, 2 val-test, 4 inside test; the later member goes
    assert data.notes["near_duplicates_dropped"] == {"train": 10, "val": 2, "test": 17}
    assert counts(data) == {"train": [1620, 370], "val": [119, 29], "test": [469, 114]}
    assert data.splits["test"].images.shape == (583, 32, 32, 3) and tasks.TASKS["melanoma"].channels == 3
    kept = {i for s in data.splits.values() for i in s.ids}
    pairs = readers.isic2017_near_duplicates()
    assert len(pairs) == 29 and not any(a in kept and b in kept for a, b in pairs)
    # every kept image is the official one: same pixels and label as in the reader's full split
    row = {iid: k for k, iid in enumerate(official["test"].ids)}
    idx = [row[i] for i in data.splits["test"].ids]
    assert np.array_equal(data.splits["test"].images, official["test"].images[idx])
    assert np.array_equal(data.splits["test"].labels, official["test"].labels[idx])
    # second load comes from the cache: decoding is never called again
    monkeypatch.setattr(data_io, "_decode", lambda *a: (_ for _ in ()).throw(AssertionError("decoded twice")))
    again = tasks.load_task("melanoma", REAL_DATA, size=32)
    assert np.array_equal(again.splits["test"].images, data.splits["test"].images)


@pytest.mark.skipif(not (REAL_DATA / "isic2017_melanoma_64.npz").exists(), reason="shared data absent")
def test_shipped_near_duplicate_list_is_the_shared_one():
    with np.load(REAL_DATA / "isic2017_melanoma_64.npz") as z:
        shared = [tuple(p) for p in z["near_duplicates"].tolist()]
    assert readers.isic2017_near_duplicates() == shared


def test_near_duplicates_drop_the_later_member(isic_folder, monkeypatch):
    pairs = [
        ("ISIC_Te00003", "ISIC_Tr00001"),  # test after train: the test image goes
        ("ISIC_Va00000", "ISIC_Te00000"),  # test after val
        ("ISIC_Te00002", "ISIC_Te00001"),  # same split: the later row goes
        ("ISIC_Tr00004", "ISIC_Tr00002"),
        ("ISIC_Va00003", "ISIC_0000000"),
    ]  # one member absent: nothing to drop
    monkeypatch.setattr(tasks, "isic2017_near_duplicates", lambda: pairs)
    data = tasks.load_task("melanoma", isic_folder.parent, size=8)
    assert data.notes["near_duplicates_dropped"] == {"train": 1, "val": 0, "test": 3}
    assert data.splits["train"].ids.tolist() == [
        "ISIC_Tr00000",
        "ISIC_Tr00001",
        "ISIC_Tr00002",
        "ISIC_Tr00003",
        "ISIC_Tr00005",
    ]
    assert data.splits["test"].ids.tolist() == ["ISIC_Te00001"]
    full = readers.read_isic2017(isic_folder, 8)
    assert np.array_equal(data.splits["test"].images[0], full["test"].images[1])
    assert data.splits["test"].labels.tolist() == [full["test"].labels[1]]


def test_npz_reader_normalises_shapes(make_npz):
    """Shapes, and the pixels and labels of each split are the file's own, in order. Catches: a reader that returns
    zeros or reorders images, mixes up the splits, or drops the (N, 1) labels' values."""
    path = make_npz(n=(24, 10, 12))  # three sizes: a split read for another one shows
    splits = readers.read_npz(path, 2)
    assert splits["train"].images.shape == (24, 8, 8, 1) and splits["train"].labels.dtype == np.int64
    with np.load(path) as z:
        for split in ("train", "val", "test"):
            assert np.array_equal(splits[split].images[..., 0], z[f"{split}_images"]), split
            assert splits[split].labels.tolist() == z[f"{split}_labels"][:, 0].tolist(), split
            assert splits[split].images.dtype == np.uint8


def test_isic_folder_reader(isic_folder):
    splits = readers.read_isic2017(isic_folder, 16)
    assert splits["train"].images.shape == (6, 16, 16, 3)
    assert splits["val"].labels.tolist() == [0, 1, 0, 1]
    assert list(splits["test"].ids[:1]) == ["ISIC_Te00000"]


def test_dermamnist_keeps_melanoma_and_nevus(make_npz):
    labels = np.array([[4], [5], [0], [4], [5], [2]], dtype=np.uint8)
    imgs = np.zeros((6, 8, 8, 3), dtype=np.uint8)
    path = make_npz(
        "dermamnist.npz",
        channels=3,
        train_images=imgs,
        train_labels=labels,
        val_images=imgs,
        val_labels=labels,
        test_images=imgs,
        test_labels=labels,
    )
    data = tasks.load_task("dermamnist", path.parent, download=False)
    assert data.splits["train"].labels.tolist() == [1, 0, 1, 0]


def test_isic_csv_layout(tmp_path):
    folder = tmp_path / "data" / "isic2020"
    (folder / "train").mkdir(parents=True)
    lines = ["image_name,target"]
    for i in range(20):
        Image.fromarray(np.full((10, 10, 3), i * 10, dtype=np.uint8)).save(folder / "train" / f"ISIC_{i}.jpg")
        lines.append(f"ISIC_{i},{i % 2}")
    (folder / "ISIC_2020_Training_GroundTruth.csv").write_text("\n".join(lines))
    data = tasks.load_task("isic2020", folder.parent, size=8)
    assert sum(len(s) for s in data.splits.values()) == 20
    assert counts(data)["train"] == [8, 8]


CHEXPERT_HEADER = "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Pleural Effusion"


def chexpert_path(patient, study, view="view1_frontal"):
    return f"CheXpert-v1.0-small/train/patient{patient:05d}/study{study}/{view}.jpg"


def chexpert_train(tmp_path, rows):
    """A CheXpert-v1.0-small folder whose train.csv holds `rows` (patient, study, view, No Finding, Pleural
    Effusion), with a tiny JPEG for each; returns the folder."""
    data = tmp_path / "data"
    (data / "CheXpert-v1.0-small").mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.fromarray(np.full((12, 12), 128, np.uint8)).save(buf, format="JPEG")
    lines = [CHEXPERT_HEADER]
    for patient, study, view, no_finding, effusion in rows:
        rel = chexpert_path(patient, study, view)
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_bytes(buf.getvalue())
        lateral = "lateral" in view
        lines.append(
            f"{rel},Female,63,{'Lateral' if lateral else 'Frontal'},{'' if lateral else 'AP'},{no_finding},{effusion}"
        )
    (data / "CheXpert-v1.0-small" / "train.csv").write_text("\n".join(lines) + "\n")
    return data / "CheXpert-v1.0-small"


def chexpert_labels(data):
    """{CSV Path: label} over all splits, and {split: set of patient ids}."""
    labels = {i: int(y) for s in data.splits.values() for i, y in zip(s.ids, s.labels)}
    return labels, {k: {i.split("/")[2] for i in s.ids} for k, s in data.splits.items()}


def test_chexpert_study1_view1_frontal_only_and_labels(tmp_path):
    rows = [
        (1, 1, "view1_frontal", "1.0", ""),  # kept: negative
        (1, 1, "view2_lateral", "1.0", ""),  # lateral
        (1, 2, "view1_frontal", "1.0", ""),  # second study
        (2, 1, "view1_frontal", "", "1.0"),  # kept: positive
        (2, 1, "view2_frontal", "", "1.0"),  # dropped: a second frontal view of study1 (the authors keep view1 only)
        (2, 3, "view1_frontal", "", "1.0"),  # later study
        (3, 4, "view1_frontal", "", "1.0"),  # later study, listed first
        (3, 2, "view1_frontal", "1.0", "0.0"),  # dropped: study1 absent, so the patient gives nothing (no fallback)
        (4, 1, "view1_lateral", "", "1.0"),  # study1 has no view1_frontal: the patient gives nothing
        (4, 2, "view1_frontal", "", "1.0"),
        (5, 1, "view1_frontal", "", "-1.0"),  # uncertain
        (6, 1, "view1_frontal", "-1.0", ""),  # uncertain
        (7, 1, "view1_frontal", "", "0.0"),  # neither
        (8, 1, "view1_frontal", "", ""),  # neither
        (9, 1, "view1_frontal", "1.0", "1.0"),  # both: contradictory
    ]
    rows += [(p, 1, "view1_frontal", *(("", "1.0") if p % 2 else ("1.0", ""))) for p in range(10, 51)]
    root = chexpert_train(tmp_path, rows)
    with pytest.warns(UserWarning, match=r"train.csv: 1 study1/view1_frontal rows marked both .*\(first line 16\)"):
        splits = readers.read_chexpert(root, 8, balance=False)
    labels, _ = chexpert_labels(data_io.TaskData("chexpert", ["no finding", "pleural effusion"], splits, ""))
    expected = {chexpert_path(1, 1): 0, chexpert_path(2, 1): 1} | {chexpert_path(p, 1): p % 2 for p in range(10, 51)}
    assert labels == expected
    assert chexpert_path(2, 1, "view2_frontal") not in labels and chexpert_path(3, 2) not in labels
    assert splits["train"].images.shape[1:] == (8, 8, 1)
    with pytest.warns(UserWarning, match="marked both"):
        data = tasks.load_task("chexpert", root.parent, size=8)
    assert data.class_names == ["no finding", "pleural effusion"]
    total = np.sum([data.splits[s].counts(2) for s in data_io.SPLITS], axis=0)
    assert total.tolist() == [21, 21]  # 20 + 1 positives; 21 + 1 negatives subsampled to 21
    assert set(chexpert_labels(data)[0].items()) <= set(expected.items())


def test_chexpert_balanced_80_10_10_split_keeps_patients_together(tmp_path):
    rng = np.random.default_rng(1)
    rows, candidates = [], {}
    for p in range(600):
        for study in rng.permutation(np.arange(1, rng.integers(2, 4)) + rng.integers(0, 2)):
            no_finding, effusion = [("", "1.0"), ("1.0", ""), ("1.0", "0.0"), ("", "-1.0"), ("", "0.0")][
                rng.choice(5, p=[0.55, 0.3, 0.05, 0.05, 0.05])
            ]
            views = (
                ["view1_frontal"] + ["view2_frontal"] * (rng.random() < 0.2) + ["view3_lateral"] * (rng.random() < 0.5)
            )
            rows += [(p, study, v, no_finding, effusion) for v in views]
            if study == 1 and (no_finding, effusion) in [("", "1.0"), ("1.0", ""), ("1.0", "0.0")]:
                candidates[f"patient{p:05d}"] = int(effusion == "1.0")  # its study1/view1_frontal.jpg is usable
    root = chexpert_train(tmp_path, rows)
    data = tasks.load_task("chexpert", root.parent, size=8, seed=3)
    labels, patients = chexpert_labels(data)
    for path in labels:
        patient, study, view = path.split("/")[2:]
        assert (study, view) == ("study1", "view1_frontal.jpg")  # later studies and view2_frontal are dropped
    assert len(labels) == len({p.split("/")[2] for p in labels})  # one image per patient
    assert {p.split("/")[2] for p in labels} <= set(candidates)
    truth = {chexpert_path(p, s, v): int(e == "1.0") for p, s, v, _, e in rows}
    assert all(truth[i] == y for i, y in labels.items())
    n = {s: data.splits[s].counts(2) for s in data_io.SPLITS}
    total = sum(n.values())
    smaller = min(np.bincount(list(candidates.values()), minlength=2))
    assert total.tolist() == [smaller, smaller] and total.sum() > 200  # balanced, all of the smaller class kept
    for s, f in zip(data_io.SPLITS, (0.8, 0.1, 0.1)):
        assert abs(n[s].sum() / total.sum() - f) < 0.03, n
        assert abs(int(n[s][0]) - int(n[s][1])) <= 4, n  # stratified by class as far as patients allow
    assert not patients["train"] & patients["val"] and not patients["train"] & patients["test"]
    assert not patients["val"] & patients["test"]
    again = tasks.load_task("chexpert", root.parent, size=8, seed=3)
    for s in data_io.SPLITS:
        assert again.splits[s].ids.tolist() == data.splits[s].ids.tolist()
        assert np.array_equal(again.splits[s].images, data.splits[s].images)
    other = tasks.load_task("chexpert", root.parent, size=8, seed=4)
    assert other.splits["test"].ids.tolist() != data.splits["test"].ids.tolist()


# --------------------------------------------------------------------------- the bad-input catalogue


def one_line(exc_info, *words):
    msg = str(exc_info.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_missing_file(tmp_path):
    with pytest.raises(DataError) as e:
        tasks.load_task("pneumonia", tmp_path, download=False)
    one_line(e, "pneumoniamnist.npz", "missing")


def test_missing_file_without_internet_says_where_to_put_it(tmp_path, monkeypatch):
    import pooch

    monkeypatch.setattr(pooch, "retrieve", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("offline")))
    with pytest.raises(DataError) as e:
        tasks.load_task("pneumonia", tmp_path, download=True)
    one_line(e, "pneumoniamnist.npz", "could not be downloaded", "place")


def test_truncated_npz(make_npz):
    path = make_npz()
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError) as e:
        readers.read_npz(path, 2)
    one_line(e, str(path), "truncated or corrupt")


def test_corrupt_npz(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 2)
    with pytest.raises(DataError) as e:
        readers.read_npz(path, 2)
    one_line(e, str(path), "truncated or corrupt", "516 bytes")


def test_missing_keys(make_npz):
    with pytest.raises(DataError) as e:
        readers.read_npz(make_npz(val_labels=None), 2)
    one_line(e, "missing keys", "val_labels")


def test_length_mismatch(make_npz):
    with pytest.raises(DataError) as e:
        readers.read_npz(make_npz(test_labels=np.zeros((3, 1), np.uint8)), 2)
    one_line(e, "[test]", "8 images but 3 labels")


def test_labels_out_of_range(make_npz):
    with pytest.raises(DataError) as e:
        readers.read_npz(make_npz(train_labels=np.full((24, 1), 7, np.uint8)), 2)
    one_line(e, "[train]", "out of range", "7")


def test_wrong_dtype(make_npz):
    with pytest.raises(DataError) as e:
        readers.read_npz(make_npz(val_images=np.zeros((8, 8, 8), np.float32)), 2)
    one_line(e, "[val]", "uint8", "float32")


def test_wrong_shape(make_npz):
    with pytest.raises(DataError) as e:
        readers.read_npz(make_npz(train_images=np.zeros((24, 8), np.uint8)), 2)
    one_line(e, "[train]", "shape")


def test_empty_split(make_npz):
    with pytest.raises(DataError) as e:
        readers.read_npz(make_npz(test_images=np.zeros((0, 8, 8), np.uint8), test_labels=np.zeros((0, 1), np.uint8)), 2)
    one_line(e, "[test]", "empty")


def test_unknown_task():
    with pytest.raises(DataError) as e:
        tasks.load_task("covid")
    one_line(e, "unknown task", "covid", "pneumonia")


def test_nan_after_preprocessing():
    images = np.zeros((2, 8, 8), np.float32)
    images[0, 3, 3] = np.nan
    with pytest.raises(DataError) as e:
        preprocess.to_tensor(images, 8, name="scan.npz [test]")
    one_line(e, "scan.npz [test]", "non-finite")


def test_bad_csv_label_and_missing_image(isic_folder):
    gt = isic_folder / "ISIC-2017_Validation_Part3_GroundTruth.csv"
    good = gt.read_text()
    gt.write_text(good.replace("ISIC_Va00001,1.0", "ISIC_Va00001,maybe"))
    with pytest.raises(DataError) as e:
        readers.read_isic2017(isic_folder, 8)
    one_line(e, gt.name, "not a number", "maybe")
    gt.write_text(good)
    (isic_folder / "ISIC-2017_Validation_Data" / "ISIC_Va00002.jpg").unlink()
    with pytest.raises(DataError) as e:
        readers.read_isic2017(isic_folder, 8)
    one_line(e, "ISIC_Va00002.jpg", "missing")


def test_corrupt_image(isic_folder):
    bad = isic_folder / "ISIC-2017_Test_v2_Data" / "ISIC_Te00001.jpg"
    bad.write_bytes(b"garbage")
    with pytest.raises(DataError) as e:
        readers.read_isic2017(isic_folder, 8)
    one_line(e, "ISIC_Te00001.jpg", "cannot decode")


def test_preprocess_range_and_determinism(make_npz):
    splits = readers.read_npz(make_npz(), 2)
    a = preprocess.to_tensor(splits["train"].images, 16)
    b = preprocess.to_tensor(splits["train"].images, 16)
    assert a.shape == (24, 1, 16, 16) and a.min() >= -1 and a.max() <= 1
    assert (a == b).all()


def test_preprocess_values_by_hand():
    """uint8 v -> v / 127.5 - 1 (0 -> -1, 255 -> 1), channels first with each channel's own pixels, and a resize that
    keeps where things are. Catches: an identity to_tensor (0-255 values, channels last), a [0, 1] scaling, swapped
    channels or a transposed image, and a resize that blurs everything to one value."""
    rgb = np.zeros((2, 2, 3, 3), np.uint8)  # two 2 x 3 RGB images
    rgb[0, :, :, 0] = [[0, 51, 102], [153, 204, 255]]  # red ramps across the image
    rgb[0, :, :, 1] = 255  # green full
    rgb[1] = 255
    x = preprocess.to_tensor(rgb)
    assert x.shape == (2, 3, 2, 3) and x.dtype == torch.float32
    np.testing.assert_allclose(x[0, 0].numpy(), [[-1.0, -0.6, -0.2], [0.2, 0.6, 1.0]], atol=1e-6)
    assert (x[0, 1] == 1).all() and (x[0, 2] == -1).all() and (x[1] == 1).all()
    grey = np.zeros((1, 16, 16), np.uint8)
    grey[0, :, 8:] = 255  # left half black, right half white
    y = preprocess.to_tensor(grey, 8)[0, 0].numpy()
    assert y.shape == (8, 8) and y.min() >= -1 and y.max() <= 1
    assert (y[:, :3] < -0.9).all() and (y[:, 5:] > 0.9).all()  # the far columns keep their value, left stays left
    np.testing.assert_allclose(y, y[:1].repeat(8, 0))  # no change down the columns
    np.testing.assert_allclose(y[:, :4], -y[:, ::-1][:, :4], atol=1e-6)  # symmetric about the middle
    const = preprocess.to_tensor(np.full((1, 12, 12, 3), 102, np.uint8), 5)
    np.testing.assert_allclose(const.numpy(), 102 / 127.5 - 1, atol=1e-6)


# --------------------------------------------------------------------------- decoded-image cache keyed by content


def test_cache_notices_an_edited_image(isic_folder):
    first = readers.read_isic2017(isic_folder, 8)
    edited = isic_folder / "ISIC-2017_Test_v2_Data" / "ISIC_Te00001.jpg"
    Image.fromarray(np.full((20, 30, 3), 255, np.uint8)).save(edited)  # same count, same name, new content
    with pytest.warns(UserWarning, match=r"1 changed \(first ISIC_Te00001.jpg\); decoding the images again"):
        second = readers.read_isic2017(isic_folder, 8)
    assert second["test"].images[1].min() > 240 and not np.array_equal(
        first["test"].images[1], second["test"].images[1]
    )
    assert np.array_equal(first["test"].images[[0, 2, 3]], second["test"].images[[0, 2, 3]])


def test_cache_never_serves_a_deleted_image(isic_folder):
    readers.read_isic2017(isic_folder, 8)
    (isic_folder / "ISIC-2017_Test_v2_Data" / "ISIC_Te00002.jpg").unlink()
    with pytest.raises(DataError) as e:
        readers.read_isic2017(isic_folder, 8)
    one_line(e, "ISIC_Te00002.jpg", "ISIC-2017_Test_v2_Part3_GroundTruth.csv: line 4", "missing")


def test_cache_of_another_folder_is_not_used(isic_folder, tmp_path):
    import shutil

    original = readers.read_isic2017(isic_folder, 8)
    copy = tmp_path / "copy" / "isic2017"
    shutil.copytree(isic_folder, copy)  # same names and counts, so the old cache key (source, split, size) collided
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(copy / "ISIC-2017_Test_v2_Data" / "ISIC_Te00000.jpg")
    copied = readers.read_isic2017(copy, 8)
    assert copied["test"].images[0].max() < 10 and original["test"].images[0].max() > 10


def test_unreadable_cache_is_rebuilt(isic_folder):
    from diffusion_classifier.core.paths import cache_dir

    first = readers.read_isic2017(isic_folder, 8)
    for f in cache_dir().glob("isic2017_val_*.npz"):
        f.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable"):
        again = readers.read_isic2017(isic_folder, 8)
    assert np.array_equal(first["val"].images, again["val"].images)


# --------------------------------------------------------------------------- ground-truth integrity


def edit_csv(folder, name, old, new):
    path = folder / f"ISIC-2017_{name}_Part3_GroundTruth.csv"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    return path


def test_duplicate_id_in_ground_truth(isic_folder):
    path = isic_folder / "ISIC-2017_Test_v2_Part3_GroundTruth.csv"
    path.write_text(path.read_text() + "ISIC_Te00001,1.0,0.0\n")  # one repeated row
    with pytest.raises(DataError) as e:
        readers.read_isic2017(isic_folder, 8)
    one_line(e, f"{path}: line 6", "'ISIC_Te00001' repeats", "line 3")


def test_same_image_in_two_splits(isic_folder):
    import shutil

    shutil.copy(isic_folder / "ISIC-2017_Training_Data" / "ISIC_Tr00002.jpg", isic_folder / "ISIC-2017_Validation_Data")
    path = edit_csv(isic_folder, "Validation", "ISIC_Va00003,", "ISIC_Tr00002,")
    with pytest.raises(DataError) as e:
        readers.read_isic2017(isic_folder, 8)
    one_line(e, f"{path}: line 5", "ISIC_Tr00002", "Training_Part3_GroundTruth.csv: line 4")


def test_contradictory_labels(isic_folder):
    path = edit_csv(isic_folder, "Test_v2", "ISIC_Te00001,1.0,0.0", "ISIC_Te00001,1.0,1.0")
    with pytest.raises(DataError) as e:
        readers.read_isic2017(isic_folder, 8)
    one_line(e, f"{path}: line 3", "melanoma and seborrheic_keratosis", "one class per image")


def test_label_that_is_not_zero_or_one(isic_folder):
    path = edit_csv(isic_folder, "Training", "ISIC_Tr00003,1.0,0.0", "ISIC_Tr00003,,0.0")
    with pytest.raises(DataError) as e:
        readers.read_isic2017(isic_folder, 8)
    one_line(e, f"{path}: line 5", "'melanoma'", "must be 0 or 1")


def test_images_without_ground_truth_warn_or_fail_when_strict(isic_folder):
    extra = isic_folder / "ISIC-2017_Training_Data" / "ISIC_9999999.jpg"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(extra)
    with pytest.warns(UserWarning, match="1 images not listed in ISIC-2017_Training_Part3_GroundTruth.csv"):
        data = tasks.load_task("melanoma", isic_folder.parent, size=8)
    assert len(data.splits["train"]) == 6
    with pytest.raises(DataError) as e:
        tasks.load_task("melanoma", isic_folder.parent, size=8, strict=True)
    one_line(e, "ISIC-2017_Training_Data", "ISIC_9999999.jpg", "strict")


@pytest.mark.parametrize(
    "content,words",
    [
        (b"", ["empty file", "0 bytes"]),
        (b"image_id,melanoma,seborrheic_keratosis\n", ["no rows", "header only"]),
        (
            b"image_id,melanoma,seborrheic_keratosis\nISIC_Va00000,0.0,0.0\nISIC_Va00001,1.0,0.0,extra\n",
            ["line 3", "4 fields, the header has 3"],
        ),
        (
            "image_id,melanoma,seborrheic_keratosis\nISIC_Va00000,0.0,0.0\nISIC_Vä00001,1.0,0.0\n".encode("latin-1"),
            ["line 3", "not UTF-8", "0xe4"],
        ),
        (b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00\xb5\xfa\x9c\x01", ["not UTF-8", "zip archive"]),
    ],
)
def test_unreadable_ground_truth_files(isic_folder, content, words):
    path = isic_folder / "ISIC-2017_Validation_Part3_GroundTruth.csv"
    path.write_bytes(content)
    with pytest.raises(DataError) as e:
        readers.read_isic2017(isic_folder, 8)
    one_line(e, str(path), *words)


def test_csv_with_byte_order_mark_is_read(isic_folder):
    path = isic_folder / "ISIC-2017_Validation_Part3_GroundTruth.csv"
    path.write_text("\ufeff" + path.read_text(), encoding="utf-8")  # as Excel saves "CSV UTF-8"
    assert readers.read_isic2017(isic_folder, 8)["val"].labels.tolist() == [0, 1, 0, 1]


def isic_csv_folder(tmp_path, header, rows):
    folder = tmp_path / "data" / "isic2020"
    (folder / "train").mkdir(parents=True)
    for r in rows:
        Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(folder / "train" / f"{r.split(',')[0]}.jpg")
    path = folder / "ISIC_2019_Training_GroundTruth.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_isic2019_one_hot_rows_must_name_one_class(tmp_path):
    rows = [f"ISIC_{i},{float(i % 2)},{float(1 - i % 2)},0.0" for i in range(20)]
    rows[7] = "ISIC_7,1.0,1.0,0.0"
    path = isic_csv_folder(tmp_path, "image,MEL,NV,BCC", rows)
    with pytest.raises(DataError) as e:
        tasks.load_task("isic2020", path.parent.parent, size=8)
    one_line(e, f"{path}: line 9", "'ISIC_7'", "MEL and NV", "one class per image")
    rows[7] = "ISIC_7,0.0,0.0,0.0"
    path.write_text("\n".join(["image,MEL,NV,BCC", *rows]) + "\n")
    with pytest.raises(DataError) as e:
        tasks.load_task("isic2020", path.parent.parent, size=8)
    one_line(e, f"{path}: line 9", "none of ['MEL', 'NV', 'BCC']")


def test_isic2020_target_contradicting_diagnosis_and_duplicate_name(tmp_path):
    rows = [f"ISIC_{i},{i % 2},{'malignant' if i % 2 else 'benign'}" for i in range(20)]
    rows[3] = "ISIC_3,1,benign"
    path = isic_csv_folder(tmp_path, "image_name,target,benign_malignant", rows)
    with pytest.raises(DataError) as e:
        tasks.load_task("isic2020", path.parent.parent, size=8)
    one_line(e, f"{path}: line 5", "target 1 contradicts benign_malignant 'benign'")
    rows[3] = "ISIC_5,1,malignant"
    path.write_text("\n".join(["image_name,target,benign_malignant", *rows]) + "\n")
    with pytest.raises(DataError) as e:
        tasks.load_task("isic2020", path.parent.parent, size=8)
    one_line(e, f"{path}: line 7", "'ISIC_5' repeats", "line 5")


def chexpert_edited(tmp_path, line, text):
    """A valid 40-patient CheXpert train.csv whose line `line` (the header is line 1) is replaced by `text`."""
    rows = [(p, 1, "view1_frontal", *(("", "1.0") if p % 2 else ("1.0", ""))) for p in range(40)]
    root = chexpert_train(tmp_path, rows)
    path = root / "train.csv"
    lines = path.read_text().splitlines()
    lines[line - 1] = text
    path.write_text("\n".join(lines) + "\n")
    return root


def test_chexpert_label_values_and_contradictions(tmp_path):
    good = f"{chexpert_path(2, 1)},Male,50,Frontal,AP"
    root = chexpert_edited(tmp_path, 4, f"{good},,0.5")
    with pytest.raises(DataError) as e:
        tasks.load_task("chexpert", root.parent, size=8)
    one_line(e, "train.csv: line 4", "'Pleural Effusion'", "must be 1, 0, -1 or blank", "0.5")
    root = chexpert_edited(tmp_path, 4, f"{good},1.0,1.0")
    with pytest.warns(UserWarning, match="1 study1/view1_frontal rows marked both 'No Finding' and 'Pleural Effusion'"):
        data = tasks.load_task("chexpert", root.parent, size=8)
    assert chexpert_path(2, 1) not in chexpert_labels(data)[0]


@pytest.mark.parametrize(
    "line,text,words",
    [
        (1, "Path,Sex,Age,Frontal/Lateral,AP/PA,Findings,Pleural Effusion", ["lacks columns", "'No Finding'"]),
        (
            3,
            "CheXpert-v1.0-small/train/p00001/study1/view1_frontal.jpg,Male,50,Frontal,AP,,1.0",
            ["line 3", "no patient id", "p00001/study1"],
        ),
        (
            3,
            "CheXpert-v1.0-small/train/patient00001/view1_frontal.jpg,Male,50,Frontal,AP,,1.0",
            ["line 3", "no patient id and study"],
        ),
        (3, f"{chexpert_path(1, 1)},Male,50,Frontal,AP,,yes", ["line 3", "'Pleural Effusion'", "not a number"]),
        (3, f"{chexpert_path(1, 1)},Male,50,Sideways,AP,,1.0", ["line 3", "'Frontal/Lateral'", "'Sideways'"]),
        (3, f"{chexpert_path(1, 1)},Male,50,Frontal,AP,,1.0,extra", ["line 3", "8 fields, the header has 7"]),
        (2, f"{chexpert_path(1, 1)},Male,50,Frontal,AP,,1.0", ["line 3", "repeats line 2"]),
    ],
)
def test_chexpert_malformed_train_csv(tmp_path, line, text, words):
    root = chexpert_edited(tmp_path, line, text)
    with pytest.raises(DataError) as e:
        tasks.load_task("chexpert", root.parent, size=8)
    one_line(e, str(root / "train.csv"), *words)


def test_chexpert_missing_image_or_class(tmp_path):
    root = chexpert_train(
        tmp_path, [(p, 1, "view1_frontal", *(("", "1.0") if p % 2 else ("1.0", ""))) for p in range(40)]
    )
    (root.parent / chexpert_path(7, 1)).unlink()
    with pytest.raises(DataError) as e:
        tasks.load_task("chexpert", root.parent, size=8)
    one_line(e, "patient00007/study1/view1_frontal.jpg", "train.csv: line 9", "missing")
    rows = [(p, 1, "view1_frontal", "", "1.0") for p in range(10)]
    root = chexpert_train(tmp_path / "positives_only", rows)
    with pytest.raises(DataError) as e:
        tasks.load_task("chexpert", root.parent, size=8)
    one_line(e, "train.csv", "no study1/view1_frontal row with 'No Finding' = 1", "nothing to classify")


def test_npz_that_is_a_text_file(tmp_path):
    path = tmp_path / "pneumoniamnist.npz"
    path.write_text("train_images,train_labels\n1,2\n")
    with pytest.raises(DataError) as e:
        tasks.load_task("pneumonia", tmp_path, download=False)
    one_line(e, str(path), "not an npz file", "30 bytes", "plain text")
    assert "pickle" not in str(e.value)


@pytest.mark.parametrize(
    "content,words",
    [
        (b"", ["it is empty (0 bytes)"]),
        (b"<!DOCTYPE html><html><body>Too many requests</body></html>", ["HTML", "failed download"]),
        (None, ["single .npy array"]),
    ],
)
def test_npz_that_is_something_else(tmp_path, content, words):
    path = tmp_path / "data.npz"
    if content is None:
        np.save(tmp_path / "data.npy", np.zeros(3))
        (tmp_path / "data.npy").rename(path)
    else:
        path.write_bytes(content)
    with pytest.raises(DataError) as e:
        readers.read_npz(path, 2)
    one_line(e, str(path), "not an npz file", *words)


def test_npz_with_pickled_objects(make_npz):
    path = make_npz(train_ids=np.array([{"id": 1}] * 24, dtype=object))
    with pytest.raises(DataError) as e:
        readers.read_npz(path, 2)
    one_line(e, str(path), "'train_ids'", "pickled Python objects")


def test_npz_duplicate_ids(make_npz):
    ids = {f"{s}_ids": np.array([f"{s}{i}" for i in range(n)]) for s, n in (("train", 24), ("val", 8), ("test", 8))}
    assert len(readers.read_npz(make_npz(**ids), 2)["test"]) == 8
    twice = ids["test_ids"].copy()
    twice[5] = twice[2]
    with pytest.raises(DataError) as e:
        readers.read_npz(make_npz(**{**ids, "test_ids": twice}), 2)
    one_line(e, "test_ids[5]", "'test2' repeats", "test_ids[2]")
    leak = ids["test_ids"].astype("<U8")  # room for a train id
    leak[0] = "train7"
    with pytest.raises(DataError) as e:
        readers.read_npz(make_npz(**{**ids, "test_ids": leak}), 2)
    one_line(e, "test_ids[0]", "'train7' repeats", "train_ids[7]")


def test_npz_multi_hot_labels(make_npz):
    labels = np.eye(3, dtype=np.uint8)[np.arange(24) % 3]
    with pytest.raises(DataError) as e:
        readers.read_npz(make_npz(train_labels=labels), 2)
    one_line(e, "[train]", "3 columns", "one class per image")


def test_a_new_task_is_one_registry_entry(tmp_path, monkeypatch):
    """A toy dataset: one entry in tasks.TASKS, and the study's setup, data summary and prompts know it."""
    from diffusion_classifier import study
    from diffusion_classifier.models import stable_diffusion

    rng = np.random.default_rng(0)
    arrays = {
        f"{s}_{k}": v
        for s, n in (("train", 12), ("val", 6), ("test", 6))
        for k, v in (("images", rng.integers(0, 255, (n, 16, 16, 1), dtype=np.uint8)), ("labels", np.arange(n) % 2))
    }
    np.savez(tmp_path / "toy.npz", **arrays)
    monkeypatch.setitem(
        tasks.TASKS,
        "toy",
        tasks.Task(
            ("a", "b"), "toy.npz", lambda source, *_: (readers.read_npz(source, 2), {}), ("an a", "a b"), channels=1
        ),
    )
    monkeypatch.setenv("DC_RUNS_DIR", str(tmp_path / "runs"))
    p = study.prepare("toy", "smoke", tmp_path, 0)
    assert p.class_names == ["a", "b"] and p.x["train"].shape == (12, 1, 16, 16)
    assert study.available_tasks(["toy"], tmp_path) == (["toy"], [])
    assert {r["class"] for r in tasks.summary_table(p.data)} == {"a", "b"}
    assert stable_diffusion.prompts_for("toy", p.class_names) == ["an a", "a b"]
    assert stable_diffusion.prompts_for("unregistered", ["x"]) == ["a medical image of x"]
