"""The analysts' explorer over stored scores: queries (rows at any setting, without a model), widget (the views).

from diffusion_classifier import explorer
explorer.open_study("cpu")
"""

from .queries import StoredRun
from .widget import open_study, show

__all__ = ["StoredRun", "open_study", "show"]
