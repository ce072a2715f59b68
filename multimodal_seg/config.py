"""Run configuration: validated sections for each stage, from keywords or YAML.

Unknown keys and bad values are errors that name them (pydantic, ``extra="forbid"``).
A YAML file mirrors the sections::

    chips:       {size: 32, stride: 16, refine: auto, place_positions: true}
    encoder:     {name: auto, weights: null, allow_download: false}
    graph:       {k: 15, n_pcs: 30}
    communities: {method: leiden, resolution: 1.0}
    fusion:      {method: concat, layer_weights: {}}     # several modalities only
    modality_encoders: {eels: spectrum-pca}              # several modalities only
    compute:     {scheduler: threads, workers: null}     # where the work runs (docs/scale.md)
    seed: 0
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ParameterError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ChipConfig(_Section):
    """Chip grid. Sizes are pixels (int) or calibrated lengths (str such as ``"2 nm"``).

    ``size="auto"`` picks about 16 chips across the shorter image side, at least
    32 px; ``stride=None`` uses half the chip size (50 % overlap), which halves
    the boundary error of the painted regions at four times the chips.
    ``refine="auto"`` (default) places boundaries to half a stride by embedding only
    the chips that lie on them again, where the stride allows and the encoders are
    lightweight (no neural network); ``refine=4`` to a quarter stride, ``refine=1`` turns
    it off (see :mod:`multimodal_seg.chips.refine`).  ``place_positions`` (default on) then
    lets every scan position near a boundary of a spectrum image or 4D-STEM scan weigh its
    own signal against the painted map (:mod:`multimodal_seg.chips.placement`).
    """

    size: int | str = "auto"
    stride: int | str | None = None
    #: Boundary refinement (multimodal_seg.chips.refine): boundaries are placed on a grid of
    #: step ``stride // refine``; 1 = off; "auto" = 2 where the stride is at least 2 px and
    #: every encoder is lightweight, else off.  Costs the chips on boundaries, embedded again.
    refine: int | Literal["auto"] = "auto"
    #: Boundary positions placed by their own signals (multimodal_seg.chips.placement): scan
    #: positions near a boundary, in modalities measured position by position (spectra,
    #: diffraction), take the community their signal and the painted map make most probable.
    place_positions: bool = True

    @field_validator("size", "stride")
    @classmethod
    def _positive(cls, value: Any) -> Any:
        if isinstance(value, int) and value <= 0:
            raise ValueError("must be a positive number of pixels")
        return value

    @field_validator("refine", mode="before")
    @classmethod
    def _refine_factor(cls, value: Any) -> Any:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 64):
            return value
        raise ValueError("must be 'auto' or a whole number from 1 (off) to 64")


class EncoderConfig(_Section):
    """Which encoder embeds the chips. ``name="auto"``: MicroNet ResNet50 if its
    weights are at hand, else the weight-free Fourier encoder."""

    name: str = "auto"
    weights: str | None = None
    allow_download: bool = False
    #: Chips per forward pass of a torch encoder; "auto": each encoder's best for the device
    #: (smaller on CPUs, where small batches run faster: multimodal_seg.encoders.device.batch_for).
    batch_size: int | Literal["auto"] = "auto"
    device: str = "auto"
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch(cls, value: Any) -> Any:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise ValueError("must be 'auto' or a whole number >= 1")


class GraphConfig(_Section):
    """kNN graph over standardised, PCA-reduced embeddings."""

    k: int = Field(15, gt=0, le=1000)
    n_pcs: int | None = Field(30, gt=0)


class CommunityConfig(_Section):
    """Community detection on the graph."""

    method: Literal["leiden", "louvain"] = "leiden"
    resolution: float = Field(1.0, gt=0, le=100)
    n_iterations: int = -1
    #: Independent runs; the partition of highest modularity is kept (less seed-dependent,
    #: but may split regions more: see communities.partition_graph).
    n_restarts: int = Field(1, ge=1, le=1000)
    #: If > 1: the most representative of this many runs (communities.medoid_labels),
    #: which stop early once most runs are shown to agree (a sequential sign test at 0.01:
    #: 9 of 30 when all agree), and go on to four times as many where they split on the
    #: number of communities (a close call); steadier across seeds.  Each run is merged and
    #: decided before the medoid is taken.  0 or 1: a single run.
    consensus: int = Field(30, ge=0, le=1000)
    #: Merge communities whose connectivity (observed / expected edge weight) exceeds this;
    #: ``None`` keeps Leiden's partition (see communities.merge_connected).
    merge: float | None = Field(None, gt=0, le=1)
    #: Decide the number of communities from the data: ``"dip"`` merges neighbouring
    #: communities whose chips are one population (graphs.decide); ``"none"`` keeps Leiden's.
    decide: Literal["dip", "none"] = "dip"
    #: Significance level of that test: a pair stays apart when unimodality is rejected at it.
    alpha: float = Field(0.01, gt=0, lt=1)


class FusionConfig(_Section):
    """How several modalities make one partition (see :mod:`multimodal_seg.graphs.fusion`)."""

    # concat is the default.  Over the phantom families with random parameters (8 draws each,
    # with the number of communities decided from the data), concat reached mean ARI 0.88 /
    # 0.84 / 0.89 / 0.88 (complementary / redundant / blind_eels / noisy) against multiplex's
    # 0.73 / 0.86 / 0.89 / 0.87, worst draw 0.72 against 0.60: when one modality's contrast is
    # weak, multiplex's sum of modularities follows the other layer's splits, while one graph
    # on balanced concatenated features sees a difference in either (docs/design.md).
    method: Literal["concat", "multiplex"] = "concat"
    layer_weights: dict[str, float] = Field(default_factory=dict)
    #: Leave out of the joint partition a modality whose own partition is one community (it
    #: found no structure: with the default decision, its chips are one population), unless
    #: every modality is; it would add only noise (blind EELS family, docs/design.md).
    skip_structureless: bool = True


class ComputeConfig(_Section):
    """Where the work runs: Dask's threaded scheduler, a LocalCluster, a running
    scheduler, or SLURM/PBS through dask-jobqueue (see docs/scale.md).

    Changes where and how fast a run goes, never its labels: the same config and
    seed give the same labels on every scheduler.
    """

    #: threads: Dask's threaded scheduler in this process (the default, no extra
    #: install); processes: a ``distributed.LocalCluster`` of worker processes;
    #: address: a running Dask scheduler (``address``); slurm, pbs: a
    #: dask-jobqueue cluster (``cluster`` holds its keywords: cores, memory, queue ...).
    scheduler: Literal["threads", "processes", "address", "slurm", "pbs"] = "threads"
    #: threads: threads (default: the CPU count); processes: worker processes
    #: (default: the CPU count); slurm, pbs: jobs to submit (default 1).
    workers: int | None = Field(None, ge=1, le=10_000)
    #: Threads of each worker process (processes, slurm, pbs); also torch's threads there.
    threads_per_worker: int = Field(1, ge=1, le=1024)
    #: ``tcp://host:port`` of a running scheduler (scheduler: address).
    address: str | None = None
    #: Keywords of dask_jobqueue.SLURMCluster / PBSCluster (scheduler: slurm or pbs).
    cluster: dict[str, Any] = Field(default_factory=dict)
    #: MiB of raw data one embedding task reads (Dask's ``array.chunk-size``): peak
    #: memory is about this times the tasks running at once (threads or workers).
    chunk_mib: int = Field(128, ge=1, le=65536)

    @model_validator(mode="after")
    def _consistent(self) -> "ComputeConfig":
        if (self.address is not None) != (self.scheduler == "address"):
            raise ValueError("'address' is given exactly when scheduler is 'address' (tcp://host:port)")
        if self.cluster and self.scheduler not in ("slurm", "pbs"):
            raise ValueError("'cluster' (dask-jobqueue keywords) applies to scheduler slurm or pbs only")
        if self.threads_per_worker != 1 and self.scheduler in ("threads", "address"):
            raise ValueError("'threads_per_worker' applies to processes, slurm and pbs; "
                             "with threads use 'workers', a running scheduler has its own")
        if self.workers is not None and self.scheduler == "address":
            raise ValueError("'workers' cannot be set for a running scheduler (scheduler: address)")
        return self


class SegmentConfig(_Section):
    """Everything a segmentation run depends on, besides the data.

    ``encoder`` configures the image encoder; ``modality_encoders`` maps a
    modality name to the encoder for it (defaults: ``spectrum-pca`` for spectrum
    images, ``diffraction-profiles`` for 4D-STEM).
    """

    chips: ChipConfig = Field(default_factory=ChipConfig)
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    modality_encoders: dict[str, str] = Field(default_factory=dict)
    graph: GraphConfig = Field(default_factory=GraphConfig)
    communities: CommunityConfig = Field(default_factory=CommunityConfig)
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    seed: int = Field(0, ge=0)


#: segment() keyword -> (section, field) in SegmentConfig.
KEYWORDS: dict[str, tuple[str | None, str]] = {
    "chip_size": ("chips", "size"),
    "stride": ("chips", "stride"),
    "refine": ("chips", "refine"),
    "place_positions": ("chips", "place_positions"),
    "encoder": ("encoder", "name"),
    "encoder_options": ("encoder", "options"),
    "weights": ("encoder", "weights"),
    "allow_download": ("encoder", "allow_download"),
    "batch_size": ("encoder", "batch_size"),
    "device": ("encoder", "device"),
    "k": ("graph", "k"),
    "n_pcs": ("graph", "n_pcs"),
    "method": ("communities", "method"),
    "resolution": ("communities", "resolution"),
    "merge": ("communities", "merge"),
    "consensus": ("communities", "consensus"),
    "decide": ("communities", "decide"),
    "alpha": ("communities", "alpha"),
    "seed": (None, "seed"),
    "fusion": ("fusion", "method"),
}


def explain(exc: ValidationError, where: str, *, what: str = "configuration",
            listed: str = "`mmseg segment --help` and docs/user-guide.md",
            given: Mapping[str, str] | None = None) -> ParameterError:
    """A pydantic validation error as a ParameterError naming every bad or unknown key.

    ``what`` names the configuration, ``listed`` where its valid keys are documented;
    ``given`` names a key (``"graph.k"``) as the user gave it (``"k (graph.k)"``: the
    keyword, which is the command line's option too).
    """
    lines = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"])
        named = (given or {}).get(key, f"'{key}'")
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown key '{key}'")
        else:
            lines.append(f"{named}: {err['msg']} (got {err.get('input')!r})")
    return ParameterError(
        f"invalid {what}: " + "; ".join(lines),
        fix=f"correct or remove these keys; {listed} list valid ones",
        where=where,
    )


def read_yaml(path: str | Path, *, layout: str = "configs/demo.yaml") -> dict[str, Any]:
    """The mapping of sections in a YAML config file.

    Raises
    ------
    ParameterError
        The file is missing, not valid YAML, or not a mapping (``layout`` names an example).
    """
    path = Path(path)
    if not path.is_file():
        raise ParameterError("config file not found", fix="give the path of an existing YAML file", where=path)
    return read_yaml_mapping(path, expected="the config must be a mapping of sections",
                             fix=f"see {layout} for the layout")


S = TypeVar("S", bound=BaseModel)


def validated(section: type[S], where: str, **values: Any) -> S:
    """One config section from keyword values, checked like a config file's.

    Raises
    ------
    ParameterError
        Naming ``where`` (e.g. the stage) and every bad or unknown value.
    """
    try:
        return section.model_validate(values)
    except ValidationError as exc:
        raise explain(exc, where) from None


def read_yaml_mapping(path: Path, *, expected: str, fix: str) -> dict[str, Any]:
    """A YAML file that must hold a mapping (an empty file is an empty one).

    Raises
    ------
    ParameterError
        Not valid YAML, or not a mapping (``expected`` and ``fix`` say what should be there).
    """
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as exc:
        raise ParameterError(f"not valid YAML: {exc}", fix="fix the YAML syntax", where=path) from None
    if not isinstance(data, dict):
        raise ParameterError(expected, fix=fix, where=path)
    return data


def load_config(source: SegmentConfig | dict | str | Path | None = None) -> SegmentConfig:
    """A validated config from a model, a dict, a YAML file, or defaults (``None``)."""
    if isinstance(source, SegmentConfig):
        return source.model_copy(deep=True)
    where = "config"
    data: Any = {}
    if isinstance(source, (str, Path)):
        where, data = str(source), read_yaml(source)
    elif isinstance(source, dict):
        data = source
    try:
        return SegmentConfig.model_validate(data)
    except ValidationError as exc:
        raise explain(exc, where) from None


def with_overrides(config: SegmentConfig, **keywords: Any) -> SegmentConfig:
    """A copy of ``config`` with segment() keywords applied; ``None`` keeps the config's value."""
    return overridden(SegmentConfig, config.model_dump(), KEYWORDS, keywords)


def overridden(model: type[S], data: dict[str, Any], table: Mapping[str, tuple[str | None, str]],
               keywords: Mapping[str, Any], *, what: str = "configuration",
               listed: str = "`mmseg segment --help` and docs/user-guide.md") -> S:
    """``model`` validated from ``data`` (a dumped config) with keyword values put where ``table``
    says (``keyword -> (section or None, field)``); ``None`` keeps the value in ``data``.

    Raises
    ------
    ParameterError
        A keyword not in ``table``, or a value the model refuses.
    """
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    given = {}
    for keyword, value in keywords.items():
        if value is None:
            continue
        if keyword not in table:
            raise ParameterError(f"unknown option {keyword!r}",
                                 fix=f"use one of {', '.join(sorted(table))}", where=keyword)
        section, field = table[keyword]
        (data[section] if section else data)[field] = str(value) if keyword == "weights" else value
        location = f"{section}.{field}" if section else field
        given[location] = f"'{keyword}'" if keyword == location else f"'{keyword}' ({location})"
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise explain(exc, "options", what=what, listed=listed, given=given) from None
