"""``mmseg bench``: run the project and its peers on the same data, write JSON and a report.

Parts (each can be run alone with ``parts=``):

``quality``
    Every method of :mod:`multimodal_seg.bench.methods` on the HAADF phantoms and the
    labelled SEM sets, scored at pixel and chip level (:mod:`multimodal_seg.bench.quality`).
``stability``
    The project's default across seeds, under added noise and under a half-chip shift
    (:mod:`multimodal_seg.bench.stability`) on a phantom and labelled images.
``consistency``
    Cross-modal agreement on the multimodal phantom (with its truth) and on the real
    EDS spectrum images with their survey images.
``speed``
    Encoders' chips per second against their FLOP count and the machine's peak rate,
    the pipeline's overhead over the encoder's forward pass, graph plus Leiden time
    against the number of chips, and peak memory (:mod:`multimodal_seg.bench.speed`).
``families``
    The phantom families with random parameters (:mod:`multimodal_seg.synthetic.families`),
    many draws each, split into tuning and held-out seeds: the project's joint and
    per-modality partitions, GraphEM over its cutoffs and HyperSpy with and without
    the number of regions (:mod:`multimodal_seg.bench.families`).
``chip_scale``
    ARI against chip size, from half to twice the automatic size, on draws of the
    image families and on labelled images (:mod:`multimodal_seg.bench.chip_scale`).
``separability``
    Whether each labelled image's two largest classes are two populations at all, by the
    project's own test of the number of communities, on its chips and on image-shaped
    segments, with the chip-level ceiling (:mod:`multimodal_seg.bench.separability`).

Results are written after every part (``results.json``, then ``report.md`` and the
figures), atomically, so a long run can be read while it goes.  A failing case is
recorded with its error and the others still run.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import InputError, ParameterError
from ..provenance import package_versions, to_json, write_text_atomic
from . import PARTS, chip_scale, datasets, families, methods, quality, separability, stability


#: Pairs of a forward pass and a ``segment()`` run timed one right after the other (speed part).
PAIRS = 5

#: Run sizes: (full, quick).
SIZES = {
    "phantom_seeds": ([0, 1, 2], [0]),
    "labelled_images": (None, 2),  # None: every image of the set
    "stability_seeds": ([0, 1, 2, 3, 4], [0, 1, 2]),
    "stability_images": (3, 1),  # labelled images per set in the stability part
    "multimodal_seeds": ([0, 1, 2], [0]),
    "multimodal_scan": (64, 64),
    "graph_chips": ([1000, 4000, 16000, 32000, 64000], [1000, 4000, 16000]),
    "speed_image": (2048, 1024),
    "speed_scan": (64, 32),  # multimodal phantom scan for the spectrum and diffraction encoders
    "family_draws": (30, 2),  # draws per phantom family: seeds 0-9 tune, 10-29 held out (quick: 0 and 10)
    "family_fresh": (10, 0),  # more draws per family from seeds drawn at random for the run
    "chip_scale_draws": ([0, 1], [0]),  # seeds of each image family in the chip-scale part
    "chip_scale_images": (2, 1),  # labelled images per set in the chip-scale part
    "chip_factors": (chip_scale.FACTORS, (0.5, 1.0, 2.0)),
}
_RESNET = {"name": "resnet50", "weights": "random", "options": {"resize": None, "layer": "layer4"}}
#: Image encoders timed in the speed part: (encoder config, stride), stride ``"chip"`` for
#: chips side by side (the convnet) or ``None`` for the default grid's.  ResNet50 runs on
#: the chips at their size (no resizing to 224 px) to its last block, with seeded random
#: weights (the same network and cost as trained ones).  Compiled networks (option
#: ``"compile": True``) are timed in full runs only: compilation takes minutes on a CPU.
SPEED_IMAGE_ENCODERS = (({"name": "fourier"}, None), (_RESNET, "chip"),
                        ({**_RESNET, "options": {**_RESNET["options"], "compile": True}}, "chip"))
#: Spectrum and diffraction encoders timed in the speed part: (modality, encoder, options).
#: The convnets have no trained weights yet: seeded random ones time the same network.
#: Compiled convnets (``"compile": True``) are timed in full runs only: compilation takes minutes.
SPEED_MODALITY_ENCODERS = (("eels", "spectrum-pca", {}), ("eels", "spectrum-cnn", {"weights": "random"}),
                           ("eels", "spectrum-cnn", {"weights": "random", "compile": True}),
                           ("diffraction", "diffraction-profiles", {}),
                           ("diffraction", "diffraction-cnn", {"weights": "random"}),
                           ("diffraction", "diffraction-cnn", {"weights": "random", "compile": True}))

#: Real spectrum images with a survey image in the same file (under DATA_DIR/multimodal):
#: name -> (file, image modality name, spectrum reader options).
REAL_EDS = {
    "bruker P45 (SEM BSE + EDS)": ("bruker_P45_SEM_BSE_EDS/P45_the_default_job.bcf", "bse", {}),
    "bruker chevkinite (SEM BSE + EDS)": (
        "bruker_chevkinite_SEM_EDS/30x30_instructively_packed_16bit_compressed.bcf", "bse", {}),
    "velox Nb interface (STEM HAADF + EDS)": (
        "velox_Nb_interface_STEM_EDS/fei_SI_SuperX-HAADF_20frames_10x50.emd", "haadf", {}),
    "jeol FeS (TEM image + EDS)": ("jeol_FeS_TEM_EDS/rawdata.ASW", "image",
                                   {"bin_channels": 32, "bin_scan": 4}),
}


def _log(msg: str, echo: Callable[[str], None] | None) -> None:
    if echo is not None:
        echo(msg)


def _guard(record: dict, fn: Callable[[], dict], echo: Callable[[str], None] | None) -> dict:
    """Run one case; an exception is recorded in ``record`` instead of ending the run."""
    try:
        record.update(fn())
    except Exception as exc:  # one failing case must not lose the others
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc(limit=5)
        _log(f"  error: {record['error']}", echo)
    return record


def machine() -> dict[str, Any]:
    """CPU, core count, memory, torch threads and device: what the numbers depend on."""
    import torch

    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                            # BLAS/OpenMP thread limits: threaded k-means and SVDs of small matrices
                            # run many times slower on a busy 2-core machine.
                            "thread_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                                      "MKL_NUM_THREADS") if k in os.environ}}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                           if line.startswith("model name"))
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        info["memory_gib"] = round(int(mem) / 2**20, 1)
    except (OSError, StopIteration, IndexError, ValueError):
        info["cpu"] = platform.processor() or "unknown"
    return info


# --------------------------------------------------------------------------- parts


def labelled_sets(data_dir: Path | None, quick: bool, phantom_size: int,
                  n_images: int | None = None) -> tuple[list, list[str]]:
    """The benchmark images and the names of labelled sets skipped for want of data."""
    pick = 1 if quick else 0
    items = datasets.phantom_images(SIZES["phantom_seeds"][pick], phantom_size)
    skipped = []
    n_images = n_images or SIZES["labelled_images"][pick]
    for name in datasets.LABELLED_SETS:
        found = datasets.labelled_images(data_dir, name, n_images) if data_dir else []
        if found:
            items += found
        else:
            skipped.append(name)
    return items, skipped


def run_quality(items: list, method_names: list[str], echo=None) -> list[dict]:
    records = []
    for item in items:
        grid = methods.default_grid(item.image)
        for name in method_names:
            _log(f"quality: {item.dataset}/{item.name}: {name}", echo)
            run = methods.METHODS[name][1]

            def case(run=run, item=item, grid=grid) -> dict:
                outcome = run(item.image, item.n_classes, 0)
                if outcome.variants:  # several settings in one run: one record each, below
                    return {"seconds": outcome.seconds, "variants": outcome.variants}
                return {"seconds": outcome.seconds, "detail": outcome.detail,
                        "scores": quality.score(outcome.pixel_labels, item.truth, item.n_classes, grid)}

            record = _guard({"dataset": item.dataset, "image": item.name, "method": name}, case, echo)
            variants = record.pop("variants", {})
            records += [{"dataset": item.dataset, "image": item.name, "method": variant, "variant_of": name,
                         "seconds": record["seconds"],
                         "scores": quality.score(labels, item.truth, item.n_classes, grid)}
                        for variant, labels in variants.items()] or [record]
        records.append({"dataset": item.dataset, "image": item.name, "method": quality.CHIP_CEILING,
                        "seconds": 0.0, "scores": quality.chip_ceiling(item.truth, item.n_classes, grid)})
    return records


#: Project settings whose stability is measured: name -> segment() options.
STABILITY_SETTINGS = {"mmseg-default": {}, "mmseg-single-run": {"consensus": 0}}


def _labeller(options: dict, runs: dict[str, list] | None = None) -> Callable[[np.ndarray, int], np.ndarray]:
    """``segment()`` with ``options`` as ``(image, seed) -> pixel labels``.  With ``runs`` given,
    each run's painted partition adds to its lists: ``margins``, the decision's margin
    (:func:`multimodal_seg.graphs.decide.decision_margin`, ``None`` without a decision);
    ``run_counts``, the consensus runs' numbers of communities; ``close_calls``, whether that
    number was a close call (:attr:`multimodal_seg.graphs.communities.Consensus.close_call`)."""
    def labels(image: np.ndarray, seed: int) -> np.ndarray:
        from ..graphs.decide import decision_margin
        from ..pipeline.segment import segment
        from ..provenance import painted_partition

        seg = segment(image, seed=seed, progress=False, **options)
        if runs is not None:
            record = painted_partition(seg.provenance)
            decision = record.get("decision")
            runs["margins"].append(decision_margin(decision) if decision else None)
            runs["run_counts"].append(record.get("run_counts"))
            runs["close_calls"].append(bool(record.get("close_call")))
        return seg.pixel_labels
    return labels


def stability_items(items: list, per_set: int) -> list:
    """The images the stability part reads: the first phantom and the first ``per_set`` of each
    labelled set (in the order read: sorted, or spread over the set with ``n_images``)."""
    chosen = [i for i in items if i.dataset == "phantom"][:1]
    for name in datasets.LABELLED_SETS:
        chosen += [i for i in items if i.dataset == name][:per_set]
    return chosen


def run_stability(items: list, quick: bool, echo=None, *, per_set: int | None = None) -> list[dict]:
    pick = 1 if quick else 0
    rows = []
    for item in stability_items(items, per_set or SIZES["stability_images"][pick]):
        chip = methods.default_grid(item.image).size
        for name, options in STABILITY_SETTINGS.items():
            _log(f"stability: {item.dataset}/{item.name}: {name}", echo)

            def case(item=item, chip=chip, options=options) -> dict:
                runs: dict[str, list] = {"margins": [], "run_counts": [], "close_calls": []}  # each seed's
                seeds = stability.seed_agreement(_labeller(options, runs), item.image,
                                                 SIZES["stability_seeds"][pick])
                return {"seeds": {**seeds, **runs},
                        **stability.perturbation_agreement(_labeller(options), item.image, chip)}

            rows.append(_guard({"dataset": item.dataset, "image": item.name, "method": name}, case, echo))
    return rows


def run_consistency(data_dir: Path | None, quick: bool, echo=None) -> dict:
    from ..demo import run_multimodal_demo
    from ..pipeline.segment import segment

    pick = 1 if quick else 0
    out: dict[str, Any] = {"phantom": [], "real": [], "scan": SIZES["multimodal_scan"][pick]}
    for seed in SIZES["multimodal_seeds"][pick]:
        _log(f"consistency: multimodal phantom seed {seed}", echo)

        def case(seed=seed) -> dict:
            from ..metrics import agreement
            from ..synthetic.multimodal import multimodal_phantom
            from .peers import hyperspy_kmeans_spectrum

            phantom = multimodal_phantom((out["scan"], out["scan"]), seed=seed)
            seg, scores = run_multimodal_demo(None, seed=seed, progress=False, phantom=phantom)
            # The EELS user's route for comparison: HyperSpy decomposition + k-means, told
            # the number of regions, on the same spectrum image.
            peer = hyperspy_kmeans_spectrum(np.asarray(phantom.eels), len(phantom.region_names), seed=seed)
            return {"truth_scores": scores, "consistency": _matrices(seg.consistency),
                    "grid": seg.provenance["grid"],
                    "peer_scores": {"hyperspy-kmeans (eels)": agreement(peer, phantom.truth)}}

        out["phantom"].append(_guard({"seed": seed}, case, echo))
    folder = Path(data_dir) / "multimodal" if data_dir else None
    for name, (rel, image_name, options) in REAL_EDS.items():
        path = folder / rel if folder else None
        if path is None or not path.exists():
            out["real"].append({"name": name, "skipped": "file not found"})
            continue
        _log(f"consistency: {name}", echo)

        def case(path=path, image_name=image_name, options=options) -> dict:
            seg = segment({image_name: path, "eds": (path, options)}, seed=0, progress=False)
            return {"consistency": _matrices(seg.consistency), "grid": seg.provenance["grid"],
                    "n_communities": {n: int(np.unique(lab[lab >= 0]).size)
                                      for n, lab in seg.modality_labels.items()} | {"joint": seg.n_communities}}

        out["real"].append(_guard({"name": name, "file": rel}, case, echo))
    return out


def run_chip_scale(items: list, quick: bool, echo=None) -> list[dict]:
    """ARI against chip size on draws of every image family and on labelled images."""
    from ..synthetic.families import IMAGE_FAMILIES, Draw, draw

    pick = 1 if quick else 0
    cases = []
    for family in IMAGE_FAMILIES:
        for seed in SIZES["chip_scale_draws"][pick]:
            cases.append((f"family:{family}", f"{family}-seed{seed}",
                          lambda family=family, seed=seed: draw(family, seed)))
    for name in datasets.LABELLED_SETS:
        for item in [i for i in items if i.dataset == name][: SIZES["chip_scale_images"][pick]]:
            cases.append((name, item.name, lambda item=item: item))
    rows = []
    for group, name, get in cases:
        _log(f"chip_scale: {group}/{name}", echo)

        def case(get=get) -> dict:
            specimen = get()
            if isinstance(specimen, Draw):  # a phantom family draw: its one image
                (modality,) = specimen.modalities.values()
                image, truth = np.asarray(modality.data, dtype=np.float32), np.asarray(specimen.truth)
            else:
                image, truth = specimen.image, specimen.truth
            return chip_scale.chip_sweep(image, truth, factors=SIZES["chip_factors"][pick])

        rows.append(_guard({"group": group, "image": name}, case, echo))
    return rows


def run_separability(items: list, echo=None) -> list[dict]:
    """The one-population test of the two largest classes on every labelled image (and phantom)."""
    rows = []
    for item in items:
        _log(f"separability: {item.dataset}/{item.name}", echo)
        rows.append(_guard({"group": item.dataset, "image": item.name},
                           lambda item=item: separability.separability(item.image, item.truth, item.n_classes),
                           echo))
    return rows


def _matrices(consistency: dict) -> dict:
    return {k: consistency[k] for k in ("names", "ari", "nmi", "vi")}


def run_speed(quick: bool, echo=None) -> dict:
    from ..chips.grid import ChipGrid, iter_chips
    from ..config import EncoderConfig
    from ..synthetic.phantoms import haadf_phantom
    from ..encoders.choice import image_encoder
    from ..pipeline.segment import segment
    from . import speed

    pick = 1 if quick else 0
    out: dict[str, Any] = {}
    _log("speed: peak floating-point rate", echo)
    out["peak"] = speed.peak_flops()
    peaks = {"cpu": out["peak"]}  # an encoder on a GPU is measured against the GPU's peak
    size = SIZES["speed_image"][pick]
    image = haadf_phantom((size, size), seed=0).image.astype(np.float32)
    out["image_shape"] = [size, size]
    low, high = np.percentile(image, [1, 99])
    scaled = np.clip((image - low) / (high - low), 0, 1).astype(np.float32)
    out["encoders"] = []
    for encoder_config, stride in SPEED_IMAGE_ENCODERS:
        name = encoder_config["name"]
        compiled = bool(encoder_config.get("options", {}).get("compile"))
        if compiled and quick:
            continue
        _log(f"speed: {name}{', compiled' if compiled else ''}", echo)
        record: dict[str, Any] = {"encoder": name, "compiled": compiled}

        def case(encoder_config=encoder_config, stride=stride, compiled=compiled) -> dict:
            grid = methods.default_grid(image)
            if stride == "chip":
                grid = ChipGrid(image.shape, grid.size, grid.size)
            chips = np.concatenate([c for _, c in iter_chips(scaled, grid.origins, grid.size)])
            encoder, _ = image_encoder(EncoderConfig(**encoder_config))
            encoder.fit(chips[: min(len(chips), 512)])
            batch = pipeline_batch(chips)
            forward = _forward_pass(encoder, chips, repeats=1 if quick else 3, peaks=peaks, batch=batch)
            timed = _time_pipeline(lambda: segment(image, seed=0, progress=False, stride=grid.stride,
                                                   config={"encoder": encoder_config}),
                                   lambda: speed.encode_in_batches(encoder, chips, batch),
                                   repeats=1 if quick else PAIRS)
            processes = {"compile_processes": speed.compilation_across_processes(
                name, {"weights": encoder_config.get("weights"), **encoder_config["options"]},
                (encoder.batch_size, *chips.shape[1:]))} if compiled else {}
            return {"forward": forward, "n_chips": grid.n_chips, "chip": grid.size, "stride": grid.stride,
                    **timed, **_overheads(timed, forward, grid.n_chips, grid.n_chips + timed["refined_chips"]),
                    **processes}

        out["encoders"].append(_guard(record, case, echo))
    out.update(_modality_encoder_speed(SIZES["speed_scan"][pick], quick, peaks, echo))
    out["device_peaks"] = {device: peak for device, peak in peaks.items() if device != "cpu"}
    _log("speed: graph and Leiden against the number of chips", echo)
    out["graph"] = _guard({}, lambda: {"rows": speed.graph_scaling(SIZES["graph_chips"][pick])}, echo)
    return out


def pipeline_batch(chips: np.ndarray) -> int:
    """Chips per ``encode`` call as ``segment()`` hands these chips ``(n, ...)`` to an encoder
    (:func:`multimodal_seg.pipeline.embedding.chip_batch`), as float32."""
    from ..pipeline.embedding import BATCH_CHIPS, chip_batch

    return chip_batch(BATCH_CHIPS, int(np.prod(chips.shape[1:])) * 4)


def _forward_pass(encoder: Any, units: np.ndarray, *, repeats: int, peaks: dict, batch: int | None = None) -> dict:
    """:func:`speed.encoder_throughput` of ``encoder`` on ``units`` (``batch`` at a time,
    :func:`speed.encode_in_batches`), against the peak of its device measured right before and
    right after it, whichever is higher.

    A shared host's speed drifts by tens of per cent within minutes (one run measured 162
    GFLOP/s at its start and 245 a few minutes later; another 199-328 across its rows), so
    each encoder's share of peak is taken against peaks measured under the same conditions,
    and against the higher of the two so that a slow moment cannot flatter it
    (``peaks_around``: both, FLOP/s).  The first peak of each device is kept in ``peaks``
    (the report's header).
    """
    from . import speed

    def measure() -> dict:
        now: dict = {}
        peak = speed.peak_for(encoder, now)
        for device, measured in now.items():
            peaks.setdefault(device, measured)
        return peak

    before = measure()
    forward = speed.encoder_throughput(encoder, units, repeats=repeats, peak=before, batch=batch)
    after = measure()
    around = [p.get("measured_flops") for p in (before, after)]
    if (after.get("measured_flops") or 0) > (before.get("measured_flops") or 0):
        forward.update(speed.against_peak(forward, after))
    return {**forward, "peaks_around": around}


def _time_pipeline(run: Callable[[], Any], forward: Callable[[], Any], *, repeats: int = PAIRS) -> dict:
    """Wall time of ``run()`` (a ``segment()`` call) against the forward pass ``forward()``.

    ``run()`` once first: it pays one-off costs of a fresh process (imports such as exSpy's
    element database, thread pools, caches): ``segment_first_seconds``.  Then ``repeats``
    pairs, each ``forward()`` and right after it ``run()`` (which redoes every stage: an
    in-memory study starts empty), the steady state a batch of images sees.  The overhead
    is taken pair by pair (``segment_over_forward``: each pair's ratio), since on a shared
    host the speed of both drifts by tens of per cent within a minute and two blocks of runs
    timed one after the other measure the drift (:func:`_overheads` gives both figures);
    ``segment_seconds`` is the median of the runs (every run in ``segment_seconds_all``, the
    paired forward passes in ``paired_forward_seconds_all``), with the peak RSS over them.
    ``refined_chips`` counts the boundary chips refinement embedded again (all modalities),
    which the forward pass on the grid's chips does not include.  ``step_seconds``: the median
    time of each step of the runs (their provenance's ``seconds``): where the overhead goes.
    """
    from . import speed

    start = time.perf_counter()
    run()
    first = time.perf_counter() - start
    speed.reset_peak_rss()
    times, forwards, steps = [], [], []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        forward()
        forwards.append(time.perf_counter() - start)
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
        steps.append((getattr(result, "provenance", None) or {}).get("seconds", {}))
    refined = ((getattr(result, "provenance", None) or {}).get("refined") or {}).get("boundary_chips", {})
    return {"segment_first_seconds": first, "segment_seconds": statistics.median(times),
            "step_seconds": {name: statistics.median(s.get(name, 0.0) for s in steps) for name in steps[-1]},
            "segment_seconds_all": times, "paired_forward_seconds_all": forwards,
            "segment_over_forward": [t / f for t, f in zip(times, forwards)],
            "refined_chips": int(sum(refined.values())), "peak_rss_mib": speed.peak_rss_mib()}


def _overheads(timed: dict, forward: dict, n_units: int, n_encoded: int) -> dict:
    """The pipeline's overhead over the forward pass on the grid's ``n_units``, and over the
    forward passes of every unit it encodes (``n_encoded``: with the boundary chips
    refinement embeds again), at the forward pass's rate.

    ``overhead``: the median ``segment()`` over the median of the forward passes timed in a
    row, minus 1.  ``overhead_paired``: the median over the pairs
    of ``segment()`` over the forward pass timed just before it, minus 1
    (``overhead_paired_range``: the pairs' lowest and highest).  The two differ in what they
    let in: the first, the host's drift between the two blocks of runs; the second, a forward
    pass slowed by the run before it (its arrays allocated afresh, not from memory the
    previous forward pass just freed: the ``fourier`` pass takes 0.26-0.30 s in a row and
    0.27-0.61 s after a ``segment()``).  The goal (issue 11's 15 %) is met when both are.
    """
    ratios = timed["segment_over_forward"]
    share = n_encoded / n_units
    every = forward["seconds"] * share
    return {"overhead": timed["segment_seconds"] / forward["seconds"] - 1.0,
            "overhead_paired": statistics.median(ratios) - 1.0,
            "overhead_paired_range": [min(ratios) - 1.0, max(ratios) - 1.0],
            "n_encoded": n_encoded, "forward_all_seconds": every,
            "overhead_all": timed["segment_seconds"] / every - 1.0}


def _modality_encoder_speed(scan: int, quick: bool, peaks: dict, echo=None) -> dict:
    """Forward pass and pipeline time of each spectrum and diffraction encoder.

    On the multimodal phantom (``scan`` x ``scan``), on the chip grid ``segment()``
    lays for all its modalities; the pipeline is ``segment()`` of that one modality
    with that grid and encoder.  Encoders that pool per-position features
    (``diffraction-profiles``) encode every scan position once in the pipeline, so
    their forward pass is timed on the positions (as 1 x 1 chips), not on the chips.
    """
    from ..chips.grid import iter_chips
    from ..chips.shared import shared_grid
    from ..chips.sizing import chip_geometry
    from ..config import ChipConfig
    from ..encoders import get_encoder
    from ..pipeline.embedding import fit_encoder
    from ..pipeline.segment import segment
    from ..synthetic.multimodal import multimodal_phantom
    from . import speed

    _log(f"speed: spectrum and diffraction encoders ({scan}x{scan} multimodal phantom)", echo)
    modalities = multimodal_phantom((scan, scan), seed=0).modalities()
    size, stride = chip_geometry(ChipConfig(), modalities)
    rows = []
    for modality_name, encoder_name, options in SPEED_MODALITY_ENCODERS:
        compiled = bool(options.get("compile"))
        if compiled and quick:
            continue
        record: dict[str, Any] = {"encoder": encoder_name, "modality": modality_name, "options": options,
                                  "compiled": compiled}

        def case(modality_name=modality_name, encoder_name=encoder_name, options=options) -> dict:
            modality = modalities[modality_name]
            chips = shared_grid({modality_name: modality}, chip_size=size, stride=stride)
            view = chips.per_modality[modality_name]
            encoder = get_encoder(encoder_name, **options)
            encoder.set_signal_axes(modality.axes[2:])
            fit_encoder(modality, view, encoder, intensity=(0.0, 1.0), seed=0)
            data = np.asarray(modality.data)
            if encoder.pools_positions:
                # every position once, in one call (the pipeline encodes them in spans of rows)
                units, batch = data.reshape(-1, 1, 1, *data.shape[2:]), None
            else:
                units = np.concatenate([c for _, c in iter_chips(data, view.origins, view.size)])
                batch = pipeline_batch(units)
            forward = _forward_pass(encoder, units, repeats=1 if quick else 3, peaks=peaks, batch=batch)
            timed = _time_pipeline(lambda: segment(
                {modality_name: modality}, chip_size=size, stride=stride, seed=0, progress=False,
                config={"modality_encoders": {modality_name: encoder_name}},
                encoder_options={modality_name: options}), lambda: speed.encode_in_batches(encoder, units, batch),
                repeats=1 if quick else PAIRS)
            # encoders that pool positions refine from the positions already encoded
            encoded = len(units) + (0 if encoder.pools_positions else timed["refined_chips"])
            processes = {"compile_processes": speed.compilation_across_processes(
                encoder_name, options, (encoder.batch_size, *units.shape[1:]))} if compiled else {}
            return {"forward": forward, "n_chips": chips.grid.n_chips, "chip": size, "stride": stride,
                    "forward_on": "positions" if encoder.pools_positions else "chips",
                    "n_forward": len(units), **timed, **_overheads(timed, forward, len(units), encoded),
                    **processes}

        rows.append(_guard(record, case, echo))
    return {"modality_encoders": rows, "speed_scan": [scan, scan]}


# --------------------------------------------------------------------------- driver


def run_bench(data_dir: str | Path | None, out: str | Path, *, parts: list[str] | None = None,
              quick: bool = False, method_names: list[str] | None = None, phantom_size: int = 512,
              n_images: int | None = None, family_names: list[str] | None = None, draws: int | None = None,
              fresh: int | None = None, fresh_entropy: int | None = None, family_peers: bool = True,
              stability_images: int | None = None, echo: Callable[[str], None] | None = None) -> dict:
    """Run the benchmark parts and write ``results.json``, ``report.md`` and figures to ``out``.

    Parameters
    ----------
    data_dir
        Data folder laid out like ``../shared/data``; ``None`` or a folder without the
        labelled sets runs on the phantoms only (the report lists what was skipped).
    parts
        Subset of :data:`PARTS` (all by default).
    quick
        Fewer images, seeds and sizes (see :data:`SIZES`): minutes instead of an hour.
    method_names
        Methods of the quality part (default: all, or :data:`methods.QUICK_METHODS`).
    n_images
        Images per labelled set, spread over the sorted set (default: all; 2 when quick).
    family_names
        Phantom families of the ``families`` part (default: all).
    draws
        Draws per phantom family (default 30: seeds 0-9 tune, 10-29 held out; 2 when
        quick); see :func:`multimodal_seg.bench.families.split_seeds`.
    fresh
        More draws per family, from seeds drawn at random for this run (default 10; none
        when quick): specimens no one has seen, reported as a split of their own
        (:func:`multimodal_seg.bench.families.fresh_seeds`).
    fresh_entropy
        Draw the fresh seeds of an earlier run again (its ``fresh_entropy`` in results.json;
        with ``fresh``, the number of them).
    family_peers
        Run the peers (GraphEM, HyperSpy, Felzenszwalb) on every family draw beside the
        project (default); ``False`` scores the project alone, for many fresh draws in
        minutes.
    stability_images
        Labelled images per set in the stability part, the first of those read (default 3;
        1 when quick; :func:`stability_items`).

    Raises
    ------
    InputError
        ``data_dir`` given but not a folder.
    ParameterError
        Unknown part, method or phantom family, ``draws < 1``, ``fresh < 0``, an entropy
        without fresh draws, or a families option without the families part.
    """
    from .report import write_report

    parts = list(parts or PARTS)
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ParameterError(f"unknown benchmark parts {unknown}", fix=f"use some of {', '.join(PARTS)}",
                             where="parts")
    names = list(method_names or (methods.QUICK_METHODS if quick else methods.METHODS))
    bad = sorted(set(names) - set(methods.METHODS))
    if bad:
        raise ParameterError(f"unknown methods {bad}", fix=f"use some of {', '.join(methods.METHODS)}",
                             where="methods")
    given = [name for name, value in (("families", family_names), ("draws", draws), ("fresh", fresh),
                                      ("fresh_entropy", fresh_entropy),
                                      ("family_peers", None if family_peers else False)) if value is not None]
    if given and "families" not in parts:
        # the command's flag beside the one whose name does not say it
        named = ", ".join("family_peers=False (--no-peers)" if g == "family_peers" else g for g in given)
        raise ParameterError(f"{named} apply to the families part, which is not run",
                             fix=f"add families to the parts, or leave {named} out", where=given[0])
    if stability_images is not None and "stability" not in parts:
        raise ParameterError("stability_images applies to the stability part, which is not run",
                             fix="add stability to the parts, or leave stability_images out",
                             where="stability_images")
    if stability_images is not None and (isinstance(stability_images, bool) or stability_images < 1):
        raise ParameterError(f"stability_images must be a positive integer, got {stability_images!r}",
                             fix="e.g. stability_images=10", where="stability_images")
    family_names = families.check_families(family_names)
    n_draws = SIZES["family_draws"][1 if quick else 0] if draws is None else draws
    n_fresh = SIZES["family_fresh"][1 if quick else 0] if fresh is None else fresh
    families.split_seeds(n_draws)  # checks draws, fresh and the entropy before any work
    # the entropy the fresh seeds are drawn from, drawn once: the families part draws them from it
    fresh_entropy_used = families.fresh_seeds(n_fresh, fresh_entropy)[1]
    if fresh_entropy is not None and n_fresh == 0:
        raise ParameterError("fresh_entropy draws a run's fresh seeds again, and no fresh draws are asked for",
                             fix="add fresh=N, the number of fresh draws that run made (--fresh N)",
                             where="fresh_entropy")
    if data_dir is not None:
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise InputError("is not a folder", fix="give the shared data folder (e.g. ../shared/data)",
                             where=data_dir)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"), "data_dir": str(data_dir) if data_dir else None,
        "quick": quick, "n_images": n_images, "parts": parts, "family_names": family_names, "draws": draws,
        "fresh": fresh, "family_peers": family_peers,
        "stability_images": stability_images,
        "methods": {n: methods.METHODS[n][0] for n in names},
        "project_methods": [n for n in names if methods.METHODS[n][2]],
        "machine": machine(), "versions": package_versions(),
    }

    def checkpoint() -> None:
        write_text_atomic(out / "results.json", to_json(results))
        write_report(results, out)

    items, skipped = labelled_sets(data_dir, quick, phantom_size, n_images)
    results["skipped_sets"] = skipped
    results["images"] = {i.dataset: [] for i in items}
    for i in items:
        results["images"][i.dataset].append(i.name)
    for part in parts:
        start = time.perf_counter()
        if part == "quality":
            records = run_quality(items, names, echo)
            results["quality"] = {"records": records, "summary": quality.summarise(records)}
        elif part == "stability":
            results["stability"] = run_stability(items, quick, echo, per_set=stability_images)
        elif part == "consistency":
            results["consistency"] = run_consistency(data_dir, quick, echo)
        elif part == "speed":
            results["speed"] = run_speed(quick, echo)
        elif part == "families":
            def partial(so_far: dict) -> None:
                results["families"] = so_far
                checkpoint()

            results["families"] = families.run_families(family_names, n_draws, fresh=n_fresh,
                                                        fresh_entropy=fresh_entropy_used,
                                                        with_peers=family_peers, echo=echo,
                                                        checkpoint=partial)
        elif part == "chip_scale":
            results["chip_scale"] = run_chip_scale(items, quick, echo)
        elif part == "separability":
            results["separability"] = run_separability(items, echo)
        results.setdefault("part_seconds", {})[part] = time.perf_counter() - start
        checkpoint()
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    checkpoint()
    return results
