"""The Study: one zarr group per specimen that every stage reads and extends.

Layout (version ``LAYOUT_VERSION``; see docs/design.md)::

    attrs                          layout_version, modalities (names, in order),
                                   stages (each stage's parameters), provenance
    modalities/<name>/data         chunked array; group attrs: kind, axes, source,
                                   metadata (reader options ...), fingerprint; a
                                   modality read in place (a zarr array on disk) has
                                   no data but attrs in_place: where it is
    chips/origins                  (n_chips, 2) top-left reference pixel of each chip;
                                   attrs: grid, shared (the shared grid), modalities
    chips/modalities/<name>        (n_chips, 2) the same chips in the modality's pixels
    chips/stats/<name>             (n_chips, 2) raw mean and std of each chip
    embeddings/<name>              (n_chips, dim) float32; attrs: encoder, encoder_spec
    positions/<name>/features      encoders that pool scan positions only: (rows, cols, dim)
                                   float32 features of every position, and beside them
    positions/<name>/moments       (rows, cols, 2) float64 sums of raw values and squares;
                                   the embeddings' fingerprint (refinement pools from them)
    graphs/<name>                  CSR adjacency {indptr, indices, data}; attrs: params
    graphs/joint                   fusion "concat" only: the graph of the joint features
    partitions/<name>              (n_chips,) int32; attrs: params, modularity, n_communities
    partitions/joint               several modalities only: the fused partition
    refined/<partition>            labels on the fine grid (boundary refinement)
    placed/<partition>             (rows, cols) int32 labels of the placed positions after
                                   boundary positions were placed by their own signals:
                                   the grid's pixels, or every step-th of a large grid;
                                   attrs: step, rules, source (what was painted), moved,
                                   map_error

Each stage output carries a ``fingerprint`` attribute (a hash of its parameters
and of its inputs' fingerprints), written *after* the data.  A stage whose stored
fingerprint matches what it would compute is skipped; one interrupted half-way
has no fingerprint and is redone.  That is what makes runs resumable.  A store
of another layout version is refused with a message, never reused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import scipy.sparse as sp
import zarr

from ..chips.shared import ModalityChips, SharedGrid
from ..chips.texture import Lattice, image_lattice
from ..encoders.base import Encoder
from ..encoders.pooling import PositionMap
from ..errors import InputError
from ..graphs.knn import FeatureReducer
from ..modalities.base import Axis, ModalityData

#: Version of the key layout above; bumped whenever a key or its meaning changes.
LAYOUT_VERSION = 3
#: Name of the fused partition (several modalities).
JOINT = "joint"


class Study:
    """A specimen's data and every stage's results, in one zarr group.

    Create with :meth:`Study.open` (a folder ``*.zarr`` on disk, or in memory
    when ``path`` is ``None``).

    Attributes
    ----------
    group
        The zarr group.
    path
        Its folder, ``None`` in memory.
    fitted_encoders
        Encoders fitted to this study's data in this session, by modality:
        ``{name: (embeddings fingerprint, encoder)}``.  Not stored: a resumed run
        fits them again when a later stage (refinement) needs them.
    graph_spaces
        Each modality's embeddings standardised and reduced as its graph was built, in this
        session: ``{name: (key, reducer, features)}`` (``key``: the embeddings' fingerprint
        and the reduction's options).  The graph, the decision on the number of communities
        and refinement all work in that space; fitting it once instead of three times saved
        0.09 s per PCA of 256 ResNet50 embeddings.  Not stored.
    lattices
        Each image modality's lattice (:meth:`lattice`), measured once per session:
        ``{name: (modality fingerprint, lattice)}``.  Chip sizing and placement both read it;
        measuring it for each took 0.05-0.1 s apiece at 2048 px.  Not stored.
    held
        In a study in memory, the modalities whose data were already in memory
        (:meth:`write_modality`), by name: the arrays themselves, not copies.
    """

    def __init__(self, group: zarr.Group, path: Path | None) -> None:
        self.group = group
        self.path = path
        self.held: dict[str, da.Array] = {}
        self.fitted_encoders: dict[str, tuple[str, Encoder]] = {}
        self.graph_spaces: dict[str, tuple[str, FeatureReducer, np.ndarray]] = {}
        self.lattices: dict[str, tuple[str | None, Lattice]] = {}

    @classmethod
    def open(cls, path: str | Path | None = None) -> "Study":
        """Open (or create) a study at ``path``; ``None`` keeps it in memory.

        Raises
        ------
        InputError
            ``path`` is not a zarr store, or holds a study of another layout version.
        """
        if path is None:
            group = zarr.open_group(zarr.storage.MemoryStore(), mode="a")
            group.attrs["layout_version"] = LAYOUT_VERSION
            return cls(group, None)
        path = Path(path)
        try:
            group = zarr.open_group(str(path), mode="a")
        except Exception as exc:  # zarr raises several types for foreign folders
            raise InputError(
                f"cannot open the study store: {exc}",
                fix="point to a study.zarr folder written by multimodal_seg, or to a new path",
                where=path,
            ) from exc
        version = group.attrs.get("layout_version")
        if version is None and not list(group.keys()):
            group.attrs["layout_version"] = LAYOUT_VERSION
        elif version != LAYOUT_VERSION:
            raise InputError(
                f"this study store has layout version {version or 1}, written by another version of "
                f"multimodal_seg; this one reads version {LAYOUT_VERSION} and will not reuse it",
                fix="delete the old study.zarr (or the whole output folder) or choose a new --out",
                where=path,
            )
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
        """The attributes of a stage output (a copy)."""
        return dict(self.group[key].attrs)

    def _finish(self, node: zarr.Group | zarr.Array, fingerprint: str, attrs: dict[str, Any]) -> None:
        # The fingerprint goes last: its presence means the data are complete.
        node.attrs.update({**attrs, "fingerprint": fingerprint})

    def _write_parts(self, key: str, parts: dict[str, np.ndarray], fingerprint: str,
                     attrs: dict[str, Any]) -> None:
        """Store several dense arrays as one group ``key``, finished with one fingerprint."""
        node = self.group.require_group(key)
        node.attrs.pop("fingerprint", None)
        for name, values in parts.items():
            values = np.asarray(values)
            arr = node.create_array(name, shape=values.shape, dtype=values.dtype,
                                    chunks=_chunks_for(values.shape), overwrite=True)
            arr[...] = values
        self._finish(node, fingerprint, attrs)

    def write_array(self, key: str, array: np.ndarray, *, fingerprint: str, **attrs: Any) -> None:
        """Store a dense in-memory array under ``key`` with its attributes."""
        array = np.asarray(array)
        node = self.group.create_array(
            key, shape=array.shape, dtype=array.dtype, chunks=_chunks_for(array.shape), overwrite=True
        )
        node[...] = array
        self._finish(node, fingerprint, attrs)

    def read_array(self, key: str) -> np.ndarray:
        """A stored dense array, in memory."""
        return np.asarray(self.group[key][...])

    def write_sparse(self, key: str, matrix: sp.csr_matrix, *, fingerprint: str, **attrs: Any) -> None:
        """Store a square sparse matrix as CSR arrays ``indptr``, ``indices``, ``data``."""
        matrix = sp.csr_matrix(matrix)
        self._write_parts(key, {name: getattr(matrix, name) for name in ("indptr", "indices", "data")},
                          fingerprint, {**attrs, "shape": list(matrix.shape)})

    def read_sparse(self, key: str) -> sp.csr_matrix:
        """A stored sparse matrix (CSR)."""
        node = self.group[key]
        parts = [np.asarray(node[name][...]) for name in ("data", "indices", "indptr")]
        return sp.csr_matrix(tuple(parts), shape=tuple(node.attrs["shape"]))

    def write_positions(self, name: str, positions: PositionMap, *, fingerprint: str) -> None:
        """Store a modality's per-position features: ``positions/<name>``."""
        self._write_parts(f"positions/{name}", {"features": positions.features, "moments": positions.moments},
                          fingerprint, {"signal_size": positions.signal_size})

    def positions(self, name: str, *, fingerprint: str | None) -> PositionMap | None:
        """A modality's stored per-position features if they carry ``fingerprint``
        (that of the embeddings they were pooled into), else ``None``."""
        node = self._current_positions(name, fingerprint)
        if node is None:
            return None
        return PositionMap(np.asarray(node["features"][...]), np.asarray(node["moments"][...]),
                           int(node.attrs["signal_size"]))

    def position_totals(self, name: str, *, fingerprint: str | None) -> np.ndarray | None:
        """``(rows, cols)`` float64 sum of each scan position's raw values, from the stored
        per-position moments if they carry ``fingerprint``, else ``None`` (the features,
        ``dim`` times larger, are not read)."""
        node = self._current_positions(name, fingerprint)
        return None if node is None else np.asarray(node["moments"][..., 0])

    def _current_positions(self, name: str, fingerprint: str | None) -> zarr.Group | None:
        key = f"positions/{name}"
        if fingerprint is None or not self.is_current(key, fingerprint):
            return None
        return self.group[key]

    # -- modalities -------------------------------------------------------------
    def write_modality(self, modality: ModalityData, *, fingerprint: str) -> None:
        """Store a modality (a new name joins :meth:`modality_names`).

        A modality whose data are a whole zarr array on local disk (``da.from_zarr``) is read
        in place: the study records where it is (``modalities/<name>`` attrs ``in_place``:
        the store's folder, the array's path, its shape, dtype and Dask chunks) instead of
        copying it, since it already has what the copy would give (chunked, parallel reads).
        A study in memory holds a modality whose data are already in memory (every chunk a
        NumPy array: ``da.from_array`` of one, or a persisted array) as it is, in the chunks a
        copy would have (:attr:`held`): the copy, compressed as below, cost a third of the run
        (the 64 x 64 4D-STEM phantom: 0.55 s to write, and more to read back, of a 2.5 s
        ``segment()``), and would double the memory the data take.
        Any other modality is streamed into ``modalities/<name>/data``.
        """
        key = f"modalities/{modality.name}"
        node = self.group.require_group(key)
        node.attrs.pop("fingerprint", None)
        self.held.pop(modality.name, None)
        location = _zarr_location(modality.data)
        image = modality.data.ndim == 2
        chunks = _chunks_for(modality.data.shape, target=IMAGE_CHUNK_ELEMENTS if image else 1024)
        held = self.path is None and location is None and _in_memory(modality.data)
        if held:
            self.held[modality.name] = modality.data.rechunk(chunks)
        if location is None and not held:
            # Images in bands of whole rows (about 1 MiB of float32): chips are read in row
            # bands, and 1024 px tiles made every band decode two whole tiles (31 bands of a
            # 2048 px image: 276 ms, against 91 ms); and uncompressed: their values compress
            # by about a tenth (the 2048 px phantom: 0.89 of raw) for reads twice as slow
            # (61 -> 111 ms).  Scans (counts, many zeros) compress well: one scan row per
            # chunk, zarr's default compressor (zstd).  Blosc-lz4 with bitshuffle wrote the
            # 4D phantom 25 % faster, but a real 4.3 GB EDS cube to 20.3 MB against zstd's
            # 2.3 MB in the same time, and read it slower (4.1 against 3.3 s).
            data = modality.data.rechunk(chunks)
            da.to_zarr(data, self.group.store, component=f"{key}/data", overwrite=True,
                       zarr_format=self.group.metadata.zarr_format, **({"compressors": None} if image else {}))
        elif "data" in node:
            del node["data"]  # a copy from an earlier run of this name: read in place or held now
        node.attrs.pop("in_place", None)
        self._finish(node, fingerprint, {
            "kind": modality.kind,
            "axes": [axis.to_dict() for axis in modality.axes],
            "source": modality.source,
            "metadata": modality.metadata,
            **({} if location is None else {"in_place": location}),
        })
        if modality.name not in self.modality_names():
            self.set_modality_names([*self.modality_names(), modality.name])

    def modality(self, name: str) -> ModalityData:
        """A stored modality, its data as a Dask array over the zarr store (the study's, or
        the one it reads in place).

        Raises
        ------
        InputError
            A modality read in place whose store is gone or no longer holds the same array.
        """
        key = f"modalities/{name}"
        if key not in self.group:
            raise KeyError(f"no modality {name!r} in the study; have {self.modality_names()}")
        attrs = self.attrs_of(key)
        if name in self.held:
            data = self.held[name]
        elif "in_place" in attrs:
            data = _open_in_place(name, attrs["in_place"])
        else:
            # Named by the modality's fingerprint: Dask would otherwise hash every byte of an
            # in-memory store to name it, each time the modality is opened.
            done = attrs.get("fingerprint")
            data = da.from_zarr(self.group[f"{key}/data"], name=f"mmseg-{name}-{done}" if done else None)
        return ModalityData(
            name=name,
            kind=attrs["kind"],
            data=data,
            axes=[Axis(**axis) for axis in attrs["axes"]],
            source=attrs["source"],
            metadata=attrs.get("metadata", {}),
        )

    def lattice(self, name: str) -> Lattice:
        """The lattice of image modality ``name``
        (:func:`~multimodal_seg.chips.texture.image_lattice`), measured once per session and
        stored modality (:attr:`lattices`)."""
        stored = self.fingerprint_of(f"modalities/{name}")
        cached = self.lattices.get(name)
        if cached is None or cached[0] != stored:
            cached = self.lattices[name] = (stored, image_lattice(self.modality(name).data))
        return cached[1]

    def modalities(self) -> dict[str, ModalityData]:
        """The study's modalities, in the order they were added."""
        return {name: self.modality(name) for name in self.modality_names()}

    def modality_names(self) -> list[str]:
        """Names of the modalities of the current run, in the order they were added."""
        return list(self.group.attrs.get("modalities", []))

    def set_modality_names(self, names: list[str]) -> None:
        """Record which stored modalities the current run uses, in order."""
        self.group.attrs["modalities"] = list(names)

    # -- the grid -----------------------------------------------------------------
    def grid(self) -> SharedGrid:
        """The chip grid laid by the chips stage (every modality's view of it)."""
        if "chips/origins" not in self.group:
            raise KeyError("the study has no chip grid yet: lay it first (stages.lay_chips)")
        attrs = self.attrs_of("chips/origins")
        per_modality = {name: ModalityChips(origins=self.read_array(f"chips/modalities/{name}"),
                                            size=int(self.attrs_of(f"chips/modalities/{name}")["size"]))
                        for name in attrs["modalities"]}
        return SharedGrid.from_dict(attrs["shared"], per_modality)

    # -- what the stages did and the run's provenance -------------------------------
    @property
    def stage_params(self) -> dict[str, dict[str, Any]]:
        """The parameters each stage last ran with, by stage name."""
        return dict(self.group.attrs.get("stages", {}))

    def record_stage(self, stage: str, params: dict[str, Any]) -> None:
        """Remember the parameters a stage ran with (provenance is assembled from them)."""
        self.group.attrs["stages"] = {**self.stage_params, stage: params}

    @property
    def provenance(self) -> dict[str, Any]:
        """The run's provenance record (config, versions, seed, sources, encoders ...)."""
        return dict(self.group.attrs.get("provenance", {}))

    def record(self, **entries: Any) -> None:
        """Merge entries into the study's provenance record."""
        self.group.attrs["provenance"] = {**self.provenance, **entries}

    def __repr__(self) -> str:
        where = self.path or "<memory>"
        return f"Study({where}, modalities={self.modality_names()})"


def _in_memory(data: da.Array) -> bool:
    """Whether every chunk of ``data`` is a NumPy array already (nothing left to read or compute)."""
    return all(isinstance(value, np.ndarray) for value in dict(data.__dask_graph__()).values())


def _zarr_location(data: da.Array) -> dict[str, Any] | None:
    """Where ``data`` lies when it is exactly one whole zarr array in a folder on this machine
    (``da.from_zarr`` of it, nothing computed on top), else ``None``.

    Returns ``{"store": folder, "path": array path in the store, "shape", "dtype", "chunks"}``
    (``chunks``: the Dask chunks, so reopening reads the same blocks).
    """
    layers = data.dask.layers
    arrays = [value for layer in layers.values() if len(layer) == 1
              for value in dict(layer).values() if isinstance(value, zarr.Array)]
    if len(layers) != 2 or len(arrays) != 1:
        return None
    array = arrays[0]
    root = getattr(array.store, "root", None)  # LocalStore
    if root is None:  # a path opened through fsspec's local file system
        fs, path = getattr(array.store, "fs", None), getattr(array.store, "path", None)
        local = fs is not None and "file" in (getattr(getattr(fs, "sync_fs", fs), "protocol", ()) or ())
        root = path if local else None
    if (root is None or not Path(root).is_dir() or tuple(array.shape) != tuple(data.shape)
            or np.dtype(array.dtype) != data.dtype):
        return None
    return {"store": str(Path(root).resolve()), "path": array.path, "shape": list(data.shape),
            "dtype": str(data.dtype), "chunks": [list(c) for c in data.chunks]}


def _open_in_place(name: str, location: dict[str, Any]) -> da.Array:
    """The Dask array over a zarr array the study reads in place; see :func:`_zarr_location`."""
    store = Path(location["store"])
    try:
        array = zarr.open_array(store=zarr.storage.LocalStore(store, read_only=True),
                                path=location["path"], mode="r")
    except Exception as exc:  # zarr raises several types for a missing or foreign store
        raise InputError(
            f"modality {name!r} is read in place from this zarr store, and it cannot be opened "
            f"({exc})", fix="put the store back where it was, or run again into a new --out",
            where=store) from exc
    if list(array.shape) != location["shape"] or str(array.dtype) != location["dtype"]:
        raise InputError(
            f"modality {name!r} is read in place from this zarr store, which now holds a "
            f"{list(array.shape)} {array.dtype} array instead of the {location['shape']} "
            f"{location['dtype']} one the study was made from",
            fix="put the original array back, or run again into a new --out", where=store)
    return da.from_zarr(array, chunks=tuple(tuple(c) for c in location["chunks"]))


#: Elements per chunk of a stored image (whole rows): about 1 MiB of float32.
IMAGE_CHUNK_ELEMENTS = 2**18


def _chunks_for(shape: tuple[int, ...], target: int = 65536) -> tuple[int, ...]:
    """Chunks of about ``target`` elements along the first axis (whole rows)."""
    if len(shape) == 0:
        return ()
    row = int(np.prod(shape[1:])) or 1
    first = max(1, min(shape[0] or 1, target // row))
    return (first, *[max(s, 1) for s in shape[1:]])
