"""Shared fixtures: the real-data folder and small phantoms."""

from __future__ import annotations

import hashlib
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

#: ../shared/data beside the project root (absent on a user's machine: tests skip).
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def single_thread():
    """One BLAS and OpenMP thread for a test module: on a busy 2-core machine, threaded
    k-means and SVDs of small matrices run ten times slower than one thread (the
    results are the same either way)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def shared_file(relative: str) -> Path:
    """Path of a file in the shared data folder, or skip the test when it is absent."""
    path = DATA / relative
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


def file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree_digest(*paths: Path) -> str:
    """SHA-256 over files, or over every file under a folder (zarr stores, JEOL sample trees)."""
    h = hashlib.sha256()
    for path in map(Path, paths):
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def assert_reader_error(read, source, where_name: str, *needles: str, error=None, **kwargs):
    """``read(source, **kwargs)`` raises ``error`` (InputError) naming ``where_name``, with a fix
    and every needle (case-insensitive) in its message."""
    from multimodal_seg.errors import InputError

    with pytest.raises(error or InputError) as info:
        read(source, **kwargs)
    message = str(info.value)
    assert where_name in message, message
    assert "fix:" in message
    for needle in needles:
        assert needle.lower() in message.lower(), (needle, message)
    return info.value


def assert_file_error(read, path: Path, *needles: str, **kwargs):
    """As :func:`assert_reader_error` for a file, which must be left byte-for-byte unchanged."""
    before = tree_digest(path)
    err = assert_reader_error(read, path, path.name, *needles, **kwargs)
    assert tree_digest(path) == before
    return err


@pytest.fixture(scope="session")
def small_phantom():
    """A 256 x 256 HAADF phantom (grains, a second phase, an amorphous front)."""
    from multimodal_seg.synthetic.phantoms import haadf_phantom

    return haadf_phantom((256, 256), seed=3)


@pytest.fixture(autouse=True)
def _no_weights(tmp_path_factory, monkeypatch):
    """Point the weights cache at an empty folder so tests never see a user's files."""
    monkeypatch.setenv("MMSEG_WEIGHTS_DIR", str(tmp_path_factory.mktemp("weights")))
