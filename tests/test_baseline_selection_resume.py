"""The ResNet-18 baseline's epoch selection and re-runs (`resnet.train_baseline`), on a tiny real training run
whose validation predictions are planted: `resnet.predict_proba`, which the loop calls once per epoch on the
validation images, is replaced by a stub that records the weights it is handed and returns planted probabilities.
So the validation loss and AUC of every epoch are known by hand, and the weights of every epoch are known.

What the ResNet's "resume" is: a finished run (best weights and history.json) is loaded instead of trained again;
a run stopped before its end has no history.json and is trained again from its first epoch (there is no
mid-run resume for the baseline; its seeded epochs make the re-run end with the uninterrupted run's weights).
"""

import numpy as np
import pytest
import torch

from diffusion_classifier import profiles
from diffusion_classifier.training import resnet

Y_VAL = np.array([0, 0, 1, 1])
# per epoch: the planted probability of class 1 for the validation images (two negatives, then two positives)
PLANTED = [
    [0.45, 0.55, 0.5, 0.52],  # AUC 2/4 = 0.5
    [0.4, 0.45, 0.55, 0.6],  # AUC 1.0
    [0.01, 0.6, 0.99, 0.55],  # AUC 3/4; the lowest balanced loss
    [0.3, 0.6, 0.7, 0.4],  # AUC 3/4
    [0.45, 0.5, 0.5, 0.55],  # AUC 3.5/4 (one tie)
    [0.5, 0.5, 0.5, 0.5],  # AUC 0.5, loss log 2
    [0.01, 0.01, 0.99, 0.99],  # the best epoch by both criteria, never reached: training stops before
]
PLANTED_AUC = [0.5, 1.0, 0.75, 0.75, 0.875, 0.5, 1.0]


def planted_loss(p1) -> float:
    """Class-balanced cross-entropy, by hand: the mean over the two classes of the mean -log p(true class)."""
    p1 = np.asarray(p1)
    return float((np.mean(-np.log(1 - p1[:2])) + np.mean(-np.log(p1[2:]))) / 2)


PLANTED_LOSS = [planted_loss(p) for p in PLANTED]  # 0.686, 0.554, 0.380, 0.636, 0.671, 0.693, 0.010


class Stopped(Exception):
    """The stand-in for a kill during an epoch."""


class PlantedValidation:
    """Stands in for resnet.predict_proba: returns the planted probabilities of the next epoch and keeps a copy
    of the weights it was called with (the weights at the end of that epoch). `fail_at`: raise on that epoch."""

    def __init__(self, planted=PLANTED, fail_at=None):
        self.planted, self.fail_at, self.weights = planted, fail_at, []

    def __call__(self, model, x, batch_size=256, device=None, precision="no"):
        epoch = len(self.weights) + 1
        if epoch == self.fail_at:
            raise Stopped(f"stopped during epoch {epoch}")
        self.weights.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        p1 = np.asarray(self.planted[epoch - 1], dtype=np.float32)
        return np.stack([1 - p1, p1], 1)


def cfg(**b):
    return profiles.get_profile(
        "smoke",
        "pneumonia",
        {
            "baseline": {"epochs": 7, "batch_size": 16, "patience": 3, "min_epochs": 3, **b},  # 1 step per epoch
            "train": {"mixed_precision": "no"},
        },
    )


def data():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(16) % 2
    x = (torch.rand(16, 1, 8, 8, generator=g) - 0.5 + 0.5 * y[:, None, None, None]).clamp(-1, 1)
    x_val = torch.rand(4, 1, 8, 8, generator=g) * 2 - 1
    return x, y.numpy(), x_val, Y_VAL


def train(monkeypatch, out_dir, stub, **b):
    monkeypatch.setattr(resnet, "predict_proba", stub)
    x, y, xv, yv = data()
    return resnet.train_baseline(cfg(**b), x, y, xv, yv, 2, out_dir)


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def loss_run(tmp_path_factory):
    """One uninterrupted run selected on the validation loss, shared by the tests that read it (each run costs)."""
    out = tmp_path_factory.mktemp("baseline") / "run"
    with pytest.MonkeyPatch.context() as mp:
        stub = PlantedValidation()
        model, history = train(mp, out, stub)
    return model, history, stub, out


@pytest.mark.parametrize(
    "select_on, selected, epochs_run",
    [
        # loss: new bests at 1, 2, 3; epochs 4, 5, 6 do not improve -> stop after 6 (patience 3); keep epoch 3
        ("val_loss", 3, 6),
        # AUC: new bests at 1, 2; epochs 3, 4, 5 do not improve (5's 0.875 < 1.0) -> stop after 5; keep epoch 2
        ("val_auc", 2, 5),
    ],
)
def test_the_kept_weights_are_those_of_the_best_validation_epoch(
    tmp_path, monkeypatch, loss_run, select_on, selected, epochs_run
):
    """Catches: the last epoch's weights returned instead of the best one's; `<` turned into `>` (the worst epoch);
    select_on ignored (loss and AUC pick epochs 3 and 2 here); AUC maximised as a loss (minimised); patience not
    applied (epoch 7, the best by both, would be reached); the history's numbers or `selected` marks wrong."""
    if select_on == "val_loss":
        model, history, stub, _ = loss_run
    else:
        stub = PlantedValidation()
        model, history = train(monkeypatch, tmp_path / "run", stub, select_on=select_on)
    assert [h["epoch"] for h in history] == list(range(1, epochs_run + 1))
    np.testing.assert_allclose([h["val_loss"] for h in history], PLANTED_LOSS[:epochs_run], rtol=1e-5)
    assert [h["val_auc"] for h in history] == PLANTED_AUC[:epochs_run]
    criterion = PLANTED_LOSS if select_on == "val_loss" else [-a for a in PLANTED_AUC]
    new_best = [e + 1 for e in range(epochs_run) if criterion[e] < min(criterion[:e], default=np.inf)]
    assert [h["epoch"] for h in history if h.get("selected")] == new_best
    assert resnet.selected_epoch(history) == selected == new_best[-1]

    # the returned model holds exactly the weights at the end of the selected epoch, not those of the last epoch
    assert len(stub.weights) == epochs_run
    assert same_weights(model.state_dict(), stub.weights[selected - 1])
    assert not same_weights(model.state_dict(), stub.weights[-1])


def test_no_early_stop_before_min_epochs(tmp_path, monkeypatch):
    """The loss only worsens after epoch 1; with patience 1 the run may stop after epoch 2, but min_epochs = 4 keeps
    it going to epoch 4. Catches: min_epochs ignored (2 epochs), or patience ignored (all 7)."""
    worsening = [[0.3, 0.35, 0.7, 0.65]] + [[0.3 + 0.02 * e, 0.4, 0.6, 0.65 - 0.02 * e] for e in range(1, 7)]
    model, history = train(monkeypatch, tmp_path / "run", PlantedValidation(worsening), patience=1, min_epochs=4)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert resnet.selected_epoch(history) == 1


def test_a_finished_run_is_loaded_not_trained_again(monkeypatch, loss_run):
    """Catches: a re-run that trains again (the stub then raises), one that returns freshly initialised or last-epoch
    weights instead of the stored best ones, or a history that is not the stored one."""
    first_model, first_history, first_stub, out = loss_run
    again, history = train(monkeypatch, out, PlantedValidation(fail_at=1))  # any training would raise
    assert history == first_history
    assert same_weights(again.state_dict(), first_model.state_dict())
    assert same_weights(again.state_dict(), first_stub.weights[resnet.selected_epoch(history) - 1])


def test_a_run_stopped_midway_is_trained_again_to_the_same_weights(tmp_path, monkeypatch, loss_run):
    """A run interrupted during epoch 5 has written best weights (epoch 3) but no history: a re-run trains from
    epoch 1 and ends bit-identical to an uninterrupted run in another folder (seeded epochs). Catches: a re-run that
    takes the interrupted run's best file as finished (its history would be missing or its weights those of the
    interrupted run's epoch 3 while the stub expects 6 epochs), or unseeded epochs."""
    whole, whole_history, _, _ = loss_run

    out = tmp_path / "stopped"
    with pytest.raises(Stopped):
        train(monkeypatch, out, PlantedValidation(fail_at=5))
    assert (out / "best.safetensors").exists() and not (out / "history.json").exists()

    stub = PlantedValidation()
    again, history = train(monkeypatch, out, stub)
    assert len(stub.weights) == 6 and history == whole_history  # trained from epoch 1 again
    assert same_weights(again.state_dict(), whole.state_dict())
    assert same_weights(again.state_dict(), stub.weights[resnet.selected_epoch(history) - 1])
