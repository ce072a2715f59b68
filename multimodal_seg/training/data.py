"""Training data: chips streamed from files or studies through Dask, never loaded whole.

Every source (a file, an array, a :class:`ModalityData`, or a study's modalities of
the trained kind) is read lazily (:func:`multimodal_seg.modalities.sources.read_modalities`,
:meth:`multimodal_seg.pipeline.study.Study.modality`) and cut into chips of the size
``segment()`` would use on it (:func:`multimodal_seg.chips.sizing.chip_geometry`).
Each epoch draws a seeded random set of chip positions anywhere in the sources
(uniformly over the items they hold), reads them block by block
(:func:`multimodal_seg.chips.grid.iter_chips`: bands of at most two chip heights,
only the columns needed, at most ``block_mib`` MiB at a time), turns them into the
items the network sees (:meth:`signals`: image chips scaled to [0, 1] by the image's
range, or single spectra / patterns in raw counts), shuffles them within the block
and yields batches of two augmented views, preprocessed for the network
(:mod:`multimodal_seg.training.augment`, ``encoder.prepare``).

A fixed, seeded set of ``val_items`` items, augmented with a fixed seed, gives the
validation loss that early stopping and the best checkpoint follow.  Its chips are
drawn from the same sources as the training chips (and may overlap them): it
watches convergence, it does not measure generalisation.

Data-parallel runs (DDP) and loader workers each take their own share of the
epoch's blocks (shards), and every shard yields the same number of batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from ..chips.grid import iter_chips
from ..chips.sizing import chip_geometry
from ..config import ChipConfig
from ..errors import InputError, ParameterError
from ..modalities.base import ModalityData
from ..modalities.sources import read_modalities
from ..pipeline.embedding import modality_intensity, scaler
from ..pipeline.study import Study
from .augment import augment_pair
from .config import TrainConfig

#: Chips drawn per read (bounds the list of origins passed to iter_chips at once).
READ_BATCH = 256


@dataclass
class ChipSource:
    """One modality chips are drawn from.

    Attributes
    ----------
    modality
        The (lazy) modality.
    size
        Chip edge in scan positions or pixels.
    intensity
        Image range mapped to [0, 1] (``(0, 1)`` for spectra and patterns: raw counts).
    items_per_chip
        Items a chip gives the network (1 for images, ``size**2`` positions otherwise).
    """

    modality: ModalityData
    size: int
    intensity: tuple[float, float]
    items_per_chip: int

    @property
    def n_origins(self) -> int:
        rows, cols = (int(n) for n in self.modality.data.shape[:2])
        return (rows - self.size + 1) * (cols - self.size + 1)

    @property
    def chip_bytes(self) -> int:
        signal = int(np.prod(self.modality.data.shape[2:], dtype=np.int64))
        return self.size * self.size * max(signal, 1) * 4

    def origin(self, index: np.ndarray) -> np.ndarray:
        """Top-left position of chips by flat index over every valid position, ``(n, 2)``."""
        cols = int(self.modality.data.shape[1]) - self.size + 1
        return np.stack([index // cols, index % cols], axis=1)


def _is_study(item: Any) -> Path | None:
    """The study store ``item`` names (a study folder, or an output folder holding ``study.zarr``)."""
    if not isinstance(item, (str, Path)):
        return None
    path = Path(item).expanduser()
    if not path.is_dir():
        return None
    if (path / "study.zarr").is_dir():
        path = path / "study.zarr"
    return path if (path / "zarr.json").is_file() else None


def read_sources(data: Sequence[Any], kind: str) -> list[ModalityData]:
    """Every modality of ``kind`` in ``data`` (files, arrays, ModalityData, studies), read lazily.

    Parameters
    ----------
    data
        Files (any format the ``kind`` reader takes), ``(file, {reader options})``,
        arrays, :class:`ModalityData`, or study folders (``study.zarr`` or the output
        folder of a run): a study contributes each of its modalities of ``kind``.
    kind
        ``"image"``, ``"spectrum"`` or ``"diffraction"``.

    Raises
    ------
    InputError
        Unreadable files, or a study without a modality of ``kind``.
    ParameterError
        No data given.
    """
    if isinstance(data, (str, Path, ModalityData, tuple)) or not isinstance(data, Sequence):
        data = [data]
    if not data:
        raise ParameterError("no training data given", fix="give one or more files or studies",
                             where="data")
    out: list[ModalityData] = []
    for item in data:
        store = _is_study(item)
        if store is not None:
            study = Study.open(store)
            found = [m for m in study.modalities().values() if m.kind == kind]
            if not found:
                kinds = sorted({m.kind for m in study.modalities().values()}) or ["none"]
                raise InputError(f"the study holds no {kind} modality (it has: {', '.join(kinds)})",
                                 fix=f"give a study or file with {kind} data, or train another "
                                     f"--modality", where=store)
            out.extend(found)
        else:
            out.extend(read_modalities({kind: item}).values())
    return out


def chip_sources(modalities: Sequence[ModalityData], config: TrainConfig) -> list[ChipSource]:
    """Each modality with its chip size (the rule ``segment()`` uses) and intensity range.

    Raises
    ------
    ParameterError
        A chip size that does not fit a modality.
    """
    chips = ChipConfig(size=config.data.chip_size, stride=config.data.stride)
    out = []
    for modality in modalities:
        size, _ = chip_geometry(chips, {modality.name: modality})
        rows, cols = (int(n) for n in modality.data.shape[:2])
        if size > min(rows, cols):
            raise ParameterError(f"chip size {size} is larger than {modality.source} ({rows} x {cols})",
                                 fix=f"use chip_size <= {min(rows, cols)}", where="chip_size")
        per_chip = 1 if modality.kind == "image" else size * size
        out.append(ChipSource(modality, size, modality_intensity(modality), per_chip))
    return out


def _read(source: ChipSource, index: np.ndarray, encoder: Any) -> np.ndarray:
    """The network items of chips ``index`` of ``source``, in the order of ``index``.

    The chips are read in row order (bands, :func:`~multimodal_seg.chips.grid.iter_chips`)
    and put back in the given order; a chip's items stay consecutive.
    """
    order = np.argsort(index, kind="stable")
    origins = source.origin(np.asarray(index)[order])
    scale = scaler(source.modality, source.intensity)
    parts = [encoder.signals(scale(chips.astype(np.float32, copy=False)))[0]
             for _, chips in iter_chips(source.modality.data, origins, source.size, batch=READ_BATCH)]
    items = np.concatenate(parts)
    per = source.items_per_chip
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    return items.reshape(len(order), per, *items.shape[1:])[back].reshape(items.shape)


def _partners(source: ChipSource, index: np.ndarray, reach: int, rng: np.random.Generator) -> np.ndarray:
    """A neighbour of each chip: the chip moved by up to ``reach`` positions along each axis (not
    by zero when ``reach`` >= 1); a move past the edge goes the other way instead."""
    if reach < 1:
        return index
    rows, cols = (int(n) - source.size + 1 for n in source.modality.data.shape[:2])
    origin = source.origin(index)
    offset = rng.integers(-reach, reach, size=(len(index), 2), endpoint=True)
    still = (offset == 0).all(axis=1)
    offset[still, rng.integers(0, 2, size=int(still.sum()))] = rng.choice([-1, 1], size=int(still.sum()))
    moved = []
    for axis, length in enumerate((rows, cols)):
        to = origin[:, axis] + offset[:, axis]
        to = np.where((to < 0) | (to >= length), origin[:, axis] - offset[:, axis], to)
        moved.append(np.clip(to, 0, length - 1))  # only a scan narrower than the reach clips
    return moved[0] * cols + moved[1]


def _reach(source: ChipSource, augment: Any) -> int:
    """How far (positions or pixels) a chip's partner may lie: the kind's ``neighbour`` setting,
    for images a fraction of the chip (``max_shift``)."""
    if source.modality.kind == "image":
        return int(round(augment.max_shift * source.size))
    return int(augment.neighbour)


def _draw(sources: Sequence[ChipSource], n_items: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """``(source, flat origin)`` of chips holding at least ``n_items`` items, drawn uniformly over items."""
    weights = np.array([s.n_origins * s.items_per_chip for s in sources], dtype=np.float64)
    per = np.array([s.items_per_chip for s in sources])
    picked: list[tuple[int, int]] = []
    items = 0
    while items < n_items:
        ks = rng.choice(len(sources), size=max(1, (n_items - items) // int(per.max())), p=weights / weights.sum())
        for k in ks:
            picked.append((int(k), int(rng.integers(sources[k].n_origins))))
            items += int(per[k])
    return picked


def _blocks(sources: Sequence[ChipSource], picked: list[tuple[int, int]], block_bytes: float) -> list[list[tuple[int, int]]]:
    """Split the drawn chips into blocks of at most ``block_bytes`` of raw data (chip and
    partner; at least one chip)."""
    blocks: list[list[tuple[int, int]]] = [[]]
    used = 0.0
    for k, index in picked:
        size = 2 * sources[k].chip_bytes
        if blocks[-1] and used + size > block_bytes:
            blocks.append([])
            used = 0.0
        blocks[-1].append((k, index))
        used += size
    return blocks


def _pairs(sources: Sequence[ChipSource], block: list[tuple[int, int]], views: ViewBatches,
           rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """The items of a block's chips, each paired with the same item of its neighbour chip."""
    by_source: dict[int, list[int]] = {}
    for k, index in block:
        by_source.setdefault(k, []).append(index)
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    for k, indices in by_source.items():
        index = np.asarray(indices, dtype=np.int64)
        partner = _partners(sources[k], index, _reach(sources[k], views.augment), rng)
        items = _read(sources[k], np.concatenate([index, partner]), views.encoder)
        half = len(items) // 2
        pairs.extend(zip(items[:half], items[half:], strict=True))
    return pairs


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def _shard() -> tuple[int, int]:
    """``(this shard, shards per process)``: loader workers times DDP ranks share an epoch."""
    from torch.utils.data import get_worker_info

    worker = get_worker_info()
    per_rank = worker.num_workers if worker is not None else 1
    return _rank() * per_rank + (worker.id if worker is not None else 0), per_rank


def _rank() -> int:
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _world() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class ViewBatches:
    """Batches of two views, augmented and preprocessed, from pairs of items (an item and its
    neighbour's), of one or several shapes.

    Items of one shape are augmented together; the network inputs of every shape
    must agree (checked by :func:`check_input_shapes`).
    """

    def __init__(self, encoder: Any, kind: str, augment: Any) -> None:
        self.encoder, self.kind, self.augment = encoder, kind, augment

    def __call__(self, pairs: list[tuple[np.ndarray, np.ndarray]], gen: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (item, _) in enumerate(pairs):
            groups.setdefault(item.shape, []).append(i)
        first, second = [], []
        for idx in groups.values():
            v1, v2 = augment_pair(np.stack([pairs[i][0] for i in idx]), np.stack([pairs[i][1] for i in idx]),
                                  self.kind, self.augment, gen)
            first.append(self.encoder.prepare(v1))
            second.append(self.encoder.prepare(v2))
        return torch.cat(first), torch.cat(second)


class ChipStream(IterableDataset):
    """One epoch of training batches ``(view1, view2)``, streamed.

    Parameters
    ----------
    sources
        The chip sources.
    views
        Makes a batch of two views from a list of item pairs.
    config
        The training config (items per epoch, batch size, block size, seed).
    epoch
        The epoch: with the seed, it decides which chips are drawn and how they are augmented.
    num_workers
        DataLoader workers (each takes its own shard of blocks).
    """

    def __init__(self, sources: Sequence[ChipSource], views: ViewBatches, config: TrainConfig, *,
                 epoch: int, num_workers: int = 0) -> None:
        self.sources, self.views, self.epoch = list(sources), views, int(epoch)
        self.n_items, self.batch = config.data.items_per_epoch, config.optim.batch_size
        self.block_bytes = config.data.block_mib * 2**20
        self.seed = config.seed
        self.num_workers = num_workers

    def _plan(self) -> tuple[list[list[tuple[int, int]]], int]:
        """The epoch's blocks (identical in every process) and the batches every shard yields."""
        rng = np.random.default_rng([self.seed, self.epoch])
        blocks = _blocks(self.sources, _draw(self.sources, self.n_items, rng), self.block_bytes)
        n_shards = _world() * max(1, self.num_workers)
        per_shard = [sum(self.sources[k].items_per_chip for b in blocks[s::n_shards] for k, _ in b)
                     for s in range(n_shards)]
        return blocks, max(0, min(per_shard)) // self.batch

    def __len__(self) -> int:
        return max(1, self.num_workers) * self._plan()[1]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        blocks, n_batches = self._plan()
        shard, per_rank = _shard()
        n_shards = _world() * per_rank
        rng = np.random.default_rng([self.seed, self.epoch, shard, 1])
        gen = torch.Generator().manual_seed(_seed(self.seed, self.epoch, shard, 2))
        buffer: list[tuple[np.ndarray, np.ndarray]] = []
        done = 0
        for block in blocks[shard::n_shards]:
            buffer.extend(_pairs(self.sources, block, self.views, rng))
            buffer = [buffer[i] for i in rng.permutation(len(buffer))]
            while len(buffer) >= self.batch and done < n_batches:
                batch, buffer = buffer[: self.batch], buffer[self.batch :]
                yield self.views(batch, gen)
                done += 1
            if done >= n_batches:
                return


class ValidationBatches(IterableDataset):
    """The fixed validation pairs, read once, as batches of two views with fixed augmentations."""

    def __init__(self, sources: Sequence[ChipSource], views: ViewBatches, config: TrainConfig) -> None:
        rng = np.random.default_rng([config.seed, 2**31 - 1])
        pairs = _pairs(sources, _draw(sources, config.data.val_items, rng), views, rng)
        self.pairs = pairs[: config.data.val_items]
        self.views, self.seed = views, config.seed
        self.batch = max(2, min(config.optim.batch_size, len(self.pairs)))

    def __len__(self) -> int:
        return max(1, len(self.pairs) // self.batch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(_seed(self.seed, 2**31 - 1))
        for i in range(len(self)):
            yield self.views(self.pairs[i * self.batch : (i + 1) * self.batch], gen)


def check_input_shapes(sources: Sequence[ChipSource], encoder: Any) -> None:
    """Refuse sources whose items would reach the network in different shapes.

    Raises
    ------
    ParameterError
        Two sources give network inputs of different shapes (e.g. detector sizes with
        ``size=None``): they cannot share a batch.
    """
    shapes = {}
    for source in sources:
        item = _read(source, np.zeros(1, dtype=np.int64), encoder)[:1]
        shapes[source.modality.source] = tuple(encoder.prepare(item).shape[1:])
    if len(set(shapes.values())) > 1:
        listing = "; ".join(f"{k}: {v}" for k, v in shapes.items())
        raise ParameterError(
            f"the training data give network inputs of different shapes ({listing})",
            fix="train on data of one shape, or let the encoder resize its input (e.g. the size option)",
            where="data")


class ChipDataModule(L.LightningDataModule):
    """Training chips streamed per epoch and a fixed validation set (see the module docstring).

    Parameters
    ----------
    sources
        The chip sources (:func:`chip_sources`).
    encoder
        The encoder being trained (its ``signals`` and ``prepare``).
    kind
        The data kind (picks the augmentations).
    config
        The training config.
    """

    def __init__(self, sources: Sequence[ChipSource], encoder: Any, kind: str, config: TrainConfig) -> None:
        super().__init__()
        self.sources, self.config = list(sources), config
        self.views = ViewBatches(encoder, kind, getattr(config.augment, kind))
        self.val_set: ValidationBatches | None = None

    def setup(self, stage: str) -> None:
        if self.val_set is None:
            self.val_set = ValidationBatches(self.sources, self.views, self.config)

    def train_dataloader(self) -> DataLoader:
        # rebuilt every epoch (reload_dataloaders_every_n_epochs=1): the epoch seeds the draw
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        workers = self.config.data.num_workers
        stream = ChipStream(self.sources, self.views, self.config, epoch=epoch, num_workers=workers)
        return DataLoader(stream, batch_size=None, num_workers=workers)

    def val_dataloader(self) -> DataLoader:
        if self.val_set is None:
            self.setup("validate")
        return DataLoader(self.val_set, batch_size=None)
