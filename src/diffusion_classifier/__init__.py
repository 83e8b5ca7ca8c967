"""Diffusion classifiers for medical images (a reproduction of Favero et al., MIDL 2025).

Modules, one job each:
    paths        where data, caches, checkpoints and results live
    datasets     readers for the task layouts (MedMNIST npz, ISIC folders/CSVs, CheXpert) with input checks
    preprocess   uint8 images -> model tensors in [-1, 1]
    profiles     the smoke / cpu / paper settings
    schedules    noise schedules (discrete DDPM, continuous shifted-cosine log-SNR)
    denoiser     the class-conditional UNet and its checkpoints
    training     the diffusion training loop (accelerate, EMA, resume)
    baseline     the discriminative ResNet-18 baseline (MONAI)
    scoring      the classification engine: error tensor E[N, C, K]
    decision     decision rules over E (mean error, majority vote, early stopping)
    metrics      classification metrics with bootstrap CIs
    explain      error-difference maps, counterfactuals, Grad-CAM, faithfulness
    uncertainty  vote-based uncertainty, calibration, selective prediction
    foundation   the Stable Diffusion arm
    provenance   environment and run records
    figures      shared plotting helpers
"""

__version__ = "0.1.0"
