"""The networks: denoiser, schedules, sampling, wavelet, stages, resnet, stable_diffusion."""
