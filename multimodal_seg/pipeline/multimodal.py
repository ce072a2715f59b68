"""Segmenting one specimen from several modalities at once.

``segment({"haadf": "image.dm4", "eels": "si.dm4", "diffraction": "scan.mib"})``:
each modality is read by its adapter, all are chipped on one grid in calibrated
scan coordinates (:mod:`multimodal_seg.chips.shared`), each is embedded by its own
encoder, and the embeddings are fused (:mod:`multimodal_seg.graphs.fusion`) into one
partition.  Every modality is also partitioned alone, and the agreement between
all partitions is reported (:mod:`multimodal_seg.analysis.consistency`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from . import stages
from ..chips.grid import ChipGrid
from ..config import SegmentConfig
from ..analysis.consistency import consistency_matrices, disagreement
from ..analysis.descriptors import community_crystallinity, community_mean_signals, community_table
from ..encoders import get_encoder
from ..encoders.base import Encoder
from ..errors import InputError, ParameterError
from ..modalities.base import Axis, ModalityData, check_real_values
from ..modalities.registry import get_reader
from ..provenance import array_digest, file_identity, run_record
from ..chips.refine import fine_grid
from ..result import Segmentation
from ..analysis.spectral_lines import feature_intensities
from ..chips.shared import SharedGrid, scan_frame, shared_grid, to_units
from .study import Study

#: Modality kind guessed from a modality's name (``name:kind`` overrides).
KIND_BY_NAME = {
    **dict.fromkeys(("image", "haadf", "adf", "bf", "abf", "df", "sem", "bse", "se", "stem"), "image"),
    **dict.fromkeys(("spectrum", "eels", "eds", "edx", "xeds", "si", "cl"), "spectrum"),
    **dict.fromkeys(("diffraction", "4dstem", "4d-stem", "4d", "nbd", "dp", "ebsd"), "diffraction"),
}
#: Encoder per modality kind when the config names none.
DEFAULT_ENCODERS = {"spectrum": "spectrum-pca", "diffraction": "diffraction-profiles"}
#: ``chip_size="auto"`` for several modalities: chips across the reference scan's shorter side.
AUTO_CHIPS_ACROSS = 16
AUTO_MIN_CHIP = 4
#: Without an image: about this many chips across (so 1-position chips up to 96 positions).
AUTO_SPECTRAL_ACROSS = 64
#: Without an image: fewest counts a chip should hold.  A trade-off measured on real EDS:
#: the Phenom Al/Cu map (128 counts per position) keeps its boundary with 2-position chips
#: (many-to-one 0.92; 0.86 with 3), the sparse JEOL FeS map (19 per position after 4x4
#: binning) needs 11-position chips for 8 communities instead of 18 with 6.
AUTO_MIN_CHIP_COUNTS = 500
#: Image chips smaller than this (pixels) hold too little texture for an image encoder.
MIN_TEXTURE_CHIP = 16


def modality_kind(name: str) -> tuple[str, str]:
    """Split ``"name:kind"`` or guess the kind from the name; returns ``(name, kind)``."""
    if ":" in name:
        name, kind = name.split(":", 1)
        return name, kind
    kind = KIND_BY_NAME.get(name.lower())
    if kind is None:
        raise ParameterError(
            f"cannot tell what kind of data modality {name!r} is",
            fix=f"name it after its kind ({', '.join(sorted(KIND_BY_NAME))}) or write "
                f"'{name}:image', '{name}:spectrum' or '{name}:diffraction'",
            where=name,
        )
    return name, kind


#: Array dimensions of each modality kind (scan axes first).
NDIM_BY_KIND = {"image": 2, "spectrum": 3, "diffraction": 4}


def check_modality(label: str, kind: str, modality: ModalityData) -> ModalityData:
    """Check an already-read modality the way the readers check files.

    The readers reject complex and non-numeric files themselves; a
    :class:`ModalityData` built by hand skips them, so its kind, dimensions, axes
    and value type are checked here.

    Raises
    ------
    InputError
        Wrong kind or number of dimensions, axes that do not match the data, or
        values that are not real numbers (complex, text, records, booleans).
    """
    where = f"{label} ({modality.source})"
    data = modality.data
    if modality.kind != kind:
        raise InputError(f"is {modality.kind} data, but {label!r} names {'an' if kind[0] in 'aeiou' else 'a'} {kind} modality",
                         fix=f"name it '{label.split(':')[0]}:{modality.kind}' or pass the {kind} data",
                         where=where)
    if data.ndim != NDIM_BY_KIND.get(kind, data.ndim):
        raise InputError(f"has {data.ndim} dimensions {tuple(data.shape)}; a {kind} modality has "
                         f"{NDIM_BY_KIND[kind]} (scan axes first)",
                         fix="reshape it to the layout in multimodal_seg.modalities.base", where=where)
    if len(modality.axes) != data.ndim:
        raise InputError(f"has {len(modality.axes)} axes for {data.ndim}-dimensional data",
                         fix="give one Axis per array dimension", where=where)
    check_real_values(data.dtype, where, allow_bool=False)
    return modality


def read_modalities(sources: dict[str, Any]) -> dict[str, ModalityData]:
    """Read every modality with its kind's adapter (already-read ModalityData pass through)."""
    if not sources:
        raise ParameterError("no modalities given", fix="give at least one modality", where="source")
    out: dict[str, ModalityData] = {}
    for label, source in sources.items():
        name, kind = modality_kind(label)
        if isinstance(source, ModalityData):
            out[name] = check_modality(label, kind, source)
            continue
        options: dict[str, Any] = {}
        if isinstance(source, tuple):  # (source, {reader options})
            source, options = source
        out[name] = get_reader(kind)(source, name=name, **options)
        if out[name].kind != kind:
            raise InputError(f"read as {out[name].kind}, expected {kind}",
                             fix=f"check the file given for {label!r}", where=str(source))
    return out


def _source_id(source: Any, modality: ModalityData) -> dict:
    if isinstance(source, tuple):
        source = source[0]
    if isinstance(source, (str, Path)):
        return {"file": file_identity(Path(source))}
    if isinstance(source, np.ndarray):
        return {"array": array_digest(source)}
    return {"dask": modality.data.name, "source": modality.source}


def _encoder_options(cfg: SegmentConfig, modalities: dict[str, ModalityData]) -> dict[str, dict]:
    """Each modality's encoder options, from ``encoder_options`` (``cfg.encoder.options``).

    An entry keyed by a modality's name, a mapping, holds that modality's encoder
    options (``encoder_options={"eels": {"normalise": "edges"}}``); the other
    entries are options of the image encoder (``encoder``), as for a single image.

    Raises
    ------
    ParameterError
        A modality's entry is not a mapping, or image-encoder options are given
        but no modality uses the image encoder (they would be ignored).
    """
    options = cfg.encoder.options
    shared = {k: v for k, v in options.items() if k not in modalities}
    uses_shared = [n for n, m in modalities.items() if m.kind == "image" and n not in cfg.modality_encoders]
    if shared and not uses_shared:
        raise ParameterError(
            f"encoder_options {sorted(shared)} are options of the image encoder, but no modality "
            "here uses it, so they would be ignored",
            fix=f"key them by modality, e.g. encoder_options={{{next(iter(modalities))!r}: {shared!r}}}",
            where="encoder_options")
    out = {}
    for name in modalities:
        own = options.get(name, {})
        if not isinstance(own, dict):
            raise ParameterError(
                f"encoder_options[{name!r}] must be a mapping of options for {name!r}'s encoder, "
                f"not {own!r}", fix=f"write encoder_options={{{name!r}: {{'option': value}}}}",
                where="encoder_options")
        out[name] = {**shared, **own} if name in uses_shared else dict(own)
    return out


def _encoder_for(name: str, modality: ModalityData, cfg: SegmentConfig,
                 options: dict[str, Any]) -> tuple[Encoder, str]:
    """The encoder of one modality, given its calibrated signal axes (Encoder.set_signal_axes)."""
    if modality.kind == "image" and name not in cfg.modality_encoders:
        from .segment import make_encoder

        encoder, reason = make_encoder(cfg.encoder.model_copy(update={"options": options}))
    else:
        encoder_name = cfg.modality_encoders.get(name, DEFAULT_ENCODERS.get(modality.kind))
        if encoder_name is None:
            raise ParameterError(f"no encoder known for {modality.kind} modality {name!r}",
                                 fix=f"set modality_encoders: {{{name}: <encoder>}}", where=name)
        encoder = get_encoder(encoder_name, **options)
        if encoder.kind != modality.kind:
            raise ParameterError(
                f"encoder {encoder_name!r} embeds {encoder.kind} data, but {name!r} is a {modality.kind}",
                fix=f"choose a {modality.kind} encoder for {name!r}", where="modality_encoders")
        reason = f"{encoder_name} for {name}"
    encoder.set_signal_axes(modality.axes[2:])
    return encoder, reason


def _chip_size(cfg: SegmentConfig, modalities: dict[str, ModalityData]) -> tuple[int, int]:
    from .segment import _length_in_pixels

    units = next(iter(modalities.values())).axes[0].units
    frames = {n: scan_frame(m, units) for n, m in modalities.items()}
    ref = max(frames, key=lambda n: frames[n].step[0] * frames[n].step[1])
    ref_axis = modalities[ref].axes[1]
    if cfg.chips.size == "auto" and not any(m.kind == "image" for m in modalities.values()):
        # Spectra and patterns carry their information per scan position: small chips keep
        # boundaries sharp, as long as each chip holds enough counts to rise above
        # Poisson noise (sparse EDS needs several positions per chip).
        size = max(1, int(round(min(frames[ref].shape) / AUTO_SPECTRAL_ACROSS)))
        per_position = min(_counts_per_position(m) for m in modalities.values())
        size = max(size, int(np.ceil(np.sqrt(AUTO_MIN_CHIP_COUNTS / max(per_position, 1e-9)))))
        size = min(size, max(1, min(frames[ref].shape) // 4))
    elif cfg.chips.size == "auto":
        size = max(AUTO_MIN_CHIP, int(round(min(frames[ref].shape) / AUTO_CHIPS_ACROSS)))
    else:
        size = _length_in_pixels(cfg.chips.size, ref_axis, "chip_size")
    stride = (max(1, size // 2) if cfg.chips.stride is None
              else _length_in_pixels(cfg.chips.stride, ref_axis, "stride"))
    return size, stride


def _counts_per_position(modality: ModalityData, sample: int = 4096) -> float:
    """Mean total counts per scan position, from a regular subsample of positions."""
    rows, cols = modality.data.shape[:2]
    step = max(1, int(np.sqrt(rows * cols / sample)))
    block = np.asarray(modality.data[::step, ::step])
    return float(block.reshape(block.shape[0] * block.shape[1], -1).sum(axis=1).mean())


def _display(modalities: dict[str, ModalityData], grid: SharedGrid) -> tuple[str, Any, list[Axis]]:
    """The picture to paint on: the finest image modality, else the reference's total counts."""
    images = [n for n, m in modalities.items() if m.kind == "image"]
    name = min(images, key=lambda n: modalities[n].axes[0].scale) if images else grid.reference
    mod = modalities[name]
    frame = scan_frame(mod, grid.units)
    y0, y1, x0, x1 = grid.region
    r0, r1 = (int(round((v - frame.origin[0]) / frame.step[0])) for v in (y0, y1))
    c0, c1 = (int(round((v - frame.origin[1]) / frame.step[1])) for v in (x0, x1))
    data = mod.data[r0:r1, c0:c1]
    if mod.kind != "image":
        data = data.sum(axis=tuple(range(2, data.ndim)))
    axes = [Axis(a.name, n, a.scale, a.offset + start * a.scale, a.units)
            for a, n, start in zip(mod.axes[:2], data.shape, (r0, c0))]
    return name, data, axes


def _labels_on(display_axes: list[Axis], grid: SharedGrid, ref_labels: np.ndarray,
               ref_axes: list[Axis]) -> np.ndarray:
    """Reference-grid labels resampled (nearest) onto the display pixels."""
    index = []
    for d_axis, r_axis, start, n in zip(display_axes, ref_axes, grid.offset, ref_labels.shape):
        centres = np.array([to_units(d_axis.offset + (i + 0.5) * d_axis.scale, d_axis.units, grid.units)
                            for i in (0, d_axis.size - 1)])
        positions = np.linspace(centres[0], centres[1], d_axis.size)
        r_off = to_units(r_axis.offset, r_axis.units, grid.units)
        r_step = to_units(r_axis.scale, r_axis.units, grid.units)
        index.append(np.clip(np.floor((positions - r_off) / r_step).astype(int) - start, 0, n - 1))
    return ref_labels[np.ix_(*index)]


def _scan_labels(study: Study, cfg: SegmentConfig, modalities: dict[str, ModalityData], grid: SharedGrid,
                 encoders: dict[str, tuple[Encoder, str]], weights: dict[str, float],
                 partition_fps: dict[str, str], *, progress: bool) -> tuple[dict[str, np.ndarray], ChipGrid | None]:
    """The joint and each modality's partition painted on the reference scan grid.

    With ``chips.refine > 1`` every partition's boundaries are refined
    (:func:`stages.refine_boundaries`): the joint one by the votes of all modalities,
    weighted as its layers, each modality's own by that modality alone, so that they
    stay comparable.  Returns the labels and the fine grid (``None`` without refinement).
    """
    names = list(modalities)
    partitions = {"joint": weights, **{n: {n: 1.0} for n in names}}
    target = fine_grid(grid.grid, cfg.chips.refine)
    if target is None:
        return {name: grid.grid.chip_labels_to_pixels(
            study.read_array(f"partitions/{name}").reshape(grid.grid.grid_shape)) for name in partitions}, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a partial overlap was already reported for the grid
        fine = shared_grid(modalities, chip_size=target.size, stride=target.stride)
    stages.refine_boundaries(
        study, grid=grid.grid, fine=fine.grid, chips=grid.per_modality, fine_chips=fine.per_modality,
        encoders={n: encoder for n, (encoder, _) in encoders.items()}, partitions=partitions,
        k=cfg.graph.k, n_pcs=cfg.graph.n_pcs, seed=cfg.seed,
        upstream=stages.fingerprint(partition_fps), progress=progress)
    return {name: fine.grid.chip_labels_to_pixels(study.read_array(f"refined/{name}"))
            for name in partitions}, fine.grid


def _warn_small_image_chips(modalities: dict[str, ModalityData], grid: SharedGrid) -> None:
    """Warn when an image modality's chips are too small to hold texture.

    A survey image at the scan's own pixel size (common in SEM-EDS files) gives image
    chips of a few pixels; its partition is then mostly noise (measured on the P45
    Bruker file: 5 px chips, ARI 0.05 with the EDS partition).
    """
    for name, modality in modalities.items():
        size = grid.per_modality[name].size
        if modality.kind == "image" and size < MIN_TEXTURE_CHIP:
            warnings.warn(
                f"image modality {name!r} ({modality.source}) gets chips of {size} px, too few for "
                "texture: its partition will be mostly noise and it adds little to the joint one. "
                "Use an image with finer pixels than the scan, larger chips (chip_size), or leave "
                "it out.", UserWarning, stacklevel=3)


def segment_modalities(sources: dict[str, Any], cfg: SegmentConfig, *, out: Path | None,
                       progress: bool = True) -> Segmentation:
    """The multimodal pipeline behind ``segment({...})`` (validated config, checked ``out``)."""
    modalities = read_modalities(sources)
    size, stride = _chip_size(cfg, modalities)
    grid = shared_grid(modalities, chip_size=size, stride=stride)
    _warn_small_image_chips(modalities, grid)
    options = _encoder_options(cfg, modalities)
    encoders = {name: _encoder_for(name, mod, cfg, options[name]) for name, mod in modalities.items()}
    names = list(modalities)

    study = Study.open(out / "study.zarr" if out else None)
    ups = [stages.add_modality(study, mod, source_id=_source_id(sources_value, mod))
           for mod, sources_value in zip(modalities.values(), sources.values())]
    fp_chips = stages.make_chips(study, grid.grid, grid.per_modality, upstream=stages.fingerprint(*ups),
                                 shared=grid.to_dict())
    graph_fps, partition_fps, com = {}, {}, cfg.communities
    for name in names:
        fp = stages.embed_chips(study, grid.per_modality[name], encoders[name][0], modality=name,
                                upstream=fp_chips, seed=cfg.seed, progress=progress)
        graph_fps[name] = stages.build_graph(study, modality=name, k=cfg.graph.k, n_pcs=cfg.graph.n_pcs,
                                             seed=cfg.seed, upstream=fp)
        partition_fps[name] = stages.find_communities(
            study, graph=name, method=com.method, resolution=com.resolution, seed=cfg.seed,
            n_iterations=com.n_iterations, upstream=graph_fps[name], key_added=name, merge=com.merge,
            n_restarts=com.n_restarts, consensus=com.consensus)
    weights = {n: cfg.fusion.layer_weights.get(n, 1.0) for n in names}
    if cfg.fusion.method == "concat":
        fp = stages.build_joint_graph(study, modalities=names, k=cfg.graph.k, n_pcs=cfg.graph.n_pcs,
                                      seed=cfg.seed, layer_weights=weights,
                                      upstream=stages.fingerprint(graph_fps))
        partition_fps["joint"] = stages.find_communities(
            study, graph="joint", method=com.method, resolution=com.resolution, seed=cfg.seed,
            n_iterations=com.n_iterations, upstream=fp, key_added="joint", merge=com.merge,
            n_restarts=com.n_restarts, consensus=com.consensus)
        joint_graph = study.read_sparse("graphs/joint")
    else:
        partition_fps["joint"] = stages.find_multiplex_communities(
            study, graphs_=names, layer_weights=weights, resolution=com.resolution, seed=cfg.seed,
            n_iterations=com.n_iterations, upstream=stages.fingerprint(graph_fps))
        joint_graph = sum(weights[n] * study.read_sparse(f"graphs/{n}") for n in names).tocsr()
    partitions = {n: study.read_array(f"partitions/{n}") for n in names}
    joint = study.read_array("partitions/joint")
    matrices = consistency_matrices({**partitions, "joint": joint})
    consistency = {**matrices, "disagreement": disagreement(partitions, joint).tolist(),
                   "grid_shape": list(grid.grid.grid_shape)}
    study.record(consistency=matrices)

    chip_labels = joint.reshape(grid.grid.grid_shape)
    scan_labels, fine = _scan_labels(study, cfg, modalities, grid, encoders, weights, partition_fps,
                                     progress=progress)
    display_name, image, axes = _display(modalities, grid)
    ref = modalities[grid.reference]
    pixel_labels = _labels_on(axes, grid, scan_labels["joint"], ref.axes[:2]).astype(np.int32)
    signals = {n: community_mean_signals(study.modality(n).data, grid.per_modality[n], joint)
               for n, m in modalities.items() if m.kind != "image"}
    lines = {}
    for n, mean in signals.items():
        if modalities[n].kind == "spectrum":
            features, intensities = feature_intensities(mean, modalities[n].axes[2])
            if features:
                lines[n] = {"features": [f.label for f in features],
                            "energies": [f.energy for f in features],
                            "units": modalities[n].axes[2].units, "intensities": intensities.tolist()}
    display_chips = grid.per_modality[display_name]
    crystallinity = (community_crystallinity(modalities[display_name].data, display_chips, joint,
                                             seed=cfg.seed)
                     if modalities[display_name].kind == "image" else np.full(int(joint.max()) + 1, np.nan))
    part = study.attrs_of("partitions/joint")
    provenance = run_record(cfg.model_dump(), extra={
        "seed": cfg.seed,
        "sources": {n: m.source for n, m in modalities.items()},
        "encoders": {n: e.fingerprint() for n, (e, _) in encoders.items()},
        "encoder_choice": "; ".join(reason for _, reason in encoders.values()),
        "grid": grid.to_dict(),
        "n_chips": grid.grid.n_chips,
        "refined": None if fine is None else {
            "fine_grid": fine.to_dict(),
            "boundary_chips": {n: study.attrs_of(f"refined/{n}")["boundary_chips"] for n in scan_labels}},
        "n_communities": part["n_communities"],
        "modularity": part["modularity"],
        "fusion": cfg.fusion.method,
        "study": str(study.path) if study.path else None,
    })
    study.record(**provenance)
    seg = Segmentation(
        chip_labels=chip_labels,
        pixel_labels=pixel_labels,
        embeddings=study.read_array(f"embeddings/{names[0]}") if len(names) == 1 else
        np.hstack([study.read_array(f"embeddings/{n}") for n in names]),
        graph=joint_graph,
        communities=community_table(joint, pixel_labels, study.read_array(f"chips/stats/{display_name}"),
                                     crystallinity),
        grid=grid.grid,
        image=image,
        axes=axes,
        modularity=float(part["modularity"]),
        provenance=provenance,
        consistency=consistency,
        signals=signals,
        signal_axes={n: modalities[n].axes[2:] for n in signals},
        lines=lines,
        modality_labels={n: p.reshape(grid.grid.grid_shape) for n, p in partitions.items()},
        scan_labels=scan_labels,
    )
    if out is not None:
        seg.save(out)
    return seg

