"""Importable tiny models for the scale tests (worker processes and subprocesses build them).

``XEOFM_TEST_DELAY`` (seconds per forward pass) slows the model down so a test
can kill a job half-way; it is read when the model is built and does not change
the spec hash.
"""

from __future__ import annotations

import os

import xeofm

#: Models built in this process (read on workers with ``client.run``).
BUILDS = 0


def build_tiny(in_chans: int = 3, dim: int = 6, patch: int = 8, delay: float | None = None):
    """A small CNN with spatial context; slowed down by ``delay`` or ``$XEOFM_TEST_DELAY`` seconds per batch."""
    global BUILDS
    import time

    import torch

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = torch.nn.Conv2d(in_chans, 8, 3, padding=1)
            self.c2 = torch.nn.Conv2d(8, dim, patch, stride=patch)
            self.delay = float(delay if delay is not None else os.environ.get("XEOFM_TEST_DELAY", "0") or 0)

        def forward(self, x):
            if self.delay:
                time.sleep(self.delay)
            return self.c2(torch.tanh(self.c1(x)))

    BUILDS += 1
    return Tiny()


def tiny_spec(name: str = "scale-tiny") -> "xeofm.ModelSpec":
    """A spec with an importable builder, so any process can build the model."""
    return xeofm.ModelSpec(
        name=name,
        bands=("red", "green", "blue"),
        chip_size=32,
        stride=8,
        embedding_dim=6,
        scale=1e-4,
        mean=(0.5, 0.5, 0.5),
        std=(0.3, 0.3, 0.3),
        builder="tests._scale_models:build_tiny",
        builder_kwargs={"in_chans": 3, "dim": 6, "patch": 8},
    )
