"""Errors that users see. Each message names the file (or argument) and what is wrong with it."""


class DataError(ValueError):
    """An input data file is missing or malformed."""


class CheckpointError(ValueError):
    """A model checkpoint is missing, corrupt or does not match the requested configuration."""
