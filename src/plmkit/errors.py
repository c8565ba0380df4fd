"""Errors that speak to the user: what went wrong, where, and what to do."""


class PlmkitError(Exception):
    """Base class of every error plmkit raises on purpose."""


class ConfigError(PlmkitError, ValueError):
    """A configuration (config.json, run file, flag) is invalid."""


class CheckpointError(PlmkitError):
    """A checkpoint directory is missing, corrupt or does not fit the model."""


class DataError(PlmkitError, ValueError):
    """Input data is malformed; the message names file:line."""


class TrainingError(PlmkitError):
    """Training cannot go on (e.g. a non-finite loss)."""


class WriteError(PlmkitError, OSError):
    """A file could not be written (full disk, read-only place, no permission); what was written
    before is intact."""


class InputError(PlmkitError, ValueError):
    """A call got inputs of the wrong shape, type or range (a tensor to a model, a prompt to generate)."""
