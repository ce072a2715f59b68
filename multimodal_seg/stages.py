"""Stage functions: each reads the Study, writes its output there, and is skipped
when that output already exists for the same inputs and parameters.

The order is ``add_modality -> make_chips -> embed_chips -> build_graph ->
find_communities``; each returns the fingerprint its successors depend on.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from . import graph as graphs
from .chips import ChipGrid
from .communities import partition_graph
from .descriptors import CHIP_STATS, chip_statistics
from .encoders.base import Encoder
from .modalities.base import ModalityData
from .provenance import fingerprint
from .study import Study

#: Pixels sampled to find the intensity scale (percentiles) of an image.
SCALE_SAMPLE = 1_000_000
#: Percentiles mapped to 0 and 1 before encoding: robust to hot pixels.
SCALE_PERCENTILES = (0.5, 99.5)


def add_modality(study: Study, modality: ModalityData, *, source_id: dict) -> str:
    """Store a modality's data in the study unless the same source is already there."""
    fp = fingerprint("modality", modality.kind, source_id)
    if not study.is_current(f"modalities/{modality.name}", fp):
        study.write_modality(modality, fingerprint=fp)
    return fp


def make_chips(study: Study, grid: ChipGrid, *, modality: str, upstream: str) -> str:
    """Write the chip grid (``chips/origins`` and its attributes)."""
    fp = fingerprint("chips", grid.to_dict(), upstream)
    if not study.is_current("chips/origins", fp):
        axes = study.modality(modality).axes
        study.write_array(
            "chips/origins", grid.origins, fingerprint=fp, grid=grid.to_dict(), modality=modality,
            chip_size_physical=[grid.size * axis.scale for axis in axes],
            stride_physical=[grid.stride * axis.scale for axis in axes],
            units=[axis.units for axis in axes],
        )
    return fp


def intensity_scale(data, *, sample: int = SCALE_SAMPLE) -> tuple[float, float]:
    """Robust (low, high) intensity of an image from a regular subsample of pixels."""
    step = max(1, int(np.sqrt(data.size / sample)))
    values = np.asarray(data[::step, ::step]).ravel()
    low, high = np.percentile(values, SCALE_PERCENTILES)
    if high <= low:  # very sparse images: fall back to the full range
        low, high = float(values.min()), float(values.max())
    return float(low), float(high)


def embed_chips(
    study: Study, grid: ChipGrid, encoder: Encoder, *, modality: str, upstream: str,
    batch_chips: int = 256, progress: bool = True,
) -> str:
    """Embed every chip; write ``embeddings/<modality>`` and ``chips/stats``.

    The image is streamed one band of chip rows at a time, so memory holds about
    ``batch_chips`` chips, never the whole modality.
    """
    fp = fingerprint("embeddings", encoder.fingerprint(), upstream)
    key = f"embeddings/{modality}"
    if study.is_current(key, fp) and study.is_current("chips/stats", fp):
        return fp
    data = study.modality(modality).data
    low, high = intensity_scale(data)
    n_rows, n_cols = grid.grid_shape
    rows_per_batch = max(1, batch_chips // n_cols)
    embeddings = np.empty((grid.n_chips, encoder.dim), dtype=np.float32)
    stats = np.empty((grid.n_chips, len(CHIP_STATS)), dtype=np.float32)
    bar = tqdm(total=grid.n_chips, desc=f"embedding {modality} ({encoder.name})", unit="chip",
               disable=not progress, leave=False)
    with bar:
        for first in range(0, n_rows, rows_per_batch):
            starts = grid.row_starts[first : first + rows_per_batch]
            band = np.asarray(data[starts[0] : starts[-1] + grid.size].compute(), dtype=np.float32)
            raw = np.concatenate([grid.extract_row(band[r - starts[0] : r - starts[0] + grid.size])
                                  for r in starts])
            done = first * n_cols
            scaled = np.clip((raw - low) / (high - low), 0.0, 1.0)
            embeddings[done : done + len(raw)] = encoder.encode(scaled)
            stats[done : done + len(raw)] = chip_statistics(raw)
            bar.update(len(raw))
    study.write_array("chips/stats", stats, fingerprint=fp, columns=list(CHIP_STATS))
    study.write_array(key, embeddings, fingerprint=fp, encoder=encoder.fingerprint(),
                      intensity_scale=[low, high])
    return fp


def build_graph(study: Study, *, modality: str, k: int, n_pcs: int | None, seed: int,
                upstream: str) -> str:
    """kNN similarity graph of a modality's embeddings -> ``graphs/<modality>``."""
    params = {"k": k, "n_pcs": n_pcs, "metric": "cosine", "seed": seed}
    fp = fingerprint("graph", params, upstream)
    key = f"graphs/{modality}"
    if not study.is_current(key, fp):
        features = graphs.reduce_features(study.read_array(f"embeddings/{modality}"), n_pcs=n_pcs,
                                          seed=seed)
        graph = graphs.knn_graph(features, k=k, seed=seed)
        study.write_sparse(key, graph, fingerprint=fp, params=params,
                           search="exact" if graph.shape[0] <= graphs.EXACT_MAX else "pynndescent")
    return fp


def find_communities(study: Study, *, graph: str, method: str, resolution: float, seed: int,
                     n_iterations: int, upstream: str, key_added: str | None = None) -> str:
    """Partition ``graphs/<graph>`` -> ``partitions/<key_added or method>``."""
    params = {"graph": graph, "method": method, "resolution": resolution, "seed": seed,
              "n_iterations": n_iterations}
    fp = fingerprint("partition", params, upstream)
    key = f"partitions/{key_added or method}"
    if not study.is_current(key, fp):
        part = partition_graph(study.read_sparse(f"graphs/{graph}"), method=method,
                               resolution=resolution, seed=seed, n_iterations=n_iterations)
        study.write_array(key, part.labels, fingerprint=fp, params=params,
                          modularity=part.modularity, n_communities=part.n_communities)
    return fp
