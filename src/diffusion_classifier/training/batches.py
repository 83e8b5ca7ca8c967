"""Training batches drawn from a seeded generator, class-balanced or not: shared by the denoiser's and the ResNet's
training, so that neither imports the other.
"""

import torch


def batch_indices(labels: torch.Tensor, batch_size: int, generator: torch.Generator, balanced: bool) -> torch.Tensor:
    """Indices of one training batch, drawn with replacement. `balanced`: every class is equally likely (each image
    weighted 1 / its class count), as the paper's subsampling to balanced classes intends; otherwise uniform over
    images, so the model sees the classes at their (possibly imbalanced) data frequencies."""
    if not balanced:
        return torch.randint(0, len(labels), (batch_size,), generator=generator)
    counts = torch.bincount(labels).float()
    weights = 1.0 / counts[labels]
    return torch.multinomial(weights, batch_size, replacement=True, generator=generator)
