"""Shared fixtures. Tests run on the JAX backend unless KERAS_BACKEND says otherwise."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
DEEPPCB = REPO.parent / "shared" / "datasets" / "deeppcb"


@pytest.fixture(scope="session")
def deeppcb_root() -> Path:
    """The real DeepPCB folder beside the checkout; skips when it is absent."""
    if not (DEEPPCB / "PCBData" / "trainval.txt").is_file():
        pytest.skip(f"DeepPCB not found at {DEEPPCB} (../shared/datasets/deeppcb beside the checkout)")
    return DEEPPCB
