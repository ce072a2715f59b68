"""``segment()``: the whole image pipeline in one call.

read & validate -> chip grid -> encoder -> Study stages -> Segmentation -> files.
Everything that can be wrong with the input or the options is checked before
anything is written, so a bad run leaves no partial output.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from . import stages
from ..chips.grid import ChipGrid
from ..config import ChipConfig, EncoderConfig, SegmentConfig, load_config, with_overrides
from ..analysis.descriptors import community_crystallinity, community_table
from ..encoders import get_encoder, resolve_auto
from ..encoders.registry import encoder_options as accepted_options
from ..encoders.base import Encoder
from ..errors import OutputError, ParameterError
from ..modalities import read_image
from ..modalities.base import Axis, ModalityData
from ..provenance import array_digest, file_identity, run_record
from ..chips.refine import fine_grid
from ..result import Segmentation
from ..chips.shared import ModalityChips
from .study import Study

#: ``chip_size="auto"`` aims at this many chips across the shorter image side.
AUTO_CHIPS_ACROSS = 16
AUTO_MIN_CHIP = 32
#: Smallest image chip: below this there is no texture to embed.
MIN_IMAGE_CHIP = 4


def _length_in_pixels(value: int | str, axis: Axis, what: str) -> int:
    """A length given in pixels (int) or with units (``"2 nm"``) as whole pixels."""
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    import pint

    ureg = pint.UnitRegistry()
    try:
        quantity = ureg.Quantity(text)
        pixels = quantity.to(axis.units).magnitude / axis.scale
    except Exception as exc:  # pint raises several error types
        raise ParameterError(
            f"{what} {text!r} cannot be converted to pixels of this image "
            f"(pixel size {axis.scale:g} {axis.units}): {exc}",
            fix=f"give {what} in pixels (an integer) or in units convertible to {axis.units!r}",
            where=what,
        ) from None
    if pixels < 1:
        raise ParameterError(f"{what} {text!r} is below one pixel ({axis.scale:g} {axis.units})",
                             fix=f"use a {what} of at least one pixel", where=what)
    return int(round(pixels))


def chip_geometry(chips: ChipConfig, shape: tuple[int, int], axes: list[Axis]) -> tuple[int, int]:
    """Chip size and stride in pixels for an image of ``shape`` with calibrated ``axes``."""
    if chips.size == "auto":
        size = max(AUTO_MIN_CHIP, int(round(min(shape) / AUTO_CHIPS_ACROSS)))
        size = min(size, min(shape))
    else:
        size = _length_in_pixels(chips.size, axes[-1], "chip_size")
    if size < MIN_IMAGE_CHIP:
        raise ParameterError(
            f"chip size {size} px is too small to hold any image texture",
            fix=f"use a chip size of at least {MIN_IMAGE_CHIP} px (16-128 px is typical)",
            where="chip_size",
        )
    stride = max(1, size // 2) if chips.stride is None else _length_in_pixels(chips.stride, axes[-1], "stride")
    return size, stride


def make_encoder(cfg: EncoderConfig) -> tuple[Encoder, str]:
    """Build the configured encoder; returns it and a sentence saying why it was chosen."""
    name, options, reason = cfg.name, dict(cfg.options), f"encoder {cfg.name!r} requested"
    if name == "auto":
        name, auto_options, reason = resolve_auto(weights=cfg.weights)
        options = {**auto_options, **options}
    accepted = accepted_options(name)
    common = {"weights": cfg.weights, "allow_download": cfg.allow_download,
              "batch_size": cfg.batch_size, "device": cfg.device}
    for key, value in common.items():
        if key in accepted and key not in options and value is not None:
            options[key] = value
    if cfg.weights is not None and "weights" not in accepted:
        raise ParameterError(f"encoder {name!r} takes no weights",
                             fix="drop the weights option or choose encoder='resnet50'", where="weights")
    return get_encoder(name, **options), reason


def check_output(out: str | Path | None) -> Path | None:
    """Fail early, before any work, if ``out`` cannot be created or written."""
    if out is None:
        return None
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError("the output path exists and is not a folder",
                          fix="give a folder path for --out", where=out)
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write into {existing}",
                          fix="choose an output folder you have write permission for", where=out)
    return out


def _source_id(source: Any, modality: ModalityData, signal: int | str | None) -> dict:
    if isinstance(source, (str, Path)):
        return {"file": file_identity(Path(source)), "signal": signal}
    if isinstance(source, np.ndarray):
        return {"array": array_digest(source)}
    return {"dask": modality.data.name}


def segment(
    source: str | Path | np.ndarray | da.Array | dict[str, Any],
    *,
    chip_size: int | str | None = None,
    stride: int | str | None = None,
    refine: int | None = None,
    encoder: str | None = None,
    encoder_options: dict[str, Any] | None = None,
    weights: str | Path | None = None,
    k: int | None = None,
    resolution: float | None = None,
    method: str | None = None,
    merge: float | None = None,
    consensus: int | None = None,
    seed: int | None = None,
    out: str | Path | None = None,
    config: SegmentConfig | dict | str | Path | None = None,
    allow_download: bool | None = None,
    n_pcs: int | None = None,
    device: str | None = None,
    batch_size: int | None = None,
    signal: int | str | None = None,
    pixel_size: float | None = None,
    units: str = "px",
    fusion: str | None = None,
    progress: bool = True,
) -> Segmentation:
    """Segment an image into communities of similar chips, with no labels.

    Parameters
    ----------
    source
        Image file (dm3, dm4, emd, mrc, tif, hspy, zspy, png, jpg ...) or a 2-D array;
        or several modalities of one specimen as ``{name: file or array}``, e.g.
        ``{"haadf": "image.dm4", "eels": "si.dm4", "diffraction": "scan.mib"}`` (the
        kind is guessed from the name; ``"name:kind"`` states it; a value may be a
        ``ModalityData`` or ``(source, {reader options})``).  Then chip sizes are in
        pixels of the coarsest scan, and ``config.fusion`` says how modalities combine.
    chip_size, stride
        Chip edge and step, in pixels (int) or calibrated units (``"2 nm"``).
        Defaults: ``"auto"`` (about 16 chips across the shorter side, >= 32 px)
        and half the chip size.
    refine
        Boundary refinement factor (default 1, off): with ``refine=4`` chips on
        community boundaries are embedded again every quarter stride and boundaries
        move to the community their nearest chips vote for
        (:mod:`multimodal_seg.chips.refine`).  Sharper regions, at the cost of those chips.
    encoder
        ``"auto"`` (default: MicroNet ResNet50 if its weights are at hand, else
        ``"fourier"``), ``"fourier"``, ``"resnet50"`` or a plugin's name.
    encoder_options
        Options for the encoder, e.g. ``{"layer": "layer3", "resize": None}`` for ResNet50.
    weights
        For ResNet50: ``"micronet"`` (v1.1), ``"micronet-v1.0"``,
        ``"imagenet-micronet"``, ``"imagenet"``, ``"random"`` or a local file.
    k
        Neighbours per chip in the similarity graph (default 15).
    resolution
        Modularity resolution (default 1.0): higher gives more communities.
    method
        ``"leiden"`` (default) or ``"louvain"`` (the paper's choice).
    merge
        Optional, in (0, 1]: merge communities whose connectivity exceeds it (0.5 is
        a good start), against noise splitting one homogeneous region; default off.
    consensus
        If > 1, communities are the most representative of this many Leiden/Louvain
        runs (:func:`multimodal_seg.graphs.communities.consensus_labels`): steadier across
        seeds, at this many runs' cost; default 30 (0 or 1: a single run).
    seed
        Random seed (default 0); the same input, config and seed give the same labels.
    out
        Folder for the study store, figures, CSV, labels and provenance; ``None``
        keeps everything in memory.
    config
        A :class:`SegmentConfig`, dict or YAML path; keywords given here override it.
    allow_download
        Let the encoder download missing weights (off by default).
    signal
        Which image of a multi-signal file (index or title substring).
    pixel_size, units
        Calibration for array input (or to override a file's).
    fusion
        Several modalities: ``"multiplex"`` (default) or ``"concat"``.

    Returns
    -------
    Segmentation
    """
    cfg = with_overrides(load_config(config), chip_size=chip_size, stride=stride, refine=refine,
                         encoder=encoder,
                         encoder_options=encoder_options, weights=weights, k=k,
                         resolution=resolution, method=method, merge=merge, consensus=consensus,
                         seed=seed, allow_download=allow_download, n_pcs=n_pcs, device=device,
                         batch_size=batch_size, fusion=fusion)
    out_dir = check_output(out)
    if isinstance(source, dict):
        from .multimodal import segment_modalities

        return segment_modalities(source, cfg, out=out_dir, progress=progress)
    modality = read_image(source, name="image", signal=signal, pixel_size=pixel_size, units=units)
    shape = tuple(int(s) for s in modality.data.shape)
    grid = ChipGrid(shape, *chip_geometry(cfg.chips, shape, modality.axes))
    enc, reason = make_encoder(cfg.encoder)

    study = Study.open(out_dir / "study.zarr" if out_dir else None)
    fp = stages.add_modality(study, modality, source_id=_source_id(source, modality, signal))
    chips = ModalityChips(origins=grid.origins, size=grid.size)
    fp = stages.make_chips(study, grid, {"image": chips}, upstream=fp)
    fp = stages.embed_chips(study, chips, enc, modality="image", upstream=fp, seed=cfg.seed,
                            progress=progress)
    fp = stages.build_graph(study, modality="image", k=cfg.graph.k, n_pcs=cfg.graph.n_pcs,
                            seed=cfg.seed, upstream=fp)
    com = cfg.communities
    fp = stages.find_communities(study, graph="image", method=com.method, resolution=com.resolution,
                                 seed=cfg.seed, n_iterations=com.n_iterations, upstream=fp,
                                 merge=com.merge, n_restarts=com.n_restarts, consensus=com.consensus)
    fine = fine_grid(grid, cfg.chips.refine)
    if fine is not None:
        stages.refine_boundaries(
            study, grid=grid, fine=fine, chips={"image": chips},
            fine_chips={"image": ModalityChips(origins=fine.origins, size=fine.size)},
            encoders={"image": enc}, partitions={com.method: {"image": 1.0}}, k=cfg.graph.k,
            n_pcs=cfg.graph.n_pcs, seed=cfg.seed, upstream=fp, progress=progress)
    return collect(study, grid, config=cfg, encoder=enc, reason=reason, out=out_dir, fine=fine)


def collect(study: Study, grid: ChipGrid, *, config: SegmentConfig, encoder: Encoder, reason: str,
            out: Path | None, fine: ChipGrid | None = None) -> Segmentation:
    """Assemble the Segmentation from the study, record provenance, write files.

    With ``fine`` (boundary refinement), pixels are painted from ``refined/<method>``.
    """
    key = f"partitions/{config.communities.method}"
    chip_labels = study.read_array(key).reshape(grid.grid_shape)
    if fine is None:
        pixel_labels = grid.chip_labels_to_pixels(chip_labels).astype(np.int32)
    else:
        refined = f"refined/{config.communities.method}"
        pixel_labels = fine.chip_labels_to_pixels(study.read_array(refined)).astype(np.int32)
    modality = study.modality("image")
    part_attrs = study.attrs_of(key)
    provenance = run_record(config.model_dump(), extra={
        "seed": config.seed,
        "source": modality.source,
        "encoder": encoder.fingerprint(),
        "encoder_choice": reason,
        "grid": grid.to_dict(),
        "n_chips": grid.n_chips,
        "refined": None if fine is None else {
            "fine_grid": fine.to_dict(),
            "boundary_chips": study.attrs_of(f"refined/{config.communities.method}")["boundary_chips"]},
        "n_communities": part_attrs["n_communities"],
        "modularity": part_attrs["modularity"],
        "study": str(study.path) if study.path else None,
    })
    study.record(**provenance)
    seg = Segmentation(
        chip_labels=chip_labels,
        pixel_labels=pixel_labels,
        embeddings=study.read_array("embeddings/image"),
        graph=study.read_sparse("graphs/image"),
        communities=community_table(
            chip_labels, pixel_labels, study.read_array("chips/stats/image"),
            community_crystallinity(modality.data, grid, chip_labels, seed=config.seed)),
        grid=grid,
        image=modality.data,
        axes=modality.axes,
        modularity=float(part_attrs["modularity"]),
        provenance=provenance,
    )
    if out is not None:
        seg.save(out)
    return seg
