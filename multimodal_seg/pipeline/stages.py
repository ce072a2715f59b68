"""The step-by-step API: stage functions over a :class:`Study`, in scanpy's manner.

::

    import multimodal_seg as mms
    from multimodal_seg import stages

    study = mms.Study.open("run/study.zarr")          # or mms.Study.open() in memory
    stages.add_modalities(study, {"haadf": "haadf.dm4", "eels": "si.dm4"})
    stages.lay_chips(study)                           # chip_size="auto", stride=None
    stages.embed(study)                               # encoder="auto", one per modality
    stages.build_graphs(study, k=15)
    stages.find_communities(study, resolution=1.0)    # every modality's own partition
    stages.fuse(study, method="concat")               # the joint one (nothing for one modality)
    stages.refine(study)                              # sharper boundaries (factor "auto": 2)
    stages.place_positions(study)                     # scan positions placed by their own signals
    seg = stages.collect(study, out="run/")           # the Segmentation, files written

Every stage takes the study first and keyword-only options, writes its outputs
under its keys (the layout is in :mod:`multimodal_seg.pipeline.study`) with the
parameters beside them, records its options (``Study.stage_params``), and is
skipped when its outputs are current.  Each output's fingerprint is computed from
the fingerprints of the outputs it reads, found in the study, so a stage needs
nothing from the caller but its own options.  :func:`multimodal_seg.segment` runs
exactly these stages, so both paths give the same labels.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis.consistency import consistency_matrices, disagreement
from ..analysis.descriptors import (CHIP_STATS, community_crystallinity, community_mean_signals, community_table,
                                   unpainted_communities)
from ..analysis.spectral_lines import line_table
from ..chips.grid import ChipGrid
from ..chips.placement import RULES as PLACEMENT_RULES, place_boundary_positions
from ..chips.refine import (VOTE_RULES, boundary_chips, fine_grid, keep_communities, neighbour_votes, pooled_votes,
                            refine_factor, refined_chip_labels, window_voters)
from ..chips.shared import ModalityChips, SharedGrid, labels_on, scan_frame, shared_grid
from ..chips.sizing import chip_geometry, warn_small_image_chips, warn_sparse_spectra
from ..chips.texture import Lattice, lattice_features
from ..config import ChipConfig, CommunityConfig, EncoderConfig, FusionConfig, GraphConfig, SegmentConfig, validated
from ..encoders.base import Encoder
from ..encoders.choice import choose_encoders
from ..errors import ParameterError
from ..graphs import knn
from ..graphs.communities import CONSENSUS_RULES, check_layer_weights, check_options, partition_graph, weighted_sum
from ..graphs.decide import RULES_VERSION
from ..graphs.fusion import concatenated_features
from ..graphs.labels import community_groups
from ..modalities.base import Axis, ModalityData
from ..modalities.sources import modality_identity, read_modalities, source_record
from ..provenance import fingerprint, run_record
from ..result import Segmentation
from .embedding import (BATCH_CHIPS, FIT_RULES, chip_batch, chip_nbytes, embed_positions, encode_chips, fit_encoder,
                        learns, modality_intensity, pools_positions)
from .study import JOINT, Study

#: Grids of more than this many positions a side are placed on every ``step``-th position
#: (:func:`place_positions`): memory and time bounded whatever the image's size.
MAX_PLACED_EDGE = 512
#: Community options checked before any partition is computed.
_CHECKED = ("method", "resolution", "n_restarts", "consensus", "merge", "decide", "alpha")
#: Stage names in the order they run (keys of ``Study.stage_params``).
STAGES = ("modalities", "chips", "embed", "graphs", "communities", "fusion", "refine")


def _needs(study: Study, key: str, stage: str) -> str:
    """The fingerprint of an output a stage reads; a clear error when it is missing."""
    fp = study.fingerprint_of(key)
    if fp is None:
        raise ParameterError(f"the study has no finished {key!r}, which this stage reads",
                             fix=f"run stages.{stage} first (or segment(), which runs every stage)",
                             where=str(study.path or "study"))
    return fp


def main_partition(study: Study) -> str:
    """The partition a run reports: ``"joint"`` with several modalities, else the only modality's."""
    names = study.modality_names()
    return JOINT if len(names) > 1 else names[0]


# --------------------------------------------------------------------------- stages


def add_modalities(study: Study, sources: Mapping[str, Any], *,
                   lattices: Mapping[str, Lattice] | None = None) -> list[str]:
    """Read modalities and store them: ``modalities/<name>``.

    Parameters
    ----------
    sources
        ``{name: source}``: a source is a file, an array, a read :class:`ModalityData`
        or ``(source, {reader options})``; a name is a modality name whose kind can be
        guessed (``haadf``, ``eels``, ``4dstem`` ...) or ``"name:kind"``
        (:func:`multimodal_seg.modalities.sources.read_modalities`).
    lattices
        Image modalities' lattices, by name, where already measured on these very data
        (:func:`multimodal_seg.pipeline.segment.plan` measures them to size the chips); the
        study keeps them (:meth:`Study.lattice`) instead of measuring them again.

    A modality already stored from the same source, reader options and calibration
    is not written again.  The study's modalities become these, in this order.

    Returns
    -------
    The modality names.
    """
    modalities = read_modalities(sources)
    for name, modality in modalities.items():
        fp = fingerprint("modality", modality_identity(modality))
        if not study.is_current(f"modalities/{name}", fp):
            study.write_modality(modality, fingerprint=fp)
        if lattices is not None and name in lattices:
            study.lattices[name] = (fp, lattices[name])
    study.set_modality_names(list(modalities))
    study.record_stage("modalities", {"sources": {n: source_record(m) for n, m in modalities.items()}})
    return list(modalities)


def lay_chips(study: Study, *, chip_size: int | str = "auto", stride: int | str | None = None) -> SharedGrid:
    """Lay one chip grid over every modality: ``chips/origins``, ``chips/modalities/<name>``.

    Parameters
    ----------
    chip_size, stride
        In pixels of the reference modality (the coarsest scan) or as calibrated
        lengths (``"2 nm"``); ``"auto"`` and ``None`` follow
        :mod:`multimodal_seg.chips.sizing` (stride: half the chip).

    Returns
    -------
    The grid (also readable later with ``study.grid()``).
    """
    chips = validated(ChipConfig, "lay_chips", size=chip_size, stride=stride)
    modalities = study.modalities()
    lattices = ({n: study.lattice(n) for n, m in modalities.items() if m.kind == "image"}
                if chips.size == "auto" else None)
    size, step = chip_geometry(chips, modalities, lattices=lattices)
    grid = shared_grid(modalities, chip_size=size, stride=step)
    warn_small_image_chips(modalities, grid)
    warn_sparse_spectra(modalities, grid)
    layout = {name: {"size": c.size, "origins": fingerprint(c.origins)} for name, c in grid.per_modality.items()}
    upstream = [_needs(study, f"modalities/{n}", "add_modalities") for n in modalities]
    fp = fingerprint("chips", grid.to_dict(), layout, upstream)
    if not study.is_current("chips/origins", fp):
        for name, modality_chips in grid.per_modality.items():
            axes = modalities[name].axes[:2]
            study.write_array(
                f"chips/modalities/{name}", modality_chips.origins, fingerprint=fp, size=modality_chips.size,
                chip_size_physical=[modality_chips.size * axis.scale for axis in axes],
                units=[axis.units for axis in axes])
        study.write_array("chips/origins", grid.grid.origins, fingerprint=fp, grid=grid.grid.to_dict(),
                          modalities=list(modalities), shared=grid.to_dict())
    study.record_stage("chips", {"size": chips.size, "stride": chips.stride})
    return grid


def _encoder_config(**values: Any) -> EncoderConfig:
    return validated(EncoderConfig, "embed", **values)


def embed(
    study: Study, *, encoder: str = "auto", weights: str | Path | None = None,
    encoder_options: Mapping[str, Any] | None = None, modality_encoders: Mapping[str, str] | None = None,
    batch_size: int | str = "auto", device: str = "auto", allow_download: bool = False,
    encoders: Mapping[str, Encoder | tuple[Encoder, str]] | None = None, seed: int = 0,
    batch_chips: int = BATCH_CHIPS, progress: bool = True,
) -> dict[str, Encoder]:
    """Embed every chip of every modality: ``embeddings/<name>`` and ``chips/stats/<name>``.

    Parameters
    ----------
    encoder, weights, encoder_options, batch_size, device, allow_download
        The image encoder and its options (see :class:`multimodal_seg.config.EncoderConfig`);
        ``encoder_options`` keyed by a modality name holds that modality's options.
    modality_encoders
        ``{name: encoder}`` for modalities that should not use their kind's default
        (``spectrum-pca`` for spectra, ``diffraction-profiles`` for 4D-STEM, ``encoder``
        for images).
    encoders
        Ready encoders by modality (or ``(encoder, reason)``), used instead of
        building them; for plugin authors and for :func:`multimodal_seg.segment`,
        which builds them before any work to check their options.
    seed
        Seed of the chip sample an encoder that learns (``spectrum-pca``) is fitted on.
    batch_chips
        Chips read and encoded at a time (memory holds about this many chips).

    The modality is streamed from the store one band of chip rows at a time, never
    whole.  Image chips are scaled to [0, 1] by the image's robust intensity range;
    spectra and patterns reach their encoders as raw counts.  Encoders that pool scan
    positions (``spectrum-pca``, ``diffraction-profiles``, ``spectrum-cnn``, ``diffraction-cnn``) encode each
    position once and keep every position's features (``positions/<name>``), from which
    :func:`refine` pools its finer chips.

    Returns
    -------
    The encoder of each modality (fitted where it learns from the data).
    """
    config = _encoder_config(name=encoder, weights=None if weights is None else str(weights),
                             options=dict(encoder_options or {}), batch_size=batch_size, device=device,
                             allow_download=allow_download)
    _needs(study, "chips/origins", "lay_chips")
    modalities = study.modalities()
    given = {name: value if isinstance(value, tuple) else (value, f"{value.name} given for {name}")
             for name, value in (encoders or {}).items()}
    unknown = sorted(set(given) - set(modalities))
    if unknown:
        raise ParameterError(f"encoders given for modalities that are not in the study: {unknown}",
                             fix=f"use modality names among {list(modalities)}", where="encoders")
    to_build = {n: m for n, m in modalities.items() if n not in given}
    chosen = {**(choose_encoders(config, to_build, modality_encoders) if to_build else {}), **given}
    fp_chips = _needs(study, "chips/origins", "lay_chips")
    grid = study.grid()
    for name, modality in modalities.items():
        enc = chosen[name][0]
        # Torch encoders may round differently with another batching: it counts then.
        # An encoder that learns from the data counts how its sample is drawn (FIT_RULES).
        fp = fingerprint("embeddings", enc.fingerprint(), fp_chips, seed,
                         chip_batch(batch_chips, chip_nbytes(modality, grid.per_modality[name].size))
                         if enc.batch_dependent else None, *([{"fit_rules": FIT_RULES}] if learns(enc) else []))
        key, stats_key = f"embeddings/{name}", f"chips/stats/{name}"
        if study.is_current(key, fp) and study.is_current(stats_key, fp):
            continue
        intensity = modality_intensity(modality)
        fit_encoder(modality, grid.per_modality[name], enc, intensity=intensity, seed=seed)
        # encoders that pool scan positions keep every position's features: refinement
        # pools its finer chips from them instead of reading the modality again
        positions = embed_positions(modality, enc, progress=progress) if pools_positions(modality, enc) else None
        embeddings, stats = encode_chips(modality, grid.per_modality[name], enc, intensity=intensity,
                                         batch_chips=batch_chips, progress=progress, desc="embedding",
                                         positions=positions)
        if positions is not None:
            study.write_positions(name, positions, fingerprint=fp)
        study.write_array(stats_key, stats, fingerprint=fp, columns=list(CHIP_STATS))
        study.write_array(key, embeddings, fingerprint=fp, encoder=enc.fingerprint(),
                          intensity_scale=list(intensity) if modality.kind == "image" else None,
                          standardise=enc.standardise, lightweight=enc.lightweight, seed=seed)
        study.fitted_encoders[name] = (fp, enc)
    study.record_stage("embed", {"encoder": config.model_dump(), "modality_encoders": dict(modality_encoders or {}),
                                 "seed": seed, "batch_chips": batch_chips,
                                 "choice": {n: reason for n, (_, reason) in chosen.items()}})
    return {name: enc for name, (enc, _) in chosen.items()}


def build_graphs(study: Study, *, k: int = 15, n_pcs: int | None = 30, seed: int = 0) -> None:
    """kNN similarity graph of every modality's embeddings: ``graphs/<name>``.

    Embeddings are standardised (unless their encoder says not to) and reduced to
    ``n_pcs`` principal components; each chip is joined to its ``k`` nearest by cosine
    similarity (exact search up to ``graphs.knn.EXACT_MAX`` chips, pynndescent above).
    """
    graph = validated(GraphConfig, "build_graphs", k=k, n_pcs=n_pcs)
    params = {"k": graph.k, "n_pcs": graph.n_pcs, "metric": "cosine", "seed": seed}
    for name in study.modality_names():
        key_in = f"embeddings/{name}"
        fp = fingerprint("graph", params, _needs(study, key_in, "embed"))
        if study.is_current(f"graphs/{name}", fp):
            continue
        _, features = _graph_space(study, name, n_pcs=graph.n_pcs, seed=seed)
        adjacency = knn.knn_graph(features, k=graph.k, seed=seed)
        study.write_sparse(f"graphs/{name}", adjacency, fingerprint=fp, params=params,
                           search="exact" if adjacency.shape[0] <= knn.EXACT_MAX else "pynndescent")
    study.record_stage("graphs", {"k": graph.k, "n_pcs": graph.n_pcs, "seed": seed})


def _graph_space(study: Study, name: str, *, n_pcs: int | None, seed: int) -> tuple[knn.FeatureReducer, np.ndarray]:
    """The reducer fitted to ``embeddings/<name>`` and the chips in its space ``(n_chips, d)``,
    fitted once per session (:attr:`Study.graph_spaces`); the features are read-only."""
    key_in = f"embeddings/{name}"
    standardise = study.attrs_of(key_in).get("standardise", True)
    key = fingerprint("graph space", {"n_pcs": n_pcs, "seed": seed, "standardise": standardise},
                      study.fingerprint_of(key_in))
    cached = study.graph_spaces.get(name)
    if cached is None or cached[0] != key:
        reducer = knn.FeatureReducer(n_pcs=n_pcs, seed=seed, standardise=standardise)
        features = reducer.fit_transform(study.read_array(key_in))
        features.setflags(write=False)
        cached = study.graph_spaces[name] = (key, reducer, features)
    return cached[1], cached[2]


def graph_features(study: Study, name: str) -> np.ndarray:
    """A modality's chips in its graph's space ``(n_chips, d)``, read-only: the embeddings
    standardised and reduced as :func:`build_graphs` did (the space the number of communities
    is decided in)."""
    graph = study.stage_params["graphs"]
    return _graph_space(study, name, n_pcs=graph["n_pcs"], seed=graph["seed"])[1]


def _write_partition(study: Study, key: str, layers: dict[str, Any], options: dict[str, Any], fp: str, *,
                     modalities: list[str], layer_weights: dict[str, float] | None = None,
                     attrs: dict[str, Any], joint: bool = False) -> None:
    """Partition ``layers`` with the community ``options`` and store the labels under ``key``;
    the number of communities is decided in the feature spaces of ``modalities`` (for a
    ``joint`` partition, with the communities that no modality's own partition tells apart
    merged: :func:`multimodal_seg.graphs.decide.merge_untold`)."""
    deciding = options.get("decide") not in (None, "none")
    features = {n: graph_features(study, n) for n in modalities} if deciding else None
    own = {n: study.read_array(f"partitions/{n}") for n in modalities} if deciding and joint else None
    grid = study.grid().grid
    grid_shape = tuple(grid.grid_shape) if deciding else None
    part = partition_graph(layers, layer_weights=layer_weights, features=features, grid_shape=grid_shape,
                           grid_step=grid.half_chip_steps, feature_weights=attrs.get("layer_weights"),
                           own_partitions=own, **options)
    study.write_array(key, part.labels, fingerprint=fp, **part.record(), **attrs)
    part.warn_if_close_call(key, stacklevel=3)


def _rules(options: Mapping[str, Any]) -> dict[str, int]:
    """What a partition's fingerprint takes from the rules' code: the decision rules' version
    when they run, the consensus rules' when a consensus runs (a study made by earlier rules
    partitions again), nothing otherwise."""
    rules = {"decision_rules": RULES_VERSION} if options.get("decide") not in (None, "none") else {}
    return rules | ({"consensus_rules": CONSENSUS_RULES} if (options.get("consensus") or 0) > 1 else {})


def find_communities(
    study: Study, *, method: str = "leiden", resolution: float = 1.0, n_iterations: int = -1,
    n_restarts: int = 1, consensus: int = 30, merge: float | None = None, decide: str = "dip",
    alpha: float = 0.01, seed: int = 0,
) -> None:
    """Partition every modality's graph: ``partitions/<name>``.

    Options are those of :func:`multimodal_seg.graphs.communities.partition_graph`;
    :func:`fuse` applies the same options to the joint partition.  ``decide="dip"``
    (default) decides the number of communities from the data: neighbouring communities
    whose chips are one population are merged (:mod:`multimodal_seg.graphs.decide`), and
    what was merged, and why, is stored with the partition (attribute ``decision``);
    ``decide="none"`` keeps Leiden's communities.  Each
    partition is stored with its parameters, modularity and number of communities.
    """
    com = validated(CommunityConfig, "find_communities", method=method, resolution=resolution,
                    n_iterations=n_iterations, n_restarts=n_restarts, consensus=consensus, merge=merge,
                    decide=decide, alpha=alpha)
    options = {**com.model_dump(), "seed": seed}
    check_options(**{k: options[k] for k in _CHECKED})
    for name in study.modality_names():
        fp = fingerprint("partition", options, _rules(options), _needs(study, f"graphs/{name}", "build_graphs"))
        if not study.is_current(f"partitions/{name}", fp):
            _write_partition(study, f"partitions/{name}", {name: study.read_sparse(f"graphs/{name}")},
                             options, fp, modalities=[name], attrs={"graph": name})
    study.record_stage("communities", options)


def fuse(study: Study, *, method: str = "concat", layer_weights: Mapping[str, float] | None = None,
         skip_structureless: bool = True) -> None:
    """One partition from every modality: ``partitions/joint`` (and ``graphs/joint`` for concat).

    With one modality there is nothing to fuse: its own partition is the result.

    Parameters
    ----------
    method
        ``"concat"`` (default): one graph on the modalities' balanced, concatenated features;
        ``"multiplex"``: one partition that is good on every modality's graph at once
        (:mod:`multimodal_seg.graphs.fusion`).
    layer_weights
        ``{modality: weight}`` (default 1 each).
    skip_structureless
        Leave out (weight 0) every modality whose own partition (``partitions/<name>``) is a
        single community, unless all are: it found no structure and would only add noise.
        The modalities left out are stored with the joint partition (``left_out``).

    The joint partition uses the options :func:`find_communities` ran with
    (consensus, merge, resolution ...), and ``concat`` the graph options of
    :func:`build_graphs`: every partition of a run is found the same way.
    """
    fusion = validated(FusionConfig, "fuse", method=method, layer_weights=dict(layer_weights or {}),
                       skip_structureless=skip_structureless)
    names = study.modality_names()
    weights = dict(zip(names, check_layer_weights(names, fusion.layer_weights)))
    study.record_stage("fusion", fusion.model_dump())
    if len(names) == 1:
        return
    stage_params = study.stage_params
    if "communities" not in stage_params or "graphs" not in stage_params:
        raise ParameterError("fusion uses the options of the graph and community stages, which have not run",
                             fix="run stages.build_graphs and stages.find_communities first",
                             where=str(study.path or "study"))
    # the modalities' own partitions: the choice of modalities is made from them, and the
    # joint partition's decision judges by them
    own = [_needs(study, f"partitions/{n}", "find_communities") for n in names]
    left_out = []
    if fusion.skip_structureless:
        structured = [n for n in names if weights[n] > 0 and study.attrs_of(f"partitions/{n}")["n_communities"] > 1]
        left_out = [n for n in names if weights[n] > 0 and n not in structured] if structured else []
        weights = {n: 0.0 if n in left_out else w for n, w in weights.items()}
    used = [n for n in names if weights[n] > 0]  # a modality of weight 0 takes no part
    options = dict(stage_params["communities"])
    check_options(**{k: options[k] for k in _CHECKED}, n_layers=len(names) if fusion.method == "multiplex" else 1)
    if fusion.method == "concat":
        graph = stage_params["graphs"]
        params = {"k": graph["k"], "n_pcs": graph["n_pcs"], "metric": "cosine", "seed": graph["seed"],
                  "modalities": used, "layer_weights": weights, "fusion": "concat"}
        fp_graph = fingerprint("joint-graph", params, [_needs(study, f"embeddings/{n}", "embed") for n in used])
        if not study.is_current("graphs/joint", fp_graph):
            features = concatenated_features({n: graph_features(study, n) for n in used},
                                             layer_weights={n: weights[n] for n in used})
            study.write_sparse("graphs/joint", knn.knn_graph(features, k=graph["k"], seed=graph["seed"]),
                               fingerprint=fp_graph, params=params)
        layers, upstream, layer_weights_used = {JOINT: study.read_sparse("graphs/joint")}, [fp_graph], None
    else:
        upstream = [_needs(study, f"graphs/{n}", "build_graphs") for n in used]
        layers = {n: study.read_sparse(f"graphs/{n}") for n in used}
        layer_weights_used = {n: weights[n] for n in used}
    fp = fingerprint("joint-partition", options, _rules(options), fusion.method, weights, upstream, own)
    if not study.is_current(f"partitions/{JOINT}", fp):
        _write_partition(study, f"partitions/{JOINT}", layers, options, fp, modalities=used,
                         layer_weights=layer_weights_used, joint=True,
                         attrs={"fusion": fusion.method, "layer_weights": weights, "left_out": left_out})


def _partitions_to_refine(study: Study) -> dict[str, dict[str, float]]:
    """``{partition: {modality: vote weight}}``: each modality's own, and the joint one by its layer weights."""
    names = study.modality_names()
    partitions = {n: {n: 1.0} for n in names}
    if len(names) > 1:
        partitions[JOINT] = dict(study.attrs_of(f"partitions/{JOINT}")["layer_weights"])
    return partitions


def _fitted_encoder(study: Study, name: str, modality: ModalityData, chips: ModalityChips,
                    given: Mapping[str, Encoder]) -> Encoder:
    """The encoder that made ``embeddings/<name>``, fitted as it was (rebuilt and refitted if needed)."""
    key = f"embeddings/{name}"
    fp, attrs = study.fingerprint_of(key), study.attrs_of(key)
    cached = study.fitted_encoders.get(name)
    if cached is not None and cached[0] == fp and given.get(name, cached[1]) is cached[1]:
        return cached[1]
    if name in given:
        encoder = given[name]
    else:
        embed_params = study.stage_params["embed"]
        encoder = choose_encoders(EncoderConfig.model_validate(embed_params["encoder"]), {name: modality},
                                  {k: v for k, v in embed_params["modality_encoders"].items() if k == name}
                                  )[name][0]
    if encoder.fingerprint() != attrs["encoder"]:
        raise ParameterError(
            f"the encoder that embedded {name!r} ({attrs['encoder']}) cannot be rebuilt from the study",
            fix=f"pass it again: stages.refine(study, encoders={{{name!r}: encoder}})", where="encoders")
    fit_encoder(modality, chips, encoder, intensity=tuple(attrs["intensity_scale"] or (0.0, 1.0)),
                seed=attrs.get("seed", 0))
    study.fitted_encoders[name] = (fp, encoder)
    return encoder


def _lightweight(study: Study, name: str, modality: ModalityData, chips: ModalityChips,
                 given: Mapping[str, Encoder]) -> bool:
    """Whether the encoder that made ``embeddings/<name>`` is lightweight (a study written
    before this was recorded rebuilds the encoder to ask it)."""
    recorded = study.attrs_of(f"embeddings/{name}").get("lightweight")
    if recorded is not None:
        return bool(recorded)
    return _fitted_encoder(study, name, modality, chips, given).lightweight


def refine(study: Study, *, factor: int | str = "auto", encoders: Mapping[str, Encoder] | None = None,
           progress: bool = True) -> None:
    """Move every partition's boundaries onto a finer grid: ``refined/<partition>``.

    Chips of the grid's size are laid every ``stride // factor`` pixels; those on a
    boundary of any partition are embedded again (each modality once; pooled from the
    stored per-position features where the encoder pools positions) and take the
    community their nearest chips vote for (:mod:`multimodal_seg.chips.refine`).
    Each modality's own partition is refined by its votes alone; the joint one by
    every modality's, weighted as its layers.  ``factor=1`` does nothing.

    Parameters
    ----------
    factor
        Boundaries are placed on a grid of step ``stride // factor``; ``"auto"`` (default)
        is 2 where the stride is at least 2 px and every encoder is lightweight (no neural
        network), else 1 (:func:`multimodal_seg.chips.refine.refine_factor`).  The factor
        used is recorded.
    encoders
        The encoders used by :func:`embed`, where they cannot be rebuilt from the
        options it recorded (encoders passed to it by hand).

    The graph's neighbours ``k``, PCA and seed are those :func:`build_graphs` used.
    """
    validated(ChipConfig, "refine", refine=factor)
    grid = study.grid()
    modalities = study.modalities()
    if factor == "auto":
        lightweight = all(_lightweight(study, name, modalities[name], grid.per_modality[name], encoders or {})
                          for name in modalities)
        factor = refine_factor(grid.grid, factor, lightweight=lightweight)
    study.record_stage("refine", {"factor": factor})
    target = fine_grid(grid.grid, factor)
    if target is None:
        return
    # a partial overlap was already reported for the grid
    fine = shared_grid(modalities, chip_size=target.size, stride=target.stride, warn=False)
    graph = study.stage_params["graphs"]
    partitions = _partitions_to_refine(study)
    params = {"fine": fine.grid.to_dict(), "k": graph["k"], "n_pcs": graph["n_pcs"], "seed": graph["seed"],
              "votes": VOTE_RULES,
              "partitions": partitions}
    fp = fingerprint("refine", params, {n: _needs(study, f"partitions/{n}", "find_communities") for n in partitions})
    if all(study.is_current(f"refined/{name}", fp) for name in partitions):
        return
    painted, on_boundary = {}, {}
    for name in partitions:
        labels = study.read_array(f"partitions/{name}").reshape(grid.grid.grid_shape)
        painted[name] = grid.grid.chip_labels_to_pixels(labels)
        on_boundary[name] = boundary_chips(painted[name], fine.grid)
    features, rows = {}, {}
    for name in sorted({m for weights in partitions.values() for m in weights}):
        needed = np.logical_or.reduce([on_boundary[p] for p, w in partitions.items() if name in w])
        rows[name] = np.cumsum(needed) - 1  # row of each needed fine chip in the new embeddings
        attrs = study.attrs_of(f"embeddings/{name}")
        reducer, partitioned = _graph_space(study, name, n_pcs=graph["n_pcs"], seed=graph["seed"])
        if not needed.any():  # no boundary in the partitions this modality votes in
            features[name] = (partitioned, partitioned[:0])
            continue
        encoder = _fitted_encoder(study, name, modalities[name], grid.per_modality[name], encoders or {})
        to_embed = ModalityChips(origins=fine.per_modality[name].origins[needed], size=fine.per_modality[name].size)
        new, _ = encode_chips(modalities[name], to_embed, encoder,
                              intensity=tuple(attrs["intensity_scale"] or (0.0, 1.0)), progress=progress,
                              desc="refining boundaries of",
                              positions=study.positions(name, fingerprint=study.fingerprint_of(f"embeddings/{name}")))
        features[name] = (partitioned, reducer.transform(new))
    for name, weights in partitions.items():
        labels = study.read_array(f"partitions/{name}")
        voters = window_voters(labels, painted[name], grid.grid, k=graph["k"])
        boundary = on_boundary[name]
        n_communities = int(labels.max()) + 1
        # each modality votes only among the communities its own partition tells apart (for a
        # modality's own partition: all of them)
        votes = sum(weight * pooled_votes(
            neighbour_votes(features[m][0], voters, features[m][1][rows[m][boundary]], k=graph["k"]),
            community_groups(labels, study.read_array(f"partitions/{m}"), n_communities))
            for m, weight in weights.items()) / sum(weights.values())
        refined = refined_chip_labels(painted[name], fine.grid, boundary, votes)
        study.write_array(f"refined/{name}", refined, fingerprint=fp, fine=fine.grid.to_dict(),
                          boundary_chips=int(boundary.sum()),
                          partition=study.fingerprint_of(f"partitions/{name}"))


def _painted(study: Study, grid: SharedGrid, names: list[str], *,
             step: int = 1) -> tuple[dict[str, np.ndarray], ChipGrid | None]:
    """Each partition painted on the grid's pixels (from its refined labels where refinement
    ran on its current labels, keeping every community its chips paint:
    :func:`~multimodal_seg.chips.refine.keep_communities`), and the fine grid they were
    painted from (``None``: the chips').  ``step`` > 1: on every ``step``-th pixel only,
    starting half a step in (the positions placement reads)."""
    fine = _refined_grid(study, grid, names)
    at = {} if step == 1 else dict(zip(("rows", "cols"), (np.arange(step // 2, n, step) for n in grid.grid.shape)))
    shape = grid.grid.grid_shape

    def from_chips(name: str) -> np.ndarray:
        return grid.grid.chip_labels_to_pixels(study.read_array(f"partitions/{name}").reshape(shape), **at)

    if fine is None:
        return {n: from_chips(n) for n in names}, None
    painted = {}
    for name in names:
        painted[name] = fine.chip_labels_to_pixels(study.read_array(f"refined/{name}"), **at)
        # the chips' painting is needed only where the fine grid's lost a community of the chips
        held = study.read_array(f"partitions/{name}")
        if np.setdiff1d(np.unique(held[held >= 0]), np.unique(painted[name])).size:
            painted[name] = keep_communities(painted[name], from_chips(name))
    return painted, fine


def _with_placed(painted: np.ndarray, placed: np.ndarray, step: int) -> np.ndarray:
    """A painted map ``(rows, cols)`` with the moves of the placed positions ``placed`` (every
    ``step``-th position, starting half a step in: :func:`place_positions`), each standing for
    its ``step x step`` block (the last ones for what is left); ``painted`` is changed in place."""
    first = step // 2
    # the blocks' edges: step pixels each, the last whatever is left
    edges = [np.r_[np.full(n - 1, step), length - (n - 1) * step] for n, length in zip(placed.shape, painted.shape)]
    moved = placed != painted[first::step, first::step]
    np.copyto(painted, np.repeat(np.repeat(placed, edges[0], axis=0), edges[1], axis=1),
              where=np.repeat(np.repeat(moved, edges[0], axis=0), edges[1], axis=1))
    return painted


def _painted_source(study: Study, name: str, fine: ChipGrid | None) -> str:
    """The fingerprint of what partition ``name`` is painted from."""
    return study.fingerprint_of(f"refined/{name}" if fine is not None else f"partitions/{name}")


def _placed_is_current(study: Study, name: str, fine: ChipGrid | None) -> bool:
    """Whether ``placed/<name>`` is complete, placing is on, and it was placed from what the
    partition is painted from now."""
    key = f"placed/{name}"
    if not (bool(study.stage_params.get("place", {}).get("enabled")) and key in study.group
            and bool(study.fingerprint_of(key))):
        return False
    attrs = study.attrs_of(key)
    # a map placed under other rules is stored otherwise (rules 5: the placed positions only)
    return attrs.get("source") == _painted_source(study, name, fine) and attrs.get("rules") == PLACEMENT_RULES


def _position_offset(grid: SharedGrid, name: str) -> tuple[int, int] | None:
    """Where the grid's pixel (0, 0) lies in modality ``name``'s scan, when the modality's
    positions are the grid's pixels (same chip size, chips shifted by one offset); else ``None``."""
    chips = grid.per_modality[name]
    if chips.size != grid.grid.size or chips.origins.shape != grid.grid.origins.shape:
        return None
    shift = chips.origins - grid.grid.origins
    if len(shift) == 0 or np.any(shift != shift[0]):
        return None
    return int(shift[0, 0]), int(shift[0, 1])


def _image_coordinates(grid: SharedGrid, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The pixel coordinates in modality ``name`` of the centre of each of the grid's rows and
    columns: ``(rows,)`` and ``(cols,)`` (a modality's chips are the grid's, scaled and shifted)."""
    chips = grid.per_modality[name]
    scale = chips.size / grid.grid.size
    shift = np.median(chips.origins - scale * grid.grid.origins, axis=0)
    rows, cols = grid.grid.shape
    return (shift[0] + (np.arange(rows) + 0.5) * scale - 0.5, shift[1] + (np.arange(cols) + 0.5) * scale - 0.5)


def _position_features(study: Study, grid: SharedGrid, name: str, modality: ModalityData, step: int,
                       encoders: Mapping[str, Encoder], progress: bool, *, lattice: Lattice | None = None) -> np.ndarray:
    """Features of modality ``name`` at every ``step``-th position of the grid (starting half a
    step in): ``(rows, cols, d)``; an image's are its lattice's (``lattice``: the image's)."""
    first = step // 2
    if modality.kind == "image":
        rows, cols = _image_coordinates(grid, name)
        return lattice_features(modality.data, rows[first::step], cols[first::step], lattice=lattice)
    attrs = study.attrs_of(f"embeddings/{name}")
    encoder = _fitted_encoder(study, name, modality, grid.per_modality[name], encoders)
    r0, c0 = _position_offset(grid, name)
    rows, cols = grid.grid.shape
    at_rows, at_cols = np.arange(first, rows, step) + r0, np.arange(first, cols, step) + c0
    origins = np.stack(np.meshgrid(at_rows, at_cols, indexing="ij"), -1).reshape(-1, 2)
    values, _ = encode_chips(modality, ModalityChips(origins=origins, size=1), encoder,
                             intensity=tuple(attrs["intensity_scale"] or (0.0, 1.0)), progress=progress,
                             desc="placing boundary positions of",
                             positions=study.positions(name, fingerprint=study.fingerprint_of(f"embeddings/{name}")))
    return values.reshape(len(at_rows), len(at_cols), -1)


def placement_radius(grid: SharedGrid, fine: ChipGrid | None, step: int, *, by_positions: bool) -> int:
    """How far (in placed positions, at least 1) a boundary may move when placed: the stride of
    the grid the partition is painted from (``fine``, where refinement ran), divided by ``step``.

    ``by_positions``: every modality the partition was made from places it by its own signal at
    each position (spectrum images, 4D-STEM; no image).  Such a partition's refined boundary is
    its own chips' vote, which the same signals read position by position may correct over the
    coarse grid's stride.  Where an image took part, its evidence (read over a lattice period,
    or not at all) is in the refined boundary but not in the placement, and the band stays at
    the refined stride so the placing signals do not override it (docs/design.md, "Placement's
    band").
    """
    painted_from = grid.grid if by_positions or fine is None else fine
    return max(1, round(painted_from.stride / step))


def place_positions(study: Study, *, enabled: bool = True, encoders: Mapping[str, Encoder] | None = None,
                    progress: bool = True) -> None:
    """Place the scan positions near every partition's boundaries by their own signals:
    ``placed/<partition>`` (:mod:`multimodal_seg.chips.placement`).

    Modalities with a signal of their own at each position of the grid take part: spectrum
    images and 4D-STEM scans whose positions are the grid's (each position encoded alone, a
    one-position chip, or pooled from the stored per-position features where the encoder pools
    positions), and images with a lattice (the local amplitudes of their lattice reflections
    and mean intensity over one lattice period, :func:`multimodal_seg.chips.texture.lattice_features`;
    an image without a lattice has no scale to read its pixels at and does not take part).
    Each modality's own partition is placed by its own features; the joint one by those of
    every taking modality it was made from, each saying nothing about communities its own
    partition does not tell apart.  Positions within the painted grid's stride of a boundary may
    move: the refined grid's where refinement ran, except for a partition whose every modality
    places it position by position (no image among them), whose own signals may undo the
    refinement's chip-level vote over the coarse grid's stride (:func:`placement_radius`).
    A grid of more than ``MAX_PLACED_EDGE`` positions a side is placed on every ``step``-th position (starting half
    a step in), each standing for its ``step x step`` block.  ``placed/<partition>`` holds the
    labels of the placed positions, ``(rows, cols)`` of the grid's or ``step`` times fewer each
    way (attrs: ``step``); :func:`collect` paints the whole map.  Nothing is written for a
    partition no modality takes part in; ``enabled=False`` writes nothing, and the maps are
    painted as they are.
    """
    study.record_stage("place", {"enabled": bool(enabled)})
    if not enabled:
        return
    grid = study.grid()
    modalities = study.modalities()
    partitions = _partitions_to_refine(study)
    lattices = {n: study.lattice(n) for n, m in modalities.items() if m.kind == "image"}
    taking = {n for n, m in modalities.items()
              if (lattices[n].period is not None if m.kind == "image" else _position_offset(grid, n) is not None)}
    takers, made_from = {}, {}
    for partition, weights in partitions.items():
        made_from[partition] = [m for m, w in weights.items() if w > 0]
        ms = [m for m in made_from[partition] if m in taking]
        # an image's lattice is read over a lattice period, a spectrum at each position: where a
        # modality measured position by position takes part it places the boundary more sharply,
        # and the image's blurred evidence would only pull it (docs/design.md)
        measured = [m for m in ms if modalities[m].kind != "image"]
        if ms:
            takers[partition] = sorted(measured or ms)
    if not takers:
        return
    step = max(1, -(-max(grid.grid.shape) // MAX_PLACED_EDGE))
    # painted on the placed positions only: the whole map is painted once, when collected
    painted, fine = _painted(study, grid, list(partitions), step=step)
    # placed by every modality it was made from, none an image: its own signals, position by position
    by_positions = {name: set(ms) == set(made_from[name]) and all(modalities[m].kind != "image" for m in ms)
                    for name, ms in takers.items()}
    radius = {name: placement_radius(grid, fine, step, by_positions=by_positions[name]) for name in takers}
    fp = fingerprint("place", {"radius": radius, "step": step, "rules": PLACEMENT_RULES, "takers": takers},
                     {n: _painted_source(study, n, fine) for n in partitions})
    if all(study.is_current(f"placed/{n}", fp) for n in takers):
        return
    features = {name: _position_features(study, grid, name, modalities[name], step, encoders or {}, progress,
                                         lattice=lattices.get(name))
                for name in sorted({m for ms in takers.values() for m in ms})}
    for name, ms in takers.items():
        labels = painted[name]
        n_communities = int(labels.max()) + 1
        groups = {m: community_groups(labels.ravel(), painted[m].ravel(), n_communities) for m in ms if m != name}
        placement = place_boundary_positions(labels, {m: features[m] for m in ms}, groups=groups,
                                             radius=radius[name])
        study.write_array(f"placed/{name}", placement.labels, fingerprint=fp, modalities=ms, radius=radius[name],
                          step=step, rules=PLACEMENT_RULES, source=_painted_source(study, name, fine),
                          **placement.record())


# --------------------------------------------------------------------------- collect


def _refined_grid(study: Study, grid: SharedGrid, names: list[str]) -> ChipGrid | None:
    """The fine grid when every partition has refined labels made from its current labels."""
    if study.stage_params.get("refine", {}).get("factor", 1) <= 1:
        return None
    keys = [f"refined/{n}" for n in names]
    if not all(k in study.group and study.fingerprint_of(k) for k in keys):
        return None
    if any(study.attrs_of(k).get("partition") != study.fingerprint_of(f"partitions/{n}") for k, n in zip(keys, names)):
        return None
    fine = study.attrs_of(keys[0])["fine"]
    return ChipGrid(tuple(fine["shape"]), fine["size"], fine["stride"])


def _display(study: Study, modalities: dict[str, ModalityData], grid: SharedGrid) -> tuple[str, Any, list[Axis]]:
    """The picture to paint on: the finest image modality (lazy), else the reference's total
    counts per position (in memory), inside the grid's region.

    The total counts come from the per-position sums the embed stage kept for encoders that
    pool positions, so the scan is not read again (on the 8.9 GB cube, each read took 4.5 s);
    otherwise they are summed here, once.
    """
    images = [n for n, m in modalities.items() if m.kind == "image"]
    name = min(images, key=lambda n: modalities[n].axes[0].scale) if images else grid.reference
    mod = modalities[name]
    frame = scan_frame(mod, grid.units)
    y0, y1, x0, x1 = grid.region
    r0, r1 = (int(round((v - frame.origin[0]) / frame.step[0])) for v in (y0, y1))
    c0, c1 = (int(round((v - frame.origin[1]) / frame.step[1])) for v in (x0, x1))
    data = mod.data[r0:r1, c0:c1]
    if mod.kind != "image":
        totals = study.position_totals(name, fingerprint=study.fingerprint_of(f"embeddings/{name}"))
        data = (totals[r0:r1, c0:c1] if totals is not None
                else np.asarray(data.sum(axis=tuple(range(2, data.ndim)), dtype=np.float64)))
    axes = [Axis(a.name, n, a.scale, a.offset + start * a.scale, a.units)
            for a, n, start in zip(mod.axes[:2], data.shape, (r0, c0))]
    return name, data, axes


def _spectral_lines(signals: dict[str, np.ndarray], modalities: dict[str, ModalityData]) -> dict[str, dict]:
    lines = {}
    for name, mean in signals.items():
        if modalities[name].kind == "spectrum":
            meta = modalities[name].metadata
            table = line_table(mean, modalities[name].axes[2], beam_energy=meta.get("beam_energy_kev"),
                               beam_energy_from=meta.get("beam_energy_from", "file"), elements=meta.get("elements"),
                               elements_from=meta.get("elements_from", "file"))
            if table:
                lines[name] = table
    return lines


def _config_of(study: Study) -> SegmentConfig:
    """The run's configuration, as the stages recorded it."""
    stage = study.stage_params
    communities = dict(stage["communities"])
    seed = communities.pop("seed")
    return SegmentConfig.model_validate({
        "chips": {**stage["chips"], "refine": stage.get("refine", {}).get("factor", 1),
                  "place_positions": stage.get("place", {}).get("enabled", False)},
        "encoder": stage["embed"]["encoder"],
        "modality_encoders": stage["embed"]["modality_encoders"],
        "graph": {"k": stage["graphs"]["k"], "n_pcs": stage["graphs"]["n_pcs"]},
        "communities": communities,
        "fusion": stage.get("fusion", {}),
        "seed": seed,
    })


def _warn_unpainted(name: str, labels: np.ndarray, painted: np.ndarray, chip: int) -> None:
    """Warn of the communities of partition ``name`` that its painted map shows nowhere."""
    lost = unpainted_communities(labels, painted)
    if not lost:
        return
    chips = int(np.isin(labels, lost).sum())
    many = len(lost) > 1
    warnings.warn(f"partitions/{name}: {'communities' if many else 'community'} {', '.join(map(str, lost))} "
                  f"({chips} chip{'s' if chips != 1 else ''}) {'are' if many else 'is'} painted on no position: "
                  f"{'regions' if many else 'a region'} thinner than a chip ({chip} px), which the vote of "
                  f"overlapping chips paints over. {'They stay' if many else 'It stays'} in chip_labels and in "
                  f"the community table (area 0); smaller chips (chip_size) may resolve {'them' if many else 'it'}.",
                  UserWarning, stacklevel=3)


def collect(study: Study, *, out: str | Path | None = None) -> Segmentation:
    """The :class:`Segmentation` of a study whose stages have run; with ``out``, its files too.

    Reads every partition (refined ones where :func:`refine` ran), paints the main
    one (joint with several modalities) on the finest image, or on the reference
    scan's total counts, and adds descriptors, each modality's mean signals and
    spectral lines, the agreement between modalities, and the provenance record
    (config, versions, seed, sources, encoders, grid, fusion, what was refined).
    """
    names = study.modality_names()
    main = main_partition(study)
    _needs(study, f"partitions/{main}", "fuse" if main == JOINT else "find_communities")
    config = _config_of(study)
    modalities = study.modalities()
    grid = study.grid()
    shape = grid.grid.grid_shape
    partitions = {n: study.read_array(f"partitions/{n}") for n in names}
    joint = study.read_array(f"partitions/{main}")
    to_paint = [JOINT, *names] if main == JOINT else names
    scan_labels, fine = _painted(study, grid, to_paint)
    placed = {n: study.attrs_of(f"placed/{n}") for n in to_paint if _placed_is_current(study, n, fine)}
    scan_labels.update({n: _with_placed(scan_labels[n], study.read_array(f"placed/{n}"), attrs["step"])
                        for n, attrs in placed.items()})
    for name in to_paint:
        _warn_unpainted(name, partitions.get(name, joint), scan_labels[name], grid.grid.size)
    consistency = None
    if main == JOINT:
        matrices = consistency_matrices({**partitions, JOINT: joint})
        consistency = {**matrices, "disagreement": disagreement(partitions, joint).tolist(),
                       "grid_shape": list(shape)}
    display_name, image, axes = _display(study, modalities, grid)
    pixel_labels = labels_on(axes, grid, scan_labels[main], modalities[grid.reference].axes[:2]).astype(np.int32)
    signals = {n: community_mean_signals(m.data, grid.per_modality[n], joint)
               for n, m in modalities.items() if m.kind != "image"}
    seed = config.seed
    crystallinity = (community_crystallinity(modalities[display_name].data, grid.per_modality[display_name],
                                             joint, seed=seed)
                     if modalities[display_name].kind == "image" else np.full(int(joint.max()) + 1, np.nan))
    part = study.attrs_of(f"partitions/{main}")
    embed_params = study.stage_params["embed"]
    provenance = run_record(config.model_dump(), extra={
        "seed": seed,
        "sources": {n: source_record(m)["path"] for n, m in modalities.items()},
        "reader_options": {n: m.metadata.get("reader_options", {}) for n, m in modalities.items()},
        "signals": {n: record["signal"] for n, m in modalities.items()
                    if "signal" in (record := source_record(m))},
        "encoders": {n: study.attrs_of(f"embeddings/{n}")["encoder"] for n in names},
        "encoder_choice": "; ".join(embed_params["choice"][n] for n in names),
        "grid": grid.to_dict(),
        "n_chips": grid.grid.n_chips,
        "fusion": config.fusion.method if main == JOINT else None,
        "partitions": {n: {key: study.attrs_of(f"partitions/{n}").get(key)
                           for key in ("n_communities", "modularity", "params", "runs", "run_counts", "close_call",
                                       "decision", "left_out")}
                       for n in to_paint},
        "placed": {n: {**{key: attrs[key] for key in ("modalities", "radius", "moved", "band", "map_error")},
                       "step": attrs.get("step", 1)}
                   for n, attrs in placed.items()} or None,
        "refined": None if fine is None else {
            "fine_grid": fine.to_dict(),
            "boundary_chips": {n: study.attrs_of(f"refined/{n}")["boundary_chips"] for n in to_paint}},
        "n_communities": part["n_communities"],
        "modularity": part["modularity"],
        "layout_version": study.group.attrs["layout_version"],
        "warnings": [],  # segment() fills in the warnings of the whole run
        "study": str(study.path) if study.path else None,
    })
    study.record(**provenance, consistency=None if consistency is None else matrices)
    graph = (study.read_sparse(f"graphs/{names[0]}") if main != JOINT else
             study.read_sparse("graphs/joint") if config.fusion.method == "concat" else
             weighted_sum({n: study.read_sparse(f"graphs/{n}") for n in names},
                          study.attrs_of(f"partitions/{JOINT}")["layer_weights"]))
    seg = Segmentation(
        chip_labels=joint.reshape(shape),
        pixel_labels=pixel_labels,
        embeddings=np.hstack([study.read_array(f"embeddings/{n}") for n in names]),
        graph=graph,
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
        lines=_spectral_lines(signals, modalities),
        modality_labels={n: p.reshape(shape) for n, p in partitions.items()},
        scan_labels=scan_labels,
    )
    if out is not None:
        seg.save(out)
    return seg
