"""``segment()``: plan -> run -> collect, for one modality or several.

The plan reads every modality and checks everything that can be checked before
work starts (the config, the files, the chip grid, every encoder's options against
its modality's calibration, the community and fusion options), so bad input never
leaves an output folder behind.  Then the stages of
:mod:`multimodal_seg.pipeline.stages` run over a :class:`Study`, in order, and
:func:`~multimodal_seg.pipeline.stages.collect` assembles the result.  A single
image is the case of one modality named ``"image"``.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from ..chips.shared import shared_grid
from ..chips.sizing import chip_geometry
from ..chips.texture import Lattice, image_lattice
from ..compute.schedulers import open_scheduler
from ..compute.stopping import stop_point
from ..config import FusionConfig, SegmentConfig, load_config, with_overrides
from ..encoders.base import Encoder
from ..encoders.choice import choose_encoders
from ..errors import MMSegError, OutputError, ParameterError
from ..graphs.communities import check_layer_weights, check_options
from ..modalities.base import ModalityData
from ..modalities.sources import read_modalities
from ..provenance import RunWarnings
from ..result import Segmentation
from . import stages
from .study import Study

#: Name of the modality when ``segment()`` is given one image rather than a mapping.
SINGLE_IMAGE = "image"
#: The steps ``provenance.json``'s ``seconds`` times, in the order they run.
STEPS = ("plan", "modalities", "chips", "embed", "graphs", "communities", "fusion", "refine", "place", "collect")


@dataclass
class Plan:
    """A checked run, before any work: what :func:`run` needs.

    Attributes
    ----------
    config
        The validated configuration.
    modalities
        Every modality, read (lazily) and checked, in order.
    encoders
        ``{name: (encoder, reason)}``, built and given their modality's axes.
    lattices
        The images' lattices, by name, where the chip size was chosen from them
        (``chip_size="auto"``); the run's study keeps them.
    """

    config: SegmentConfig
    modalities: dict[str, ModalityData]
    encoders: dict[str, tuple[Encoder, str]]
    lattices: dict[str, Lattice] = field(default_factory=dict)


def as_sources(source: Any, *, signal: int | str | None = None, pixel_size: float | None = None,
               units: str = "px") -> dict[str, Any]:
    """``segment()``'s input as ``{name: source}``: one image becomes ``{"image": ...}``.

    ``signal``, ``pixel_size`` and ``units`` are options of that one image's reader;
    with several modalities each modality's reader options go beside its source.

    Raises
    ------
    ParameterError
        ``signal``, ``pixel_size`` or ``units`` given with a mapping of modalities.
    """
    options = {key: value for key, value in (("signal", signal), ("pixel_size", pixel_size)) if value is not None}
    if units != "px":
        options["units"] = units
    if isinstance(source, dict):
        if options:
            raise ParameterError(
                f"{', '.join(sorted(options))} apply to one image; with several modalities each reader "
                "takes its own options",
                fix="give them beside the source, e.g. {'haadf': ('a.emd', {'signal': 'HAADF', "
                    "'pixel_size': 0.1, 'units': 'nm'}), 'eels': ('si.dm4', {'scan_step': 0.5, "
                    "'scan_units': 'nm'})}",
                where=", ".join(sorted(options)))
        return dict(source)
    return {SINGLE_IMAGE: (source, options) if options else source}


def plan(source: Any, config: SegmentConfig, *, signal: int | str | None = None,
         pixel_size: float | None = None, units: str = "px") -> Plan:
    """Read and check everything a run needs, writing nothing.

    Raises
    ------
    InputError, ParameterError
        Whatever the run would otherwise fail on later: unreadable files, modalities
        that share no region, chips that do not fit, bad encoder, community or fusion
        options.
    """
    modalities = read_modalities(as_sources(source, signal=signal, pixel_size=pixel_size, units=units))
    names = list(modalities)
    # checks only: the chips stage warns, once, when it lays the grid
    lattices = ({n: image_lattice(m.data) for n, m in modalities.items() if m.kind == "image"}
                if config.chips.size == "auto" else {})
    size, stride = chip_geometry(config.chips, modalities, lattices=lattices)
    grid = shared_grid(modalities, chip_size=size, stride=stride, warn=False)
    com = config.communities
    joint_layers = len(names) if config.fusion.method == "multiplex" else 1
    check_options(method=com.method, resolution=com.resolution, n_restarts=com.n_restarts,
                  consensus=com.consensus, merge=com.merge, n_layers=joint_layers, decide=com.decide, alpha=com.alpha)
    check_layer_weights(names, config.fusion.layer_weights)
    warn_unused_fusion(config.fusion, names)
    encoders = choose_encoders(config.encoder, modalities, config.modality_encoders)
    return Plan(config=config, modalities=modalities, encoders=encoders, lattices=lattices)


def warn_unused_fusion(fusion: FusionConfig, names: list[str]) -> None:
    """Say that fusion settings changed from their defaults do nothing in a run of one modality.

    A warning, not an error: one batch config serves specimens with one modality and with
    several (the encoder and device settings are said the same way, docs/scale.md).
    """
    if len(names) > 1:
        return
    changed = {key: value for key, value in fusion.model_dump().items()
               if value != FusionConfig.model_fields[key].get_default(call_default_factory=True)}
    if changed:
        warnings.warn(
            "fusion " + ", ".join(f"{key}={value!r}" for key, value in changed.items())
            + f" is for several modalities, and this run has one ({names[0]}): not used. Give a second "
              "modality (e.g. an image and a spectrum image of the same region) for fusion to act",
            UserWarning, stacklevel=3)


@contextmanager
def timed(seconds: dict[str, float], name: str) -> Iterator[None]:
    """Add the wall time (s) of the block to ``seconds[name]``.  The block is a step of the
    run: it begins with a stop point (a batch interrupted by Ctrl-C stops its runs there)."""
    stop_point()
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start


def run(plan: Plan, study: Study, *, progress: bool = True) -> dict[str, float]:
    """Run every stage of a checked plan over ``study`` (finished stages are skipped).

    Returns
    -------
    The wall time (s) of each stage, by the name it records its parameters under (a stage
    found current counts the time it took to find so).
    """
    cfg = plan.config
    seconds: dict[str, float] = {}
    encoders = {n: e for n, (e, _) in plan.encoders.items()}
    with timed(seconds, "modalities"):
        stages.add_modalities(study, plan.modalities, lattices=plan.lattices)
    with timed(seconds, "chips"):
        stages.lay_chips(study, chip_size=cfg.chips.size, stride=cfg.chips.stride)
    encoder = cfg.encoder
    with timed(seconds, "embed"):
        stages.embed(study, encoder=encoder.name, weights=encoder.weights, encoder_options=encoder.options,
                     modality_encoders=cfg.modality_encoders, batch_size=encoder.batch_size, device=encoder.device,
                     allow_download=encoder.allow_download, encoders=plan.encoders, seed=cfg.seed,
                     progress=progress)
    with timed(seconds, "graphs"):
        stages.build_graphs(study, k=cfg.graph.k, n_pcs=cfg.graph.n_pcs, seed=cfg.seed)
    com = cfg.communities
    with timed(seconds, "communities"):
        stages.find_communities(study, method=com.method, resolution=com.resolution,
                                n_iterations=com.n_iterations, n_restarts=com.n_restarts, consensus=com.consensus,
                                merge=com.merge, decide=com.decide, alpha=com.alpha, seed=cfg.seed)
    with timed(seconds, "fusion"):
        stages.fuse(study, method=cfg.fusion.method, layer_weights=cfg.fusion.layer_weights,
                    skip_structureless=cfg.fusion.skip_structureless)
    with timed(seconds, "refine"):
        stages.refine(study, factor=cfg.chips.refine, encoders=encoders, progress=progress)
    with timed(seconds, "place"):
        stages.place_positions(study, enabled=cfg.chips.place_positions, encoders=encoders, progress=progress)
    return seconds


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


def check_same_specimen(out: Path | None, modalities: dict[str, ModalityData]) -> None:
    """Refuse to write over the results of another specimen: ``out`` holds a finished run
    (``provenance.json``) whose files and this run's have none in common.

    Runs of one specimen (another config, a modality added or left out) share a file and
    may use one folder: the study computes again only what changed.  In-memory data has no
    file to compare, so a run of arrays is never refused.
    """
    import json

    record = out / "provenance.json" if out is not None else None
    if record is None or not record.is_file():
        return
    try:
        before = json.loads(record.read_text()).get("sources") or {}
    except (OSError, ValueError):
        return  # an unreadable record protects nothing; the run writes a new one
    old = {Path(p) for p in before.values() if isinstance(p, str) and not p.startswith("<")}
    new = {Path(m.source).resolve() for m in modalities.values() if m.source and not m.source.startswith("<")}
    if not old or not new:
        return

    def same(a: Path, b: Path) -> bool:  # runs before this one recorded paths as given
        return a == b if a.is_absolute() else a.name == b.name

    if not any(same(a, b) for a in old for b in new):
        raise OutputError(
            f"holds the results of another specimen ({', '.join(sorted(map(str, old)))}); this run reads "
            f"{', '.join(sorted(map(str, new)))} and would write over them",
            fix="give this specimen its own output folder (--out), or delete the folder first", where=out)


def segment(
    source: str | Path | np.ndarray | da.Array | dict[str, Any],
    *,
    chip_size: int | str | None = None,
    stride: int | str | None = None,
    refine: int | str | None = None,
    place_positions: bool | None = None,
    encoder: str | None = None,
    encoder_options: dict[str, Any] | None = None,
    weights: str | Path | None = None,
    k: int | None = None,
    resolution: float | None = None,
    method: str | None = None,
    merge: float | None = None,
    consensus: int | None = None,
    decide: str | None = None,
    alpha: float | None = None,
    seed: int | None = None,
    out: str | Path | None = None,
    config: SegmentConfig | dict | str | Path | None = None,
    allow_download: bool | None = None,
    n_pcs: int | None = None,
    device: str | None = None,
    batch_size: int | str | None = None,
    signal: int | str | None = None,
    pixel_size: float | None = None,
    units: str = "px",
    fusion: str | None = None,
    progress: bool = True,
) -> Segmentation:
    """Segment a specimen into communities of similar chips, with no labels.

    Parameters
    ----------
    source
        One image: a file (dm3, dm4, emd, mrc, tif, hspy, zspy, png, jpg ...) or a 2-D
        array.  Or several modalities of one specimen as ``{name: source}``, e.g.
        ``{"haadf": "image.dm4", "eels": "si.dm4", "diffraction": "scan.mib"}`` (the
        kind is guessed from the name; ``"name:kind"`` states it; a source may be a
        ``ModalityData`` or ``(source, {reader options})``).  One image is the case
        ``{"image": source}``: the same pipeline, the same labels.
    chip_size, stride
        Chip edge and step, in pixels of the reference (coarsest) scan (int) or
        calibrated units (``"2 nm"``).  Defaults: ``"auto"``
        (:mod:`multimodal_seg.chips.sizing`: about 16 chips across and >= 32 px for
        images) and half the chip size.
    refine
        Boundary refinement factor: chips on community boundaries are embedded again
        every ``stride // refine`` pixels and boundaries move to the community their
        nearest chips vote for (:mod:`multimodal_seg.chips.refine`).  Sharper regions, at
        the cost of those chips.  Default ``"auto"``: 2 where the stride is at least
        2 px and every encoder is lightweight (no neural network); 1 turns it off, 4 places
        boundaries to a quarter stride.
    place_positions
        Default on: where a modality is measured position by position on the grid's own
        scan (a spectrum image, a 4D-STEM scan), each position near a boundary weighs its
        own spectrum or pattern against the painted map and takes the community the two
        make most probable (:mod:`multimodal_seg.chips.placement`; the map's error rate is
        estimated from the data).  Boundaries move by at most the painted grid's stride.
        ``False`` paints the chips' labels as they are.
    encoder
        Image encoder: ``"auto"`` (default: MicroNet ResNet50 if its weights are at
        hand, else ``"fourier"``), ``"fourier"``, ``"resnet50"`` or a plugin's name.
    encoder_options
        Options for the image encoder, e.g. ``{"layer": "layer3", "resize": None}`` for
        ResNet50; keyed by a modality name, that modality's encoder options
        (``{"eels": {"normalise": "edges"}}``).
    weights
        For ResNet50: ``"micronet"`` (v1.1), ``"micronet-v1.0"``,
        ``"imagenet-micronet"``, ``"imagenet"``, ``"random"`` or a local file.
    k
        Neighbours per chip in the similarity graph (default 15).
    resolution
        Modularity resolution (default 1.0): higher gives more communities.
    method
        ``"leiden"`` (default) or ``"louvain"`` (the paper's choice; one graph only, so
        not with ``fusion="multiplex"``).
    merge
        Optional, in (0, 1]: merge communities whose connectivity exceeds it (0.5 is
        a good start), against noise splitting one homogeneous region; default off.
        Applies to every partition, the joint one included.
    consensus
        If > 1, each partition is the most representative of this many Leiden runs
        (:func:`multimodal_seg.graphs.communities.medoid_labels`; the runs stop early
        once most of them are shown to agree, 9 of 30 at the least, and go on to four
        times as many where they split on the number of communities), each run merged
        and decided first: steadier across seeds; default 30 (0 or 1: a single run).
        Applies to every partition, the joint one included; the runs made are recorded
        (``runs``).
    decide, alpha
        How many communities: ``"dip"`` (default) merges neighbouring communities whose
        chips form one population in embedding space (Hartigan's dip test at level
        ``alpha``, default 0.01; :mod:`multimodal_seg.graphs.decide`): noise splits of a
        homogeneous region and splits along slow gradients dissolve, while two materials
        stay apart.  ``"none"`` keeps Leiden's communities.  Applies to every partition;
        the merges are recorded in provenance.
    seed
        Random seed (default 0); the same input, config and seed give the same labels.
    out
        Folder for the study store, figures, CSV, labels and provenance; ``None``
        keeps everything in memory.
    config
        A :class:`SegmentConfig`, dict or YAML path; keywords given here override it.
        Its ``compute`` section says where the Dask work runs (threads by default;
        docs/scale.md).
    allow_download
        Let the encoder download missing weights (off by default).
    batch_size
        Chips per forward pass of a torch encoder: ``"auto"`` (default) is each encoder's
        best for the device (ResNet50: 8 on a CPU, where small batches run faster; 64 on
        a GPU), or a whole number.
    signal
        One image only: which image of a multi-signal file (index or title substring).
    pixel_size, units
        One image only: calibration for array input (or to override a file's).
    fusion
        Several modalities: ``"concat"`` (default: one graph on the modalities' balanced,
        concatenated features) or ``"multiplex"`` (one partition over every modality's graph).

    Returns
    -------
    Segmentation

    Raises
    ------
    InputError, ParameterError, OutputError, WeightsError
        Before any file is written, for everything that can be checked up front.
    """
    cfg = with_overrides(load_config(config), chip_size=chip_size, stride=stride, refine=refine,
                         place_positions=place_positions,
                         encoder=encoder, encoder_options=encoder_options, weights=weights, k=k,
                         resolution=resolution, method=method, merge=merge, consensus=consensus,
                         decide=decide, alpha=alpha, seed=seed, allow_download=allow_download, n_pcs=n_pcs, device=device,
                         batch_size=batch_size, fusion=fusion)
    out_dir = check_output(out)
    if out_dir is None and cfg.compute.scheduler != "threads":
        raise ParameterError(f"compute.scheduler {cfg.compute.scheduler!r} needs the study on disk, where "
                             "its workers can read it; this run keeps it in memory",
                             fix="give out=FOLDER, or use compute.scheduler: threads", where="compute.scheduler")
    seconds: dict[str, float] = {}
    with timed(seconds, "plan"), RunWarnings() as planned:  # e.g. a setting no modality uses
        checked = plan(source, cfg, signal=signal, pixel_size=pixel_size, units=units)
    check_same_specimen(out_dir, checked.modalities)
    created = out_dir is not None and not out_dir.exists()
    try:
        study = Study.open(out_dir / "study.zarr" if out_dir else None)
        with RunWarnings() as caught, open_scheduler(cfg.compute):
            seconds |= run(checked, study, progress=progress)
            with timed(seconds, "collect"):
                seg = stages.collect(study)
        seg.provenance["warnings"] = [f"{w.category.__name__}: {w.message}" for w in [*planned, *caught]]
        # how long each step took (s): where a run's time goes, not part of its result
        seg.provenance["seconds"] = {name: round(value, 4) for name, value in seconds.items()}
        study.record(warnings=seg.provenance["warnings"], seconds=seg.provenance["seconds"])
        if out_dir is not None:
            seg.save(out_dir)
    except MMSegError:
        if created:  # a new folder with a failed run in it is a partial output: remove it
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    planned.replay()  # the run's warnings reach the caller too, as raised
    caught.replay()
    return seg
