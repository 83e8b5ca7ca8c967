"""Every seed the package mixes from a run's seed, in one place:

derive       a named stream of a run's seed (e.g. the judge's draws in the faithfulness tests, which must never
             coincide with the draws that made a map)
draw_seed    the scoring engine's draw (image, draw)
epoch_seed   a ResNet-18 training epoch
step_seed    a denoiser training step (its batch, flips, times, noise and label dropout)
val_seed     the fixed noise of one class's validation loss (the same at every evaluation)
stage_seed   the re-initialisation of stage `stage` in the cascading model-randomisation test"""

import hashlib


def derive(seed: int, *keys) -> int:
    """A seed in [0, 2**26) determined by (seed, *keys) alone; different keys give unrelated streams. 26 bits,
    because the scoring engine mixes a seed with image and draw indices into one 64-bit generator seed."""
    text = "/".join(str(k) for k in (seed, *keys))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") % (1 << 26)


def draw_seed(seed: int, image: int, draw: int) -> int:
    """The generator seed of the scoring engine's draw (time and noise) `draw` of image `image` under a run's seed:
    a function of the three alone, so a draw never depends on batching, chunking, processes or the number of draws.
    draw = -1 seeds an image's shuffled time grid. Fits 64 bits for any seed from `derive` (below 2**26)."""
    return (seed * 1_000_003 + image) * 100_003 + draw


def epoch_seed(seed: int, epoch: int) -> int:
    """The generator seed of one ResNet-18 training epoch (its batches, flips and shifts)."""
    return seed * 1000 + epoch


def step_seed(seed: int, step: int) -> int:
    """The generator seed of denoiser training step `step`: the same in every process (each takes its slice of the
    batch), so a resumed or multi-process run draws what one uninterrupted process draws."""
    return seed * 1_000_003 + step * 101


def val_seed(seed: int, class_index: int) -> int:
    """The generator seed of the validation loss of one class: fixed, so evaluations differ only in the weights."""
    return seed + 7919 * class_index


def stage_seed(seed: int, stage: int) -> int:
    """The generator seed that re-initialises stage `stage` (0 = the top) of the cascading randomisation test."""
    return seed + stage
