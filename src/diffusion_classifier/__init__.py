"""Diffusion classifiers for medical images (a reproduction of Favero et al., MIDL 2025).

Every module, by stage of the study (the move into one subpackage per stage, with enforced layers, is open work):

settings and plumbing
    profiles      the smoke / cpu / paper settings (plain nested dicts)
    study         the glue the notebooks share: a task's settings, tensors and run folder in one call
    paths         where data, caches, checkpoints and results live (each overridable by an environment variable)
    seeds         every seed the package derives from a run's seed
    device        device, precision and CPU-thread choice
    errors        the one-line errors users see (DataError)
data
    datasets      the task registry and readers (MedMNIST npz, ISIC folders/CSVs, CheXpert) with input checks
    preprocess    uint8 images -> model tensors in [-1, 1]
models
    schedules     noise schedules (discrete DDPM, continuous shifted-cosine log-SNR)
    denoiser      the class-conditional denoiser, its backbone registry (UNet, cross-attention UNet, DiT), checkpoints
    wavelet       the authors' Haar input transform and its inverse
    sampling      DDIM and ancestral samplers, classifier-free guidance
    baseline      the discriminative ResNet-18 (MONAI) and its training
    foundation    the Stable Diffusion arm (prompts as classes, LoRA / full fine-tuning)
training
    training      the denoiser's training loop (accelerate, EMA, resume)
    checkpointing pickle-free, checksummed, resumable training state
classifier (the paper's method)
    scoring       the engine for the error tensor E[N, C, K]
    score         its command line (dc-score)
    decision      decision rules over E (mean error, majority vote) and early stopping
    explain       error-difference maps, guided counterfactuals, Grad-CAM
evaluation (statistics, no study logic)
    metrics       classification metrics with bootstrap CIs
    paired        paired bootstrap and McNemar's test of two classifiers on the same images
    uncertainty   vote-based uncertainty, calibration, selective prediction (and notebook 06's tables)
    faithfulness  perturbation curves, judges, cascading randomisation
analyses (one per notebook)
    ablation      notebook 04's classification tables, early stopping at scale, verdict sentences
    explainability notebook 05's evaluation as one table, and its verdicts
    shift         the source-shift test (notebook 08)
    variance      draws, training seeds and their spread (notebook 09)
    backbones     the DiT beside the UNet and the ResNet-18 (notebook 10)
    rerun         a re-run (another CPU, precision or commit) paired with the committed results
    explorer      the analysts' explorer over stored scores
report
    claims        the four claims' verdicts in one vocabulary, the claims figure (SUMMARY.md's first page)
    summary       results/SUMMARY.md and DETAILS.md from the tables and provenance
    figures       plotting helpers (one style, PNGs under results/figures)
    provenance    environment and run records (results/provenance.json)
    deviations    docs/deviations.md read back and checked against the profiles
    reference     the paper's published numbers (context only)
"""

__version__ = "0.1.0"
