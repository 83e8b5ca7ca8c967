"""Diffusion classifiers for medical images (a reproduction of Favero et al., MIDL 2025).

The package by stage of the study, one module a line, from the bottom up: a module imports only from its own stage
and the ones listed before it (cli, explorer and report not from each other), as import-linter checks
(`[tool.importlinter]` in pyproject.toml):

    profiles                the smoke / cpu / paper settings (plain nested dicts)
    core/                   plumbing every stage uses
        paths               where data, caches, checkpoints and results live (each overridable by environment)
        seeds               every seed the package derives from a run's seed
        device              device, precision and CPU-thread choice
        errors              the one-line errors users see (DataError, CheckpointError)
        checkpoints         pickle-free, checksummed, resumable training state
    data/                   images and labels in, checked
        tasks               the task registry (Task, TASKS) and load_task
        readers             one reader per source: MedMNIST npz, ISIC 2017 folders, ISIC 2019/2020 CSVs, CheXpert
        io                  Split / TaskData, file and CSV reading with its checks, decoding with a cache, seeded splits
        preprocess          uint8 images -> model tensors in [-1, 1]
    models/                 the networks
        denoiser            the class-conditional denoiser, its backbone registry (UNet, cross-attention UNet, DiT)
        schedules           noise schedules (discrete DDPM, continuous shifted-cosine log-SNR)
        sampling            DDIM and ancestral samplers, classifier-free guidance
        wavelet             the authors' Haar input transform and its inverse
        stages              each network's stages from output to input (for cascading randomisation)
        resnet              the discriminative ResNet-18 (MONAI): build, predict, load
        stable_diffusion    the Stable Diffusion arm (prompts as classes, LoRA / full fine-tuning)
    classifier/             the paper's method
        engine              the engine for the error tensor E[N, C, K]
        rules               decision rules over E (mean error, majority vote) and early stopping
        confidence          the vote's and the mean rule's confidence and uncertainty scores
        explain             error-difference maps, guided counterfactuals, Grad-CAM
    evaluation/             statistics, no study logic
        metrics             classification metrics with bootstrap CIs
        paired              paired bootstrap and McNemar's test of two classifiers on the same images
        calibration         temperature scaling, ECE, Brier, error-AUROC, risk-coverage, AURC, selective metrics
        faithfulness        perturbation curves, judges, cascading randomisation
    training/               training that selects on validation (with the classifier and the metrics)
        diffusion           the denoiser's training loop (accelerate, EMA, resume, checkpoint choice on val F1)
        batches             seeded, optionally class-balanced training batches
        resnet              the ResNet-18's training and epoch selection
    study                   the glue the notebooks share: a task's settings, tensors and run folder in one call
    analyses/               one per notebook
        classification      notebook 04's classification tables, paired rule comparisons, verdict sentences
        early_stopping      notebook 04's early stopping replayed on stored scores, at scale, and its verdicts
        explanations        notebook 05's evaluation as one table, and its verdicts
        uncertainty         notebook 06's uncertainty tables and verdict
        shift               the source-shift test (notebook 08)
        variance            draws, training seeds and their spread (notebook 09)
        backbones           the DiT beside the UNet and the ResNet-18 (notebook 10)
        rerun               a re-run (another CPU, precision or commit) paired with the committed results
        reference           the paper's published numbers (context only)
    report/                 results/ from the tables
        summary             results/SUMMARY.md (the claims page) and the entry point that writes every page
        claims              the four claims' verdicts in one vocabulary, the claims figure
        details             results/DETAILS.md: every other table and sentence
        verdicts            the verdict sentences of notebooks 04-10, rebuilt from their tables
        figures             plotting helpers (one style, PNGs under results/figures)
        provenance          environment and run records (results/provenance.json)
        deviations          docs/deviations.md read back and checked against the profiles
    explorer/               the analysts' explorer over stored scores (open_study, show)
        queries             stored runs and every table row at any setting, without a model
        widget              the views: live widgets, or one static view under run_all.sh
    cli/                    command lines
        score               score a split with a trained denoiser (dc-score)
"""

__version__ = "0.1.0"
