"""Training that selects on validation: diffusion (the denoiser), batches (shared), resnet (the baseline)."""
