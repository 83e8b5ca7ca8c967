"""The paper's published numbers (Favero et al., MIDL 2025, as transcribed in ../shared/METHOD.md), to set beside
ours. Different data, resolution and scale: they are context, never a test of our runs."""

import pandas as pd

# Test accuracy (%) and F1 (positive = sick / melanoma), N = 501 draws, majority vote for the diffusion models.
PAPER_TABLE = [
    # model, CheXpert acc, CheXpert F1, ISIC acc, ISIC F1
    ("ResNet-18 (pretrained)", 90.9, 0.910, 94.4, 0.943),
    ("ResNet-50", 91.6, 0.914, 93.6, 0.935),
    ("Swin-B", 86.1, 0.863, 95.9, 0.958),
    ("DiT-B/4 (diffusion)", 86.1, 0.860, 90.4, 0.901),
    ("UNet (diffusion)", 84.5, 0.854, 91.8, 0.919),
    ("Stable Diffusion fine-tuned", 85.0, 0.839, 94.8, 0.946),
    ("Stable Diffusion zero-shot", 48.8, 0.656, 39.7, 0.521),
]
PAPER_DATA = {
    "chexpert": "CheXpert pleural effusion vs no finding, 256 px, balanced (test 2,040)",
    "isic": "ISIC balanced melanoma (label confounded with source), 256 px (test ~1,021)",
}

# CheXpert accuracy (%) against the number of draws N, read by eye from the paper's plot (+-0.5 points).
PAPER_N = [1, 3, 5, 11, 25, 51, 101, 251, 501]
PAPER_VOTE_CURVES = {
    ("UNet", "vote"): [67.1, 71.6, 75.1, 79.9, 81.6, 83.5, 84.4, 84.8, 85.0],
    ("UNet", "mean"): [67.1, 72.1, 75.0, 79.5, 81.3, 82.2, 84.2, 84.0, 83.7],
    ("DiT", "vote"): [72.6, 76.2, 79.4, 82.0, 85.0, 85.3, 85.7, 87.1, 86.1],
    ("DiT", "mean"): [72.6, 77.3, 79.5, 83.4, 84.3, 84.4, 85.3, 86.5, 85.7],
    ("SD", "vote"): [63.7, 68.3, 71.4, 77.2, 79.3, 81.1, 82.2, 83.1, 83.4],
    ("SD", "mean"): [63.7, 69.0, 70.8, 75.5, 77.0, 78.6, 79.6, 80.4, 79.2],
}


def paper_rows() -> pd.DataFrame:
    """The paper's table in long form: source, data, model, accuracy (0-1), f1."""
    rows = []
    for model, c_acc, c_f1, i_acc, i_f1 in PAPER_TABLE:
        rows.append(
            {"source": "paper", "data": PAPER_DATA["chexpert"], "model": model, "accuracy": c_acc / 100, "f1": c_f1}
        )
        rows.append(
            {"source": "paper", "data": PAPER_DATA["isic"], "model": model, "accuracy": i_acc / 100, "f1": i_f1}
        )
    return pd.DataFrame(rows)
