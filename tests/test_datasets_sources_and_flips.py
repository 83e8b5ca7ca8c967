"""Per-source reading of npz files (`readers.read_npz`, the ISIC 2017 + 2018 file carries a source per image) and
the chest X-rays' no-vertical-flip setting, both followed to where the study uses them: `study.prepare`'s per-split
sources (which feed the per-source rows of claim 1) and the batches the ResNet-18 and the denoiser train on.

Planted images: every image of the npz is constant with a value unique in the file (its code), so an image read
back names itself, and its planted source, label and id can be checked one by one. For the flips, an image bright
on top and dark below (and darker left than right): a vertical flip puts the dark half on top.
"""

import numpy as np
import pytest
import torch
from conftest import tiny_cfg

from diffusion_classifier import profiles, study
from diffusion_classifier.data import preprocess, readers
from diffusion_classifier.training import diffusion, resnet

N = {"train": 12, "val": 6, "test": 8}
OFFSET = {"train": 10, "val": 40, "test": 70}  # image codes: OFFSET + 2 * i, unique over the file


def planted_splits() -> dict:
    rng = np.random.default_rng(5)
    out = {}
    for split, n in N.items():
        codes = OFFSET[split] + 2 * np.arange(n)
        sources = np.array(["isic2017", "isic2018"])[rng.permutation(np.arange(n) % 2)]  # interleaved, both present
        labels = rng.permutation(np.arange(n) % 2)  # independent of the source
        # ids restart per source, so the same id appears under both sources (allowed: separate archives); no id is in
        # two splits of one source (refused: a train/test leak)
        ids = np.empty(n, dtype=object)
        for s in ("isic2017", "isic2018"):
            where = np.flatnonzero(sources == s)
            ids[where] = [f"ISIC_{100 * OFFSET[split] + k:07d}" for k in range(len(where))]
        out[split] = {"codes": codes, "sources": sources, "labels": labels, "ids": ids.astype(str)}
    return out


@pytest.fixture(params=[True, False], ids=["with-ids", "sources-only"])
def isic_npz(make_npz, request):
    """The npz with per-image sources, with or without ids (without, nothing but the source check itself can notice
    sources in the wrong order)."""
    planted = planted_splits()
    arrays = {}
    for split, p in planted.items():
        arrays[f"{split}_images"] = np.broadcast_to(p["codes"][:, None, None, None], (N[split], 4, 4, 3)).astype(
            np.uint8
        )
        arrays[f"{split}_labels"] = p["labels"][:, None].astype(np.uint8)
        arrays[f"{split}_source"] = p["sources"]
        if request.param:
            arrays[f"{split}_ids"] = p["ids"]
    return make_npz("isic_melanoma_64.npz", **arrays), planted, request.param


def test_read_npz_keeps_each_images_source_label_and_id(isic_npz):
    """Catches: the source array not read (a misnamed key: sources None, one source), read in another order (shuffled
    or rolled against the images), or read from another split; ids checked for uniqueness across sources instead of
    within each source (the coinciding ids here would be refused)."""
    path, planted, with_ids = isic_npz
    splits = readers.read_npz(path, 2)
    for split, p in planted.items():
        s = splits[split]
        np.testing.assert_array_equal(s.images[:, 0, 0, 0], p["codes"])
        assert s.images.shape == (N[split], 4, 4, 3)
        np.testing.assert_array_equal(s.labels, p["labels"])
        assert s.sources is not None and s.sources.tolist() == p["sources"].tolist()
        assert s.ids.tolist() == p["ids"].tolist() if with_ids else s.ids is None
        # both sources present in every split, with both labels
        for src in ("isic2017", "isic2018"):
            assert set(s.labels[s.sources == src]) <= {0, 1} and (s.sources == src).sum() == N[split] // 2


def test_the_study_carries_each_images_source_through_loading_and_subsetting(isic_npz):
    """`study.prepare` subsets each split (max_per_split) and gives `p.sources` beside `p.x` and `p.y`, which
    notebook 04 passes to `ablation.baseline_rows`. Catches: sources not subset with the same indices as the images
    (e.g. the first rows instead), dropped, or taken from another split."""
    path, planted, _ = isic_npz
    p = study.prepare("melanoma_balanced", "smoke", path.parent, 0, {"data": {"max_per_split": 5}})
    lookup = {
        int(code): (src, int(lab))
        for q in planted.values()
        for code, src, lab in zip(q["codes"], q["sources"], q["labels"])
    }
    for split in N:
        x = p.x[split]
        assert len(x) == len(p.y[split]) == len(p.sources[split]) <= 5
        codes = ((x[:, 0].mean((1, 2)) + 1) * 127.5).round().int().tolist()
        assert all(c in range(OFFSET[split], OFFSET[split] + 2 * N[split], 2) for c in codes), (split, codes)
        got = [(str(s), int(y)) for s, y in zip(p.sources[split], p.y[split])]
        assert got == [lookup[c] for c in codes], split
    # the subset of test is not simply the first rows (else a first-rows bug could pass)
    test_codes = ((p.x["test"][:, 0].mean((1, 2)) + 1) * 127.5).round().int().tolist()
    assert test_codes != [OFFSET["test"] + 2 * i for i in range(len(test_codes))]


# ----------------------------------------------------------------------------- vertical flips

CHEST, SKIN = ("pneumonia", "chexpert"), ("melanoma", "melanoma_balanced")


@pytest.mark.parametrize("profile", sorted(profiles.PROFILES))
def test_chest_tasks_never_flip_vertically_in_any_profile(profile):
    """Catches: vflip switched on in the base settings or a profile for the chest X-ray tasks; the skin tasks'
    vertical flips (dermoscopy has no up) switched off."""
    for task in CHEST:
        d = profiles.get_profile(profile, task)["data"]
        assert d["vflip"] is False and d["hflip"] is True, (profile, task)
    for task in SKIN:
        assert profiles.get_profile(profile, task)["data"]["vflip"] is True, (profile, task)


def oriented_images(n: int, size: int = 8) -> torch.Tensor:
    """Bright top half, dark bottom half, and a left-to-right ramp."""
    x = torch.full((n, 1, size, size), -0.8)
    x[:, :, : size // 2] = 0.8
    x += torch.linspace(-0.1, 0.1, size)[None, None, None, :]
    return x


def upright(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-2] // 2
    return x[:, :, :h].mean((1, 2, 3)) > x[:, :, h:].mean((1, 2, 3))


def mirrored(x: torch.Tensor) -> torch.Tensor:
    w = x.shape[-1] // 2
    return x[..., :w].mean((1, 2, 3)) > x[..., w:].mean((1, 2, 3))


@pytest.mark.parametrize("task", ["pneumonia", "melanoma_balanced"])
def test_augmentation_flips_chest_xrays_only_horizontally(task):
    """2000 augmentation draws with the task's settings: the chest X-ray is never upside down but mirrored about half
    the time; the skin image is upside down about half the time. Catches: `augment` flipping the wrong axis for
    hflip (-2 for -1), ignoring its vflip argument, or the settings not reaching it."""
    d = profiles.get_profile("smoke", task)["data"]
    x = oriented_images(2000)
    out = preprocess.augment(x, torch.Generator().manual_seed(0), d["hflip"], d["vflip"])
    assert 0.4 < mirrored(out).float().mean() < 0.6
    flipped = (~upright(out)).float().mean()
    if task == "pneumonia":
        assert flipped == 0
    else:
        assert 0.4 < flipped < 0.6
    assert torch.equal(torch.sort(out.flatten(1), 1).values, torch.sort(x.flatten(1), 1).values)  # flips only


class Spy(torch.nn.Module):
    """Wraps the ResNet and keeps every batch it sees in training mode."""

    def __init__(self, net):
        super().__init__()
        self.net, self.seen = net, []

    def forward(self, x):
        if self.training:
            self.seen.append(x.detach().clone())
        return self.net(x)


@pytest.mark.parametrize("task", ["pneumonia", "melanoma_balanced"])
def test_the_resnet_trains_on_upright_chest_xrays(tmp_path, monkeypatch, task):
    """The batches the ResNet-18 trains on (after its flips and shifts): never upside down for pneumonia, sometimes
    for the skin task (the control that shows the check can see a flip). Catches: `train_baseline` passing hflip as
    vflip, or a hard-coded vflip=True."""
    spies, build_resnet18 = [], resnet.build_resnet18

    def build(*args):
        spies.append(Spy(build_resnet18(*args)))
        return spies[-1]

    monkeypatch.setattr(resnet, "build_resnet18", build)
    monkeypatch.setattr(resnet, "predict_proba", lambda model, x, **kw: np.tile([0.5, 0.5], (len(x), 1)))
    cfg = profiles.get_profile(
        "smoke", task, {"baseline": {"epochs": 2, "batch_size": 32}, "train": {"mixed_precision": "no"}}
    )
    x, y = oriented_images(32), np.arange(32) % 2
    resnet.train_baseline(cfg, x, y, x[:4], y[:4], 2, tmp_path / "run")
    seen = torch.cat(spies[0].seen)
    assert len(seen) == 64
    flipped = (~upright(seen)).float().mean()
    assert flipped == 0 if task == "pneumonia" else 0.3 < flipped < 0.7
    assert 0.3 < mirrored(seen).float().mean() < 0.7


@pytest.mark.parametrize("vflip", [False, True], ids=["pneumonia", "skin-like"])
def test_the_denoiser_trains_on_upright_chest_xrays(tmp_path, monkeypatch, vflip):
    """The same for the diffusion training loop: the images handed to the loss are never upside down with the
    pneumonia settings, and sometimes are with vflip on. Catches: the training loop passing other flags to
    `augment` than the task's."""
    seen = []
    real = diffusion.diffusion_loss

    def spy(model, x0, *args, **kwargs):
        seen.append(x0.detach().clone())
        return real(model, x0, *args, **kwargs)

    monkeypatch.setattr(diffusion, "diffusion_loss", spy)
    cfg = tiny_cfg(steps=4, checkpoint_every=4, batch_size=16)
    assert cfg["task"] == "pneumonia" and cfg["data"]["vflip"] is False
    cfg["data"]["vflip"] = vflip
    x, y = oriented_images(32), np.arange(32) % 2
    diffusion.train_denoiser(cfg, x, y, x[:8], y[:8], ["normal", "pneumonia"], tmp_path / "run")
    train_batches = torch.cat([s for s in seen if len(s) == 16])
    assert len(train_batches) >= 64
    flipped = (~upright(train_batches)).float().mean()
    assert flipped == 0 if not vflip else 0.3 < flipped < 0.7
