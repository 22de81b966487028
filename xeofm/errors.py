"""Exceptions raised by xeofm.

Every exception says what was found and how to fix it.
"""

from __future__ import annotations


class XeofmError(Exception):
    """Base class of all xeofm errors."""


class InputError(XeofmError, ValueError):
    """The input cube cannot be used as given (dims, coords, dtype...)."""


class MissingBandsError(InputError, KeyError):
    """The cube lacks bands the model needs."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0]) if self.args else ""


class MissingDimensionError(InputError):
    """A required dimension (band, x, y) was not found."""


class SpecError(XeofmError, ValueError):
    """A model spec is inconsistent, or a model's output contradicts its spec."""


class DeviceError(XeofmError, RuntimeError):
    """The requested compute device is not available."""


class WeightsError(XeofmError, RuntimeError):
    """Model weights are missing, corrupt or do not match the model."""


class StacError(InputError):
    """A STAC source cannot be opened or searched, or its items cannot be loaded together."""


class EmptySearchError(StacError):
    """A STAC search or a catalog filter matched no items."""


class StoreConflictError(InputError):
    """An output store already exists and may not be written as asked (resume or overwrite it)."""


class StoreMismatchError(StoreConflictError):
    """An existing output store holds another model's or another job's output."""


class StoreWriteError(XeofmError, OSError):
    """Writing to the output store failed (disk full, permission denied...); the job can be resumed."""


class IncompleteStoreError(XeofmError, RuntimeError):
    """An output store was opened before every region of its job was written."""


class JobError(XeofmError, RuntimeError):
    """A distributed job failed (e.g. workers kept dying); finished regions are kept for a resume."""
