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
