"""Errors that the command line reports as one line (no traceback)."""

from __future__ import annotations


class MoegsError(Exception):
    """Base class: a user-facing problem (bad input, missing file, unavailable device)."""


class SceneFormatError(MoegsError):
    """A prepared scene on disk is missing a file or has a malformed field."""

    def __init__(self, path, field: str | None, problem: str):
        self.path, self.field, self.problem = str(path), field, problem
        where = f"{self.path}: {field}" if field else self.path
        super().__init__(f"{where}: {problem}")


class ConfigError(MoegsError):
    """An option, preset or override names something that does not exist or has a bad value."""


class DeviceError(MoegsError):
    """A command needs hardware (CUDA) that this machine does not have."""


class UnreadableFileError(MoegsError):
    """A stored file (a model, a training state, a router) cannot be read back: missing,
    truncated, damaged or not a file of the kind its name says."""

    def __init__(self, path, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{self.path}: {problem}")


class StateWarning(UserWarning):
    """Stored state could not be read and is rebuilt or left out (a training state discarded,
    a run trained again, a run skipped by a report); the command line prints it as one line."""
