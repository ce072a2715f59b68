"""Shared fixtures: the real-data folder and small phantoms."""

from __future__ import annotations

import hashlib
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

#: ../shared/data beside the project root (absent on a user's machine: tests skip).
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_file(relative: str) -> Path:
    """Path of a file in the shared data folder, or skip the test when it is absent."""
    path = DATA / relative
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


def file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def small_phantom():
    """A 256 x 256 HAADF phantom (grains, a second phase, an amorphous front)."""
    from multimodal_seg.phantoms import haadf_phantom

    return haadf_phantom((256, 256), seed=3)


@pytest.fixture(autouse=True)
def _no_weights(tmp_path_factory, monkeypatch):
    """Point the weights cache at an empty folder so tests never see a user's files."""
    monkeypatch.setenv("MMSEG_WEIGHTS_DIR", str(tmp_path_factory.mktemp("weights")))
