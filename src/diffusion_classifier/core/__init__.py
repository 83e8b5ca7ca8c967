"""Plumbing every stage uses: paths, seeds, device, errors, checkpoints (see the package docstring)."""
