"""One-level 2D Haar wavelet transform, the authors' input space (METHOD.md "Models"; their utils/wavelet.py).

Per channel, each 2 x 2 block [[a, b], [c, d]] becomes four coefficients, in the order of PyWavelets' `dwt2`
(cA, cH, cV, cD) and divided by 2 as the authors do, so that every coefficient of an image in [-1, 1] is in [-1, 1]:
    LL = (a + b + c + d) / 4     approximation (the block mean)
    LH = (a + b - c - d) / 4     horizontal detail: top row minus bottom row
    HL = (a - b + c - d) / 4     vertical detail: left column minus right column
    HH = (a - b - c + d) / 4     diagonal detail
The output channels are grouped per input channel: (c0 LL, c0 LH, c0 HL, c0 HH, c1 LL, ...), like the authors'
`wavelet_images[4 * i + k]`. Without the division by 2 the transform is orthonormal; with it, it is half an
orthonormal map, so squared errors in coefficient space are a quarter of those of the orthonormal transform and
white noise of variance 1 in image space becomes white noise of variance 1/4 here.
"""

import torch


def haar_forward(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 4C, H/2, W/2); H and W must be even."""
    if x.shape[-1] % 2 or x.shape[-2] % 2:
        raise ValueError(f"the Haar transform needs an even height and width, got {tuple(x.shape[-2:])}")
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    bands = ((a + b) + (c + d), (a + b) - (c + d), (a - b) + (c - d), (a - b) - (c - d))
    return torch.stack(bands, dim=2).flatten(1, 2) / 4


def haar_inverse(w: torch.Tensor) -> torch.Tensor:
    """(B, 4C, h, w) -> (B, C, 2h, 2w), the exact inverse of `haar_forward`."""
    if w.shape[1] % 4:
        raise ValueError(f"Haar coefficients come in groups of 4 channels, got {w.shape[1]}")
    ll, lh, hl, hh = w.unflatten(1, (w.shape[1] // 4, 4)).unbind(2)
    a, b = (ll + lh) + (hl + hh), (ll + lh) - (hl + hh)
    c, d = (ll - lh) + (hl - hh), (ll - lh) - (hl - hh)
    top = torch.stack((a, b), dim=-1).flatten(-2)  # interleave the columns: a b a b ...
    bottom = torch.stack((c, d), dim=-1).flatten(-2)
    return torch.stack((top, bottom), dim=-2).flatten(-3, -2)  # interleave the rows
