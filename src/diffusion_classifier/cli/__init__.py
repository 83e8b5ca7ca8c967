"""Command lines: score (dc-score)."""
