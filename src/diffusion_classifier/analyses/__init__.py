"""One analysis per notebook: classification, early_stopping, explanations, uncertainty, shift, variance,
backbones, rerun, reference."""
