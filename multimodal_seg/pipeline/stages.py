"""Stage functions: each reads the Study, writes its output there, and is skipped
when that output already exists for the same inputs and parameters.

The order is ``add_modality -> make_chips -> embed_chips -> build_graph ->
find_communities``; each returns the fingerprint its successors depend on.
"""

from __future__ import annotations

import weakref

import numpy as np
from tqdm.auto import tqdm

from ..graphs import knn as graphs
from ..chips.grid import ChipGrid, iter_chips
from ..graphs.communities import merge_partition, partition_graph
from ..analysis.descriptors import CHIP_STATS, chip_statistics
from ..encoders.base import Encoder
from ..modalities.base import ModalityData
from ..encoders.pooling import pooled_position_embeddings
from ..provenance import fingerprint
from ..chips.shared import ModalityChips
from .study import Study

#: Pixels sampled to find the intensity scale (percentiles) of an image.
SCALE_SAMPLE = 1_000_000
#: Percentiles mapped to 0 and 1 before encoding: robust to hot pixels.
SCALE_PERCENTILES = (0.5, 99.5)
#: Chips shown to encoders that learn from the data (``Encoder.fit``).
FIT_SAMPLE = 512


def add_modality(study: Study, modality: ModalityData, *, source_id: dict) -> str:
    """Store a modality's data in the study unless the same source is already there."""
    fp = fingerprint("modality", modality.kind, source_id)
    if not study.is_current(f"modalities/{modality.name}", fp):
        study.write_modality(modality, fingerprint=fp)
    return fp


def make_chips(study: Study, grid: ChipGrid, chips: dict[str, ModalityChips], *,
               upstream: str, shared: dict | None = None) -> str:
    """Write the chip grid: ``chips/origins`` and, per modality, ``chips/modalities/<name>``."""
    layout = {name: {"size": c.size, "origins": fingerprint(c.origins)} for name, c in chips.items()}
    fp = fingerprint("chips", grid.to_dict(), layout, upstream)
    if not study.is_current("chips/origins", fp):
        for name, modality_chips in chips.items():
            axes = study.modality(name).axes[:2]
            study.write_array(
                f"chips/modalities/{name}", modality_chips.origins, fingerprint=fp,
                size=modality_chips.size,
                chip_size_physical=[modality_chips.size * axis.scale for axis in axes],
                units=[axis.units for axis in axes],
            )
        study.write_array("chips/origins", grid.origins, fingerprint=fp, grid=grid.to_dict(),
                          modalities=sorted(chips), shared=shared or {})
    return fp


def intensity_scale(data, *, sample: int = SCALE_SAMPLE) -> tuple[float, float]:
    """Robust (low, high) intensity of an image from a regular subsample of pixels."""
    step = max(1, int(np.sqrt(data.size / sample)))
    values = np.asarray(data[::step, ::step]).ravel()
    low, high = np.percentile(values, SCALE_PERCENTILES)
    if high <= low:  # very sparse images: fall back to the full range
        low, high = float(values.min()), float(values.max())
    return float(low), float(high)


def _fit_sample(data, chips: ModalityChips, *, seed: int, n: int = FIT_SAMPLE) -> np.ndarray:
    """A seeded random sample of chips for encoders that learn from the data."""
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(chips.origins), min(n, len(chips.origins)), replace=False))
    return np.concatenate([batch for _, batch in iter_chips(data, chips.origins[picked], chips.size)])


def embed_chips(
    study: Study, chips: ModalityChips, encoder: Encoder, *, modality: str, upstream: str,
    seed: int = 0, batch_chips: int = 256, progress: bool = True,
) -> str:
    """Embed every chip of one modality; write ``embeddings/<modality>`` and ``chips/stats/<modality>``.

    The modality is streamed from the store one band of chip rows at a time, so
    memory holds about ``batch_chips`` chips, never the whole modality.  Encoders
    that pool per-position features (``Encoder.pools_positions``) encode each scan
    position once instead (:mod:`multimodal_seg.encoders.pooling`).  Image
    chips are scaled to [0, 1] by the image's robust intensity range; spectra and
    diffraction patterns reach their encoders as raw counts.
    """
    fp = fingerprint("embeddings", encoder.fingerprint(), upstream, seed)
    key = f"embeddings/{modality}"
    stats_key = f"chips/stats/{modality}"
    if study.is_current(key, fp) and study.is_current(stats_key, fp):
        return fp
    mod = study.modality(modality)
    is_image = mod.kind == "image"
    low, high = intensity_scale(mod.data) if is_image else (0.0, 1.0)
    _fit_encoder(mod, chips, encoder, intensity=(low, high), seed=seed)
    embeddings, stats = encode_chips(mod, chips, encoder, intensity=(low, high), batch_chips=batch_chips,
                                     progress=progress, desc=f"embedding {modality} ({encoder.name})")
    study.write_array(stats_key, stats, fingerprint=fp, columns=list(CHIP_STATS))
    study.write_array(key, embeddings, fingerprint=fp, encoder=encoder.fingerprint(),
                      intensity_scale=[low, high] if is_image else None,
                      standardise=encoder.standardise)
    return fp


def _scaler(modality: ModalityData, intensity: tuple[float, float]):
    """Images are scaled to [0, 1] by their robust range; spectra and patterns stay raw counts."""
    if modality.kind != "image":
        return lambda raw: raw
    low, high = intensity
    return lambda raw: np.clip((raw - low) / (high - low), 0.0, 1.0)


#: What each encoder object was last fitted on (a fingerprint), so that boundary refinement
#: does not fit again an encoder the embedding stage fitted in the same run.
_FITTED_ON: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _fit_encoder(modality: ModalityData, chips: ModalityChips, encoder: Encoder, *,
                 intensity: tuple[float, float], seed: int) -> None:
    """Let an encoder that learns from the data (``Encoder.fit``) see its seeded sample.

    Skipped when this encoder object was already fitted on the same sample (same
    modality, chips, intensity range and seed); a resumed run, whose embedding stage
    was skipped, fits it here first.
    """
    if type(encoder).fit is Encoder.fit:
        return
    key = fingerprint(modality.name, modality.source, chips.origins, chips.size, intensity, seed)
    if _FITTED_ON.get(encoder) == key:
        return
    encoder.fit(_scaler(modality, intensity)(_fit_sample(modality.data, chips, seed=seed)))
    _FITTED_ON[encoder] = key


def encode_chips(modality: ModalityData, chips: ModalityChips, encoder: Encoder, *,
                 intensity: tuple[float, float], batch_chips: int = 256, progress: bool = True,
                 desc: str = "embedding") -> tuple[np.ndarray, np.ndarray]:
    """Embeddings ``(n_chips, encoder.dim)`` and raw statistics ``(n_chips, 2)`` of some chips.

    The modality is streamed one band of chip rows at a time, or, for encoders that
    pool per-position features (``Encoder.pools_positions``), each scan position is
    encoded once (:mod:`multimodal_seg.encoders.pooling`).  ``intensity`` is the
    image's (low, high) range mapped to [0, 1] (ignored for spectra and patterns).
    """
    if encoder.pools_positions and modality.kind != "image":
        return pooled_position_embeddings(modality.data, chips.origins, chips.size, encoder,
                                          progress=progress, desc=desc)
    return _embed_chip_by_chip(modality.data, chips, encoder, _scaler(modality, intensity),
                               batch_chips=batch_chips, progress=progress, desc=desc)


def _embed_chip_by_chip(data, chips: ModalityChips, encoder: Encoder, scale, *, batch_chips: int,
                        progress: bool, desc: str) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and raw statistics, streaming ``batch_chips`` chips at a time."""
    n_chips = len(chips.origins)
    embeddings = np.empty((n_chips, encoder.dim), dtype=np.float32)
    stats = np.empty((n_chips, len(CHIP_STATS)), dtype=np.float32)
    with tqdm(total=n_chips, desc=desc, unit="chip", disable=not progress, leave=False) as bar:
        for first, raw in iter_chips(data, chips.origins, chips.size, batch=batch_chips):
            raw = raw.astype(np.float32, copy=False)
            embeddings[first : first + len(raw)] = encoder.encode(scale(raw))
            stats[first : first + len(raw)] = chip_statistics(raw)
            bar.update(len(raw))
    return embeddings, stats


def build_graph(study: Study, *, modality: str, k: int, n_pcs: int | None, seed: int,
                upstream: str) -> str:
    """kNN similarity graph of a modality's embeddings -> ``graphs/<modality>``."""
    params = {"k": k, "n_pcs": n_pcs, "metric": "cosine", "seed": seed}
    fp = fingerprint("graph", params, upstream)
    key = f"graphs/{modality}"
    if not study.is_current(key, fp):
        key_in = f"embeddings/{modality}"
        features = graphs.reduce_features(study.read_array(key_in), n_pcs=n_pcs, seed=seed,
                                          standardise=study.attrs_of(key_in).get("standardise", True))
        graph = graphs.knn_graph(features, k=k, seed=seed)
        study.write_sparse(key, graph, fingerprint=fp, params=params,
                           search="exact" if graph.shape[0] <= graphs.EXACT_MAX else "pynndescent")
    return fp


def find_communities(study: Study, *, graph: str, method: str, resolution: float, seed: int,
                     n_iterations: int, upstream: str, key_added: str | None = None,
                     merge: float | None = None, n_restarts: int = 1, consensus: int = 0) -> str:
    """Partition ``graphs/<graph>`` -> ``partitions/<key_added or method>``.

    With ``merge``, well-connected communities are then merged
    (:func:`multimodal_seg.graphs.communities.merge_connected`).
    """
    params = {"graph": graph, "method": method, "resolution": resolution, "seed": seed,
              "n_iterations": n_iterations, "merge": merge, "n_restarts": n_restarts}
    if consensus > 1:  # only then, so partitions of earlier runs stay current
        params["consensus"] = consensus
    fp = fingerprint("partition", params, upstream)
    key = f"partitions/{key_added or method}"
    if not study.is_current(key, fp):
        adjacency = study.read_sparse(f"graphs/{graph}")
        part = partition_graph(adjacency, method=method, resolution=resolution, seed=seed,
                               n_iterations=n_iterations, n_restarts=n_restarts, consensus=consensus)
        if merge is not None:
            part = merge_partition(adjacency, part, merge)
        study.write_array(key, part.labels, fingerprint=fp, params=params,
                          modularity=part.modularity, n_communities=part.n_communities)
    return fp


def build_joint_graph(study: Study, *, modalities: list[str], k: int, n_pcs: int | None, seed: int,
                      layer_weights: dict[str, float], upstream: str) -> str:
    """kNN graph on concatenated, variance-balanced embeddings -> ``graphs/joint``."""
    from ..graphs.fusion import concatenated_features

    params = {"k": k, "n_pcs": n_pcs, "metric": "cosine", "seed": seed, "modalities": modalities,
              "layer_weights": layer_weights, "fusion": "concat"}
    fp = fingerprint("joint-graph", params, upstream)
    if not study.is_current("graphs/joint", fp):
        features = concatenated_features(
            {m: study.read_array(f"embeddings/{m}") for m in modalities}, n_pcs=n_pcs,
            layer_weights=layer_weights, seed=seed,
            standardise={m: study.attrs_of(f"embeddings/{m}").get("standardise", True)
                         for m in modalities})
        study.write_sparse("graphs/joint", graphs.knn_graph(features, k=k, seed=seed),
                           fingerprint=fp, params=params)
    return fp


def find_multiplex_communities(study: Study, *, graphs_: list[str], layer_weights: dict[str, float],
                               resolution: float, seed: int, n_iterations: int, upstream: str,
                               key_added: str = "joint") -> str:
    """One partition over several modality graphs (leidenalg multiplex) -> ``partitions/<key_added>``."""
    from ..graphs.fusion import multiplex_partition

    params = {"graphs": graphs_, "method": "multiplex-leiden", "layer_weights": layer_weights,
              "resolution": resolution, "seed": seed, "n_iterations": n_iterations}
    fp = fingerprint("multiplex-partition", params, upstream)
    key = f"partitions/{key_added}"
    if not study.is_current(key, fp):
        part = multiplex_partition({g: study.read_sparse(f"graphs/{g}") for g in graphs_},
                                   layer_weights=layer_weights, resolution=resolution, seed=seed,
                                   n_iterations=n_iterations)
        study.write_array(key, part.labels, fingerprint=fp, params=params,
                          modularity=part.modularity, n_communities=part.n_communities)
    return fp


def refine_boundaries(study: Study, *, grid: ChipGrid, fine: ChipGrid, chips: dict[str, ModalityChips],
                      fine_chips: dict[str, ModalityChips], encoders: dict[str, Encoder], partitions: dict[str, dict[str, float]],
                      k: int, n_pcs: int | None, seed: int, upstream: str,
                      progress: bool = True) -> str:
    """Move each partition's boundaries onto the ``fine`` grid -> ``refined/<partition>``.

    See :mod:`multimodal_seg.chips.refine`.  Each modality embeds the fine chips that lie
    on a boundary of any partition once; each partition is then refined with the
    votes of its modalities.

    Parameters
    ----------
    grid, fine
        The partitioned chip grid and the finer grid (same chip size, smaller stride),
        both in pixels of the reference scan.
    chips, fine_chips
        Each modality's view of the two grids (an encoder that learns from the data is
        fitted again on the sample of ``chips`` it was fitted on before).
    encoders
        Each modality's encoder, as used for ``embeddings/<modality>``.
    partitions
        ``{partition name: {modality: layer weight}}``: which modalities vote on
        ``partitions/<name>``, and how much each counts.
    k, n_pcs, seed
        Neighbours asked, and the graph's PCA settings (so votes are cast in the
        graph's space).

    Writes ``refined/<name>``: labels of shape ``fine.grid_shape`` (attrs: the fine grid
    and how many chips were embedded).
    """
    from ..chips.refine import boundary_chips, neighbour_votes, refined_chip_labels

    params = {"fine": fine.to_dict(), "k": k, "n_pcs": n_pcs, "seed": seed, "partitions": partitions}
    fp = fingerprint("refine", params, upstream)
    if all(study.is_current(f"refined/{name}", fp) for name in partitions):
        return fp
    painted, on_boundary = {}, {}
    for name in partitions:
        labels = study.read_array(f"partitions/{name}").reshape(grid.grid_shape)
        painted[name] = grid.chip_labels_to_pixels(labels)
        on_boundary[name] = boundary_chips(painted[name], fine)
    features, rows = {}, {}
    for modality in sorted({m for weights in partitions.values() for m in weights}):
        needed = np.logical_or.reduce([on_boundary[n] for n, w in partitions.items() if modality in w])
        rows[modality] = np.cumsum(needed) - 1  # row of each needed fine chip in the new embeddings
        attrs = study.attrs_of(f"embeddings/{modality}")
        mod = study.modality(modality)
        intensity = tuple(attrs["intensity_scale"] or (0.0, 1.0))
        _fit_encoder(mod, chips[modality], encoders[modality], intensity=intensity, seed=seed)
        to_embed = ModalityChips(origins=fine_chips[modality].origins[needed], size=fine_chips[modality].size)
        new, _ = encode_chips(mod, to_embed, encoders[modality], intensity=intensity, progress=progress,
                              desc=f"refining {modality} boundaries")
        reducer = graphs.FeatureReducer(n_pcs=n_pcs, seed=seed, standardise=attrs.get("standardise", True))
        features[modality] = (reducer.fit_transform(study.read_array(f"embeddings/{modality}")),
                              reducer.transform(new))
    for name, weights in partitions.items():
        labels = study.read_array(f"partitions/{name}")
        boundary = on_boundary[name]
        votes = sum(weight * neighbour_votes(features[m][0], labels, features[m][1][rows[m][boundary]], k=k)
                    for m, weight in weights.items()) / sum(weights.values())
        refined = refined_chip_labels(painted[name], fine, boundary, votes)
        study.write_array(f"refined/{name}", refined, fingerprint=fp, fine=fine.to_dict(),
                          boundary_chips=int(boundary.sum()))
    return fp
