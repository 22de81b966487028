"""The model zoo: importing this module registers the published EO foundation models.

Each family lives in its own module and registers its specs at import time;
importing them is cheap (no torch import until a model is built).
"""

from . import clay, clip, croma, dofa, prithvi, rgb  # noqa: F401
