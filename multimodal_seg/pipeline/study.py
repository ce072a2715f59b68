"""The Study: one zarr group per specimen that every stage reads and extends.

Layout (see docs/design.md)::

    modalities/<name>/data     chunked array; attrs: axes, kind, source, fingerprint
    chips/origins              (n_chips, 2) int64 top-left pixel of each chip; attrs: grid
    embeddings/<modality>      (n_chips, dim) float32; attrs: encoder, fingerprint
    graphs/<name>/{indptr,indices,data}   CSR adjacency; attrs: params, fingerprint
    partitions/<name>/labels   (n_chips,) int32; attrs: params, quality, fingerprint
    attrs                      provenance: config, versions, seed, encoder used

Each stage output carries a ``fingerprint`` attribute (a hash of its parameters
and of its inputs' fingerprints), written *after* the data.  A stage whose stored
fingerprint matches what it would compute is skipped; one interrupted half-way
has no fingerprint and is redone.  That is what makes runs resumable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import scipy.sparse as sp
import zarr

from ..errors import InputError
from ..modalities.base import Axis, ModalityData


class Study:
    """A specimen's data and every stage's results, in one zarr group.

    Create with :meth:`Study.open` (a folder ``*.zarr`` on disk, or in memory
    when ``path`` is ``None``).
    """

    def __init__(self, group: zarr.Group, path: Path | None) -> None:
        self.group = group
        self.path = path

    @classmethod
    def open(cls, path: str | Path | None = None) -> "Study":
        """Open (or create) a study at ``path``; ``None`` keeps it in memory."""
        if path is None:
            return cls(zarr.open_group(zarr.storage.MemoryStore(), mode="a"), None)
        path = Path(path)
        try:
            group = zarr.open_group(str(path), mode="a")
        except Exception as exc:  # zarr raises several types for foreign folders
            raise InputError(
                f"cannot open the study store: {exc}",
                fix="point to a study.zarr folder written by multimodal_seg, or to a new path",
                where=path,
            ) from exc
        return cls(group, path)

    # -- generic stage outputs -------------------------------------------------
    def fingerprint_of(self, key: str) -> str | None:
        """Stored fingerprint of a stage output, ``None`` when absent or unfinished."""
        if key not in self.group:
            return None
        return self.group[key].attrs.get("fingerprint")

    def is_current(self, key: str, fingerprint: str) -> bool:
        """Whether ``key`` holds a finished output for exactly these inputs."""
        return self.fingerprint_of(key) == fingerprint

    def attrs_of(self, key: str) -> dict[str, Any]:
        return dict(self.group[key].attrs)

    def _finish(self, node: zarr.Group | zarr.Array, fingerprint: str, attrs: dict[str, Any]) -> None:
        # The fingerprint goes last: its presence means the data are complete.
        node.attrs.update({**attrs, "fingerprint": fingerprint})

    def write_array(self, key: str, array: np.ndarray, *, fingerprint: str, **attrs: Any) -> None:
        """Store a dense in-memory array under ``key`` with its attributes."""
        array = np.asarray(array)
        node = self.group.create_array(
            key, shape=array.shape, dtype=array.dtype, chunks=_chunks_for(array.shape), overwrite=True
        )
        node[...] = array
        self._finish(node, fingerprint, attrs)

    def read_array(self, key: str) -> np.ndarray:
        return np.asarray(self.group[key][...])

    def write_sparse(self, key: str, matrix: sp.csr_matrix, *, fingerprint: str, **attrs: Any) -> None:
        """Store a square sparse matrix as CSR arrays ``indptr``, ``indices``, ``data``."""
        matrix = sp.csr_matrix(matrix)
        node = self.group.require_group(key)
        node.attrs.pop("fingerprint", None)
        for name in ("indptr", "indices", "data"):
            part = np.asarray(getattr(matrix, name))
            arr = node.create_array(name, shape=part.shape, dtype=part.dtype,
                                    chunks=_chunks_for(part.shape), overwrite=True)
            arr[...] = part
        self._finish(node, fingerprint, {**attrs, "shape": list(matrix.shape)})

    def read_sparse(self, key: str) -> sp.csr_matrix:
        node = self.group[key]
        parts = [np.asarray(node[name][...]) for name in ("data", "indices", "indptr")]
        return sp.csr_matrix(tuple(parts), shape=tuple(node.attrs["shape"]))

    # -- modalities -------------------------------------------------------------
    def write_modality(self, modality: ModalityData, *, fingerprint: str) -> None:
        """Stream a modality's lazy array into ``modalities/<name>/data``."""
        key = f"modalities/{modality.name}"
        node = self.group.require_group(key)
        node.attrs.pop("fingerprint", None)
        data = modality.data.rechunk(_chunks_for(modality.data.shape, target=1024))
        da.to_zarr(data, self.group.store, component=f"{key}/data", overwrite=True,
                   zarr_format=self.group.metadata.zarr_format)
        self._finish(node, fingerprint, {
            "kind": modality.kind,
            "axes": [axis.to_dict() for axis in modality.axes],
            "source": modality.source,
            "metadata": modality.metadata,
        })

    def modality(self, name: str) -> ModalityData:
        """A stored modality, its data as a Dask array over the zarr store."""
        key = f"modalities/{name}"
        if key not in self.group:
            raise KeyError(f"no modality {name!r} in the study; have {self.modality_names()}")
        attrs = self.attrs_of(key)
        return ModalityData(
            name=name,
            kind=attrs["kind"],
            data=da.from_zarr(self.group[f"{key}/data"]),
            axes=[Axis(**axis) for axis in attrs["axes"]],
            source=attrs["source"],
            metadata=attrs.get("metadata", {}),
        )

    def modality_names(self) -> list[str]:
        if "modalities" not in self.group:
            return []
        return sorted(self.group["modalities"].group_keys())

    # -- provenance ---------------------------------------------------------------
    @property
    def provenance(self) -> dict[str, Any]:
        return dict(self.group.attrs.get("provenance", {}))

    def record(self, **entries: Any) -> None:
        """Merge entries into the study's provenance record."""
        self.group.attrs["provenance"] = {**self.provenance, **entries}

    def __repr__(self) -> str:
        where = self.path or "<memory>"
        return f"Study({where}, modalities={self.modality_names()})"


def _chunks_for(shape: tuple[int, ...], target: int = 65536) -> tuple[int, ...]:
    """Chunks of about ``target`` elements along the first axis (whole rows)."""
    if len(shape) == 0:
        return ()
    if len(shape) == 2 and target <= 4096:
        return tuple(min(max(s, 1), target) for s in shape)
    row = int(np.prod(shape[1:])) or 1
    first = max(1, min(shape[0] or 1, target // row))
    return (first, *[max(s, 1) for s in shape[1:]])
