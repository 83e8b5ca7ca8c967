"""Data layer: real counts on the shared files, the readers on synthetic layouts, and the bad-input catalogue."""
import numpy as np
import pytest
from PIL import Image

from conftest import REAL_DATA
from diffusion_classifier import datasets, preprocess
from diffusion_classifier.errors import DataError


def counts(data):
    return {s: data.splits[s].counts(2).tolist() for s in ("train", "val", "test")}


@pytest.mark.skipif(not (REAL_DATA / "pneumoniamnist.npz").exists(), reason="shared data absent")
def test_pneumonia_official_counts():
    data = datasets.load_task("pneumonia", REAL_DATA, download=False)
    assert counts(data) == {"train": [1214, 3494], "val": [135, 389], "test": [234, 390]}
    assert data.class_names == ["normal", "pneumonia"]
    assert data.splits["train"].images.shape[1:] == (28, 28, 1)


@pytest.mark.skipif(not (REAL_DATA / "isic2017").exists(), reason="shared data absent")
def test_melanoma_official_counts_and_cache(monkeypatch):
    data = datasets.load_task("melanoma", REAL_DATA, size=32)
    assert counts(data) == {"train": [1626, 374], "val": [120, 30], "test": [483, 117]}
    assert data.splits["test"].images.shape == (600, 32, 32, 3)
    # second load comes from the cache: decoding is never called again
    monkeypatch.setattr(datasets, "_decode", lambda *a: (_ for _ in ()).throw(AssertionError("decoded twice")))
    again = datasets.load_task("melanoma", REAL_DATA, size=32)
    assert np.array_equal(again.splits["test"].images, data.splits["test"].images)


def test_npz_reader_normalises_shapes(make_npz):
    path = make_npz()
    splits = datasets.read_npz(path, 2)
    assert splits["train"].images.shape == (24, 8, 8, 1) and splits["train"].labels.dtype == np.int64


def test_isic_folder_reader(isic_folder):
    splits = datasets.read_isic2017(isic_folder, 16)
    assert splits["train"].images.shape == (6, 16, 16, 3)
    assert splits["val"].labels.tolist() == [0, 1, 0, 1]
    assert list(splits["test"].ids[:1]) == ["ISIC_Te00000"]


def test_dermamnist_keeps_melanoma_and_nevus(make_npz):
    labels = np.array([[4], [5], [0], [4], [5], [2]], dtype=np.uint8)
    imgs = np.zeros((6, 8, 8, 3), dtype=np.uint8)
    path = make_npz("dermamnist.npz", channels=3, train_images=imgs, train_labels=labels, val_images=imgs,
                    val_labels=labels, test_images=imgs, test_labels=labels)
    data = datasets.load_task("dermamnist", path.parent, download=False)
    assert data.splits["train"].labels.tolist() == [1, 0, 1, 0]


def test_isic_csv_layout(tmp_path):
    folder = tmp_path / "data" / "isic2020"
    (folder / "train").mkdir(parents=True)
    lines = ["image_name,target"]
    for i in range(20):
        Image.fromarray(np.full((10, 10, 3), i * 10, dtype=np.uint8)).save(folder / "train" / f"ISIC_{i}.jpg")
        lines.append(f"ISIC_{i},{i % 2}")
    (folder / "ISIC_2020_Training_GroundTruth.csv").write_text("\n".join(lines))
    data = datasets.load_task("isic2020", folder.parent, size=8)
    assert sum(len(s) for s in data.splits.values()) == 20
    assert counts(data)["train"] == [8, 8]


def test_chexpert_layout_drops_uncertain_and_balances(tmp_path):
    root = tmp_path / "data" / "CheXpert-v1.0-small"
    rows = ["Path,Frontal/Lateral,Pleural Effusion"]
    for split, n in (("train", 40), ("valid", 10)):
        for i in range(n):
            rel = f"CheXpert-v1.0-small/{split}/patient{i:05d}/study1/view1_frontal.jpg"
            (tmp_path / "data" / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((12, 12), i, dtype=np.uint8)).save(tmp_path / "data" / rel)
            value = ["1.0", "0.0", "-1.0", ""][i % 4]
            rows.append(f"{rel},{'Lateral' if i == 5 else 'Frontal'},{value}")
        (root / f"{split}.csv").write_text("\n".join(rows))
        rows = rows[:1]
    data = datasets.load_task("chexpert", root.parent, size=8)
    for s in ("train", "val", "test"):
        assert set(data.splits[s].labels.tolist()) <= {0, 1}
    total = np.sum([data.splits[s].counts(2) for s in ("train", "val")], axis=0)
    assert total[0] == total[1]  # balanced by subsampling


# --------------------------------------------------------------------------- the bad-input catalogue

def one_line(exc_info, *words):
    msg = str(exc_info.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_missing_file(tmp_path):
    with pytest.raises(DataError) as e:
        datasets.load_task("pneumonia", tmp_path, download=False)
    one_line(e, "pneumoniamnist.npz", "missing")


def test_missing_file_without_internet_says_where_to_put_it(tmp_path, monkeypatch):
    import pooch
    monkeypatch.setattr(pooch, "retrieve", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("offline")))
    with pytest.raises(DataError) as e:
        datasets.load_task("pneumonia", tmp_path, download=True)
    one_line(e, "pneumoniamnist.npz", "could not be downloaded", "place")


def test_truncated_npz(make_npz):
    path = make_npz()
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError) as e:
        datasets.read_npz(path, 2)
    one_line(e, str(path), "truncated or corrupt")


def test_corrupt_npz(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"not a zip file at all" * 10)
    with pytest.raises(DataError) as e:
        datasets.read_npz(path, 2)
    one_line(e, str(path), "corrupt")


def test_missing_keys(make_npz):
    with pytest.raises(DataError) as e:
        datasets.read_npz(make_npz(val_labels=None), 2)
    one_line(e, "missing keys", "val_labels")


def test_length_mismatch(make_npz):
    with pytest.raises(DataError) as e:
        datasets.read_npz(make_npz(test_labels=np.zeros((3, 1), np.uint8)), 2)
    one_line(e, "[test]", "8 images but 3 labels")


def test_labels_out_of_range(make_npz):
    with pytest.raises(DataError) as e:
        datasets.read_npz(make_npz(train_labels=np.full((24, 1), 7, np.uint8)), 2)
    one_line(e, "[train]", "out of range", "7")


def test_wrong_dtype(make_npz):
    with pytest.raises(DataError) as e:
        datasets.read_npz(make_npz(val_images=np.zeros((8, 8, 8), np.float32)), 2)
    one_line(e, "[val]", "uint8", "float32")


def test_wrong_shape(make_npz):
    with pytest.raises(DataError) as e:
        datasets.read_npz(make_npz(train_images=np.zeros((24, 8), np.uint8)), 2)
    one_line(e, "[train]", "shape")


def test_empty_split(make_npz):
    with pytest.raises(DataError) as e:
        datasets.read_npz(make_npz(test_images=np.zeros((0, 8, 8), np.uint8), test_labels=np.zeros((0, 1), np.uint8)), 2)
    one_line(e, "[test]", "empty")


def test_unknown_task():
    with pytest.raises(DataError) as e:
        datasets.load_task("covid")
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
        datasets.read_isic2017(isic_folder, 8)
    one_line(e, gt.name, "not a number", "maybe")
    gt.write_text(good)
    (isic_folder / "ISIC-2017_Validation_Data" / "ISIC_Va00002.jpg").unlink()
    with pytest.raises(DataError) as e:
        datasets.read_isic2017(isic_folder, 8)
    one_line(e, "ISIC_Va00002.jpg", "missing")


def test_corrupt_image(isic_folder):
    bad = isic_folder / "ISIC-2017_Test_v2_Data" / "ISIC_Te00001.jpg"
    bad.write_bytes(b"garbage")
    with pytest.raises(DataError) as e:
        datasets.read_isic2017(isic_folder, 8)
    one_line(e, "ISIC_Te00001.jpg", "cannot decode")


def test_preprocess_range_and_determinism(make_npz):
    splits = datasets.read_npz(make_npz(), 2)
    a = preprocess.to_tensor(splits["train"].images, 16)
    b = preprocess.to_tensor(splits["train"].images, 16)
    assert a.shape == (24, 1, 16, 16) and a.min() >= -1 and a.max() <= 1
    assert (a == b).all()
