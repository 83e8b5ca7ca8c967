import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL_DATA = Path(os.environ.get("DATA_ROOT", SHARED))


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path, monkeypatch):
    """Caches, checkpoints and results of a test never touch the checkout's folders."""
    monkeypatch.setenv("DC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DC_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("DC_RESULTS_DIR", str(tmp_path / "results"))


def synthetic_split(rng, n, size=8, channels=None, n_classes=2):
    shape = (n, size, size) if channels is None else (n, size, size, channels)
    labels = np.arange(n) % n_classes
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    # class 1 is brighter, so tiny models have something to learn
    images[labels == 1] = np.clip(images[labels == 1].astype(int) + 60, 0, 255).astype(np.uint8)
    return images, labels.astype(np.uint8)[:, None]


@pytest.fixture
def make_npz(tmp_path):
    """Write a MedMNIST-layout npz; keyword arguments replace or drop (None) entries."""

    def make(name="pneumoniamnist.npz", n=(24, 8, 8), size=8, channels=None, n_classes=2, **replace):
        rng = np.random.default_rng(0)
        arrays = {}
        for split, k in zip(("train", "val", "test"), n):
            arrays[f"{split}_images"], arrays[f"{split}_labels"] = synthetic_split(rng, k, size, channels, n_classes)
        for key, value in replace.items():
            if value is None:
                arrays.pop(key)
            else:
                arrays[key] = value
        path = tmp_path / "data" / name
        path.parent.mkdir(exist_ok=True)
        np.savez(path, **arrays)
        return path

    return make


@pytest.fixture
def isic_folder(tmp_path):
    """A miniature ISIC 2017 Task 3 folder in the official layout (synthetic JPEGs)."""
    root = tmp_path / "data" / "isic2017"
    rng = np.random.default_rng(0)
    for name, n in (("Training", 6), ("Validation", 4), ("Test_v2", 4)):
        d = root / f"ISIC-2017_{name}_Data"
        d.mkdir(parents=True)
        lines = ["image_id,melanoma,seborrheic_keratosis"]
        for i in range(n):
            iid = f"ISIC_{name[:2]}{i:05d}"
            Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(d / f"{iid}.jpg")
            lines.append(f"{iid},{float(i % 2)},0.0")
        (root / f"ISIC-2017_{name}_Part3_GroundTruth.csv").write_text("\n".join(lines) + "\n")
    return root


def tiny_cfg(**train):
    from diffusion_classifier import profiles

    cfg = profiles.get_profile(
        "smoke",
        "pneumonia",
        {
            "data": {"resolution": 8},
            "unet": {"block_out_channels": [8, 16], "norm_num_groups": 4},
            "train": {
                "steps": 8,
                "batch_size": 16,
                "warmup_steps": 2,
                "checkpoint_every": 4,
                "log_every": 2,
                "lr": 2e-3,
                "mixed_precision": "no",
                **train,
            },
        },
    )
    return cfg


def tiny_training_data():
    import torch

    g = torch.Generator().manual_seed(0)
    y = torch.arange(64) % 2
    x = (torch.rand(64, 1, 8, 8, generator=g) * 0.5 - 0.75 + 0.9 * y[:, None, None, None]).clamp(-1, 1)
    return x, y.numpy()


@pytest.fixture
def tiny_data():
    return tiny_training_data()


@pytest.fixture
def tiny_model():
    import torch

    from diffusion_classifier.models.denoiser import Denoiser, build_unet

    torch.manual_seed(0)
    cfg = tiny_cfg()
    return Denoiser(build_unet(cfg, 1, 2), cfg, ["a", "b"]).eval()


@pytest.fixture
def smoke_checkpoint(tmp_path):
    """A tiny untrained pneumonia denoiser saved at the smoke profile's resolution (16 px), as the CLI expects."""
    import torch

    from diffusion_classifier.models.denoiser import Denoiser, build_unet

    torch.manual_seed(0)
    cfg = tiny_cfg()
    cfg["data"]["resolution"] = 16
    return Denoiser(build_unet(cfg, 1, 2), cfg, ["normal", "pneumonia"]).save(tmp_path / "ckpt")


def one_line_checkpoint_error(call, *words):
    """`call()` raises a one-line CheckpointError whose message contains every word."""
    from diffusion_classifier.core.errors import CheckpointError

    with pytest.raises(CheckpointError) as e:
        call()
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg
