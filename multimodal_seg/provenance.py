"""Provenance: package versions, fingerprints of stage inputs, atomic file writes."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import numpy as np

#: Distributions whose versions change results; recorded with every run.
TRACKED_PACKAGES = (
    "multimodal-seg", "numpy", "scipy", "dask", "zarr", "torch", "torchvision",
    "scikit-learn", "pynndescent", "igraph", "leidenalg", "rosettasciio", "hyperspy",
)


def package_versions() -> dict[str, str | None]:
    """Installed version of each tracked package (``None`` when absent)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def run_record(config: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything needed to reproduce a run: config, versions, machine, time."""
    return {
        "config": config,
        "versions": package_versions(),
        "machine": {"platform": platform.platform(), "processor": platform.machine()},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot fingerprint {type(obj).__name__}")


def fingerprint(*parts: Any) -> str:
    """Stable SHA-256 (hex, 16 chars) of JSON-able parts: identifies a stage's inputs."""
    text = json.dumps(parts, sort_keys=True, default=_jsonable)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_identity(path: Path) -> dict[str, Any]:
    """Cheap identity of an input file (resolved path, size, modification time in ns)."""
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def array_digest(array: np.ndarray) -> str:
    """SHA-256 of an in-memory array's bytes, shape and dtype (hex, 16 chars)."""
    h = hashlib.sha256(f"{array.shape}{array.dtype}".encode())
    h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()[:16]


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=_jsonable)


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    Works for files and folders.  On error the temporary is removed and
    ``target`` is left as it was, so readers never see a half-written output.
    """
    target = Path(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to {tmp} for {target}")
        if target.is_dir() and not target.is_symlink():
            # Move the old folder aside first so that a failed rename can restore it.
            old = tmp.with_name(tmp.name + ".old")
            os.replace(target, old)
            try:
                os.replace(tmp, target)
            except OSError:
                os.replace(old, target)
                raise
            shutil.rmtree(old)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_text_atomic(target: Path, text: str) -> None:
    """Write a text file atomically (temporary name, then rename)."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)
