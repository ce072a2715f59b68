"""Finding and forgetting damaged outputs in a study store, so that only they are redone.

Every stage output of a :class:`~multimodal_seg.pipeline.study.Study` carries a
fingerprint written after its data; a stage skips an output whose fingerprint is
current.  A chunk damaged later (a bad disk block, a file truncated by hand)
leaves the fingerprint in place, so a resumed run would trust it and fail while
reading it.  :func:`damaged_outputs` reads every chunk of a store and names the
outputs that hold unreadable ones; :func:`forget` removes their fingerprints, so
the next run recomputes those outputs, and only those (the others stay current).

A run killed mid-write leaves debris in the store: zarr's temporary metadata files
(``zarr.<hex>.partial``) and folders whose metadata was never written.  Neither is a node,
so stores are walked by their nodes' metadata files (:func:`nodes`), never by listing
folders, which made zarr warn about each piece of debris on every resumed run.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import zarr

#: The metadata file that makes a folder of a zarr v3 store a node (group or array).
METADATA = "zarr.json"


def nodes(group: zarr.Group, store: Path) -> Iterator[tuple[str, zarr.Group | zarr.Array]]:
    """Every node below ``group`` (opened from the local store ``store``), as ``(key, node)``
    in key order: each folder holding a metadata file, opened by its key.  Debris a killed
    writer left (temporary files, folders without metadata) is not a node and is passed over.
    """
    store = Path(store)
    keys = sorted(meta.parent.relative_to(store).as_posix() for meta in store.rglob(METADATA))
    for key in keys:
        if key != ".":
            yield key, group[key]


def finished_outputs(store: Path) -> dict[str, str]:
    """``{key: fingerprint}`` of every finished stage output of the study at ``store``
    (empty when there is no store yet)."""
    if not Path(store).is_dir():
        return {}
    try:
        group = zarr.open_group(str(store), mode="r")
    except Exception:  # not (yet) a readable zarr group: nothing finished
        return {}
    return {key: node.attrs["fingerprint"] for key, node in nodes(group, store) if "fingerprint" in node.attrs}


def _owner(key: str, outputs: dict[str, str]) -> str | None:
    """The stage output a stored array belongs to (itself or the nearest group with a fingerprint)."""
    parts = key.split("/")
    for n in range(len(parts), 0, -1):
        candidate = "/".join(parts[:n])
        if candidate in outputs:
            return candidate
    return None


def damaged_outputs(store: Path) -> dict[str, str]:
    """``{stage output: what is wrong}`` for finished outputs with an unreadable chunk.

    Reads every chunk of every array of the store once (a full pass over it: for
    use after a run failed, not before every run).
    """
    outputs = finished_outputs(store)
    if not outputs:
        return {}
    group = zarr.open_group(str(store), mode="r")
    damaged: dict[str, str] = {}
    for key, node in nodes(group, store):
        owner = _owner(key, outputs)
        if not isinstance(node, zarr.Array) or owner is None or owner in damaged:
            continue
        for coords in itertools.product(*(range(n) for n in node.cdata_shape)):
            try:
                node.get_block_selection(coords)
            except Exception as exc:  # codecs raise RuntimeError, ValueError ... for bad bytes
                chunk = "/".join(str(c) for c in coords)
                damaged[owner] = f"chunk {chunk} of {key} is unreadable ({type(exc).__name__}: {exc})"
                break
    return damaged


def forget(store: Path, keys: list[str]) -> None:
    """Remove the fingerprints of these outputs: the next run recomputes them."""
    group = zarr.open_group(str(store), mode="r+")
    for key in keys:
        group[key].attrs.pop("fingerprint", None)
