"""Run configuration: validated sections for each stage, from keywords or YAML.

Unknown keys and bad values are errors that name them (pydantic, ``extra="forbid"``).
A YAML file mirrors the sections::

    chips:       {size: 32, stride: 16, refine: 1}
    encoder:     {name: auto, weights: null, allow_download: false}
    graph:       {k: 15, n_pcs: 30}
    communities: {method: leiden, resolution: 1.0}
    fusion:      {method: multiplex, layer_weights: {}}  # several modalities only
    modality_encoders: {eels: spectrum-pca}              # several modalities only
    seed: 0
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ParameterError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ChipConfig(_Section):
    """Chip grid. Sizes are pixels (int) or calibrated lengths (str such as ``"2 nm"``).

    ``size="auto"`` picks about 16 chips across the shorter image side, at least
    32 px; ``stride=None`` uses half the chip size (50 % overlap), which halves
    the boundary error of the painted regions at four times the chips.
    ``refine=4`` places boundaries to a quarter stride by embedding only the chips
    that lie on them again (see :mod:`multimodal_seg.chips.refine`).
    """

    size: int | str = "auto"
    stride: int | str | None = None
    #: Boundary refinement (multimodal_seg.chips.refine): boundaries are placed on a grid of
    #: step ``stride // refine``; 1 = off.  Costs the chips on boundaries, embedded again.
    refine: int = Field(1, ge=1, le=64)

    @field_validator("size", "stride")
    @classmethod
    def _positive(cls, value: Any) -> Any:
        if isinstance(value, int) and value <= 0:
            raise ValueError("must be a positive number of pixels")
        return value


class EncoderConfig(_Section):
    """Which encoder embeds the chips. ``name="auto"``: MicroNet ResNet50 if its
    weights are at hand, else the weight-free Fourier encoder."""

    name: str = "auto"
    weights: str | None = None
    allow_download: bool = False
    batch_size: int = Field(64, gt=0)
    device: str = "auto"
    options: dict[str, Any] = Field(default_factory=dict)


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
    #: If > 1: the most representative of this many runs (communities.consensus_labels);
    #: steadier across seeds, costs this many runs.  0 or 1: a single run.
    consensus: int = Field(30, ge=0, le=1000)
    #: Merge communities whose connectivity (observed / expected edge weight) exceeds this;
    #: ``None`` keeps Leiden's partition (see communities.merge_connected).
    merge: float | None = Field(None, gt=0, le=1)


class FusionConfig(_Section):
    """How several modalities make one partition (see :mod:`multimodal_seg.graphs.fusion`)."""

    # multiplex is the default: on the multimodal phantom (benchmarks/reports/multimodal-2cpu)
    # it reached ARI 0.908 against 0.883 for concat, with 5.0 communities against 5.7.
    method: Literal["concat", "multiplex"] = "multiplex"
    layer_weights: dict[str, float] = Field(default_factory=dict)


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
    seed: int = Field(0, ge=0)


#: segment() keyword -> (section, field) in SegmentConfig.
KEYWORDS: dict[str, tuple[str | None, str]] = {
    "chip_size": ("chips", "size"),
    "stride": ("chips", "stride"),
    "refine": ("chips", "refine"),
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
    "seed": (None, "seed"),
    "fusion": ("fusion", "method"),
}


def explain(exc: ValidationError, where: str, *, what: str = "configuration",
            listed: str = "`mmseg segment --help` and docs/user-guide.md") -> ParameterError:
    """A pydantic validation error as a ParameterError naming every bad or unknown key.

    ``what`` names the configuration, ``listed`` where its valid keys are documented.
    """
    lines = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown key '{key}'")
        else:
            lines.append(f"'{key}': {err['msg']} (got {err.get('input')!r})")
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
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ParameterError(f"not valid YAML: {exc}", fix="fix the YAML syntax", where=path) from exc
    if not isinstance(data, dict):
        raise ParameterError("the config must be a mapping of sections", fix=f"see {layout} for the layout",
                             where=path)
    return data


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
    for keyword, value in keywords.items():
        if value is None:
            continue
        if keyword not in table:
            raise ParameterError(f"unknown option {keyword!r}",
                                 fix=f"use one of {', '.join(sorted(table))}", where=keyword)
        section, field = table[keyword]
        (data[section] if section else data)[field] = str(value) if keyword == "weights" else value
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise explain(exc, "options", what=what, listed=listed) from None
