#!/usr/bin/env python
"""Image-pipeline benchmark: segmentation quality against labels, speed and memory.

Usage::

    python benchmarks/bench_image.py DATA_DIR --out benchmarks/reports/<name> [--quick]
                                     [--parts quality,speed]

``DATA_DIR`` is the shared data folder (the one holding ``labelled/nasa_pmm``).
Without the labelled sets the real-data part is skipped with a message; the
phantom and speed parts need no data.

Parts (``--parts``, comma separated; ``quality`` = ``phantom,ebc,super``):

phantom
    Pixel-level agreement (ARI, many-to-one accuracy, NMI, mIoU, VI) of
    ``segment()`` with the HAADF phantom's truth, several seeds, for the default
    encoder (``encoder="auto"``) and an untrained ResNet50 baseline.
ebc, super
    The same against the human labels of the NASA PMM EBC and superalloy SEM sets.
speed
    On a 2048x2048 phantom: full ``segment()`` wall time in memory vs the encoder's
    ``encode()`` alone on exactly the same chips and batches (overhead = ratio - 1),
    a per-stage breakdown (the real ``segment()`` with timers around the stage
    functions it calls and the functions those call), and peak memory; every speed
    case runs in a fresh subprocess.  ResNet50 (random weights) is measured on a smaller case.

Writes ``results.json``, ``report.md`` and PNG figures into ``--out`` (each file
written under a temporary name and renamed into place).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from multimodal_seg.bench.speed import reset_peak_rss

os.environ.setdefault("MPLBACKEND", "Agg")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ALL_PARTS = ("phantom", "ebc", "super", "speed")
PART_ALIASES = {"quality": ("phantom", "ebc", "super"), "all": ALL_PARTS}

#: Encoder configurations compared in the quality part.  ``stride="chip"`` means a
#: stride equal to the automatic chip size (non-overlapping chips).
CONFIGS: dict[str, dict[str, Any]] = {
    "default": {
        "label": "default (encoder='auto', auto chip, stride = chip/2)",
        "kwargs": {"encoder": "auto"},
    },
    "default-nonoverlap": {
        "label": "default encoder, stride = chip (non-overlapping)",
        "kwargs": {"encoder": "auto"},
        "stride": "chip",
    },
    "resnet50-random": {
        "label": "ResNet50 random weights, layer4, resize=None, stride = chip",
        "kwargs": {"encoder": "resnet50", "weights": "random",
                   "config": {"encoder": {"options": {"resize": None, "layer": "layer4"}}}},
        "stride": "chip",
    },
}

DATASETS = {
    "ebc": {
        "folder": "labelled/nasa_pmm/EBC",
        "title": "NASA PMM EBC (SEM, 1024x1024)",
        "classes": ["background (top coating + substrate)", "thermally grown oxide", "crack"],
    },
    "super": {
        "folder": "labelled/nasa_pmm/Super",
        "title": "NASA PMM superalloy (SEM, 512x512)",
        "classes": ["gamma matrix", "secondary gamma-prime", "tertiary gamma-prime"],
    },
}


# --------------------------------------------------------------------------- small tools



def log(msg: str) -> None:
    stamp = datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp}] {msg}", flush=True)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")



def write_atomic(target: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary path beside ``target``, then rename it into place."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(target: Path, obj: Any) -> None:
    from multimodal_seg.provenance import to_json

    write_atomic(target, lambda p: p.write_text(to_json(obj) + "\n"))


def mean_sd(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and np.isfinite(v)]
    if not vals:
        return float("nan"), float("nan")
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0


def rss_kib() -> dict[str, int | None]:
    """Current and peak resident set size (KiB) from /proc/self/status (Linux)."""
    out: dict[str, int | None] = {"VmRSS": None, "VmHWM": None}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in out:
                out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def machine_info(import_torch: bool = True) -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": platform.processor() or platform.machine(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["mem_total_gib"] = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    try:
        if not import_torch and "torch" not in sys.modules:
            raise LookupError("torch not imported")
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["torch_interop_threads"] = torch.get_num_interop_threads()
        info["torch_cuda_available"] = torch.cuda.is_available()
    except LookupError:
        pass
    except Exception as exc:  # torch is a dependency, but report rather than die
        info["torch_error"] = repr(exc)
    try:
        from threadpoolctl import threadpool_info

        info["threadpools"] = [
            {k: p.get(k) for k in ("user_api", "internal_api", "num_threads", "version", "architecture")}
            for p in threadpool_info()
        ]
    except Exception:
        info["threadpools"] = None
    info["env"] = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                  "MKL_NUM_THREADS", "MMSEG_WEIGHTS_DIR")}
    return info


def git_state() -> dict[str, Any]:
    """Commit and uncommitted changes of the package checkout (the code that was measured)."""
    import hashlib

    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True,
                              timeout=30).stdout

    try:
        head = git("rev-parse", "HEAD").strip()
        status = [line for line in git("status", "--porcelain", "--", "multimodal_seg").splitlines()]
        diff = git("diff", "HEAD", "--", "multimodal_seg")
        untracked = sorted(line[3:] for line in status if line.startswith("??"))
        h = hashlib.sha256(diff.encode())
        for name in untracked:
            path = REPO / name
            files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
            for f in files:
                h.update(f.read_bytes())
        return {"head": head or None, "dirty": status, "changes_sha256": h.hexdigest()[:16]}
    except Exception as exc:
        return {"error": repr(exc)}


def auto_chip(shape: tuple[int, int]) -> int:
    """The automatic chip size ``segment()`` uses for an image of ``shape``."""
    from multimodal_seg.config import ChipConfig
    from multimodal_seg.pipeline.segment import chip_geometry

    size, _ = chip_geometry(ChipConfig(), tuple(shape), [])
    return size


def config_kwargs(name: str, shape: tuple[int, int]) -> dict[str, Any]:
    spec = CONFIGS[name]
    kwargs = json.loads(json.dumps(spec["kwargs"]))  # deep copy
    if spec.get("stride") == "chip":
        kwargs["stride"] = auto_chip(shape)
    return kwargs


# --------------------------------------------------------------------------- scoring


def score(pred: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """``metrics.agreement`` plus the majority-class baseline and per-class IoU after
    many-to-one mapping (each predicted community -> its majority truth class)."""
    from multimodal_seg.metrics import agreement, contingency

    pred = np.asarray(pred)
    truth = np.asarray(truth)
    out: dict[str, Any] = dict(agreement(pred, truth))
    c = contingency(pred, truth).astype(np.float64)
    truth_ids = np.unique(truth[(truth >= 0) & (pred >= 0)])
    mapped = c.argmax(axis=1)
    iou = {}
    for j, t in enumerate(truth_ids):
        rows = mapped == j
        tp = c[rows, j].sum()
        union = c[rows].sum() + c[:, j].sum() - tp
        iou[str(int(t))] = float(tp / union) if union > 0 else float("nan")
    out["m2o_iou"] = iou
    out["majority_fraction"] = float(c.sum(axis=0).max() / c.sum())
    return out


# --------------------------------------------------------------------------- quality


def run_segment(source: Any, truth: np.ndarray, config: str, *, case: dict[str, Any]) -> dict[str, Any]:
    """One ``segment()`` run scored against ``truth``; errors are recorded, not raised."""
    from multimodal_seg import segment

    shape = tuple(int(s) for s in truth.shape)
    kwargs = config_kwargs(config, shape)
    record: dict[str, Any] = {**case, "config": config, "kwargs": kwargs}
    try:
        t0 = time.perf_counter()
        seg = segment(source, progress=False, seed=0, **kwargs)
        record["seconds"] = time.perf_counter() - t0
        record["grid"] = seg.grid.to_dict()
        record["grid_shape"] = list(seg.grid.grid_shape)
        record["n_chips"] = seg.grid.n_chips
        record["n_communities"] = int(seg.provenance["n_communities"])
        record["modularity"] = float(seg.modularity)
        record["encoder"] = seg.provenance["encoder"]
        record["encoder_choice"] = seg.provenance["encoder_choice"]
        t0 = time.perf_counter()
        record["scores"] = score(seg.pixel_labels, truth)
        record["score_seconds"] = time.perf_counter() - t0
    except Exception as exc:  # keep going: one failing case must not lose the others
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc(limit=6)
        log(f"  ERROR {record['error']}")
    return record


def summarise(records: list[dict[str, Any]], config: str) -> dict[str, Any]:
    rows = [r for r in records if r["config"] == config and "scores" in r]
    out: dict[str, Any] = {"config": config, "label": CONFIGS[config]["label"], "n": len(rows),
                           "n_errors": sum(1 for r in records if r["config"] == config and "error" in r),
                           "images": [r["image"] for r in rows]}
    if not rows:
        return out
    for key in ("ari", "many_to_one", "nmi", "miou", "vi", "n_pred", "majority_fraction"):
        out[key] = mean_sd([r["scores"][key] for r in rows])
    out["n_communities"] = mean_sd([r["n_communities"] for r in rows])
    out["seconds"] = mean_sd([r["seconds"] for r in rows])
    classes = sorted({k for r in rows for k in r["scores"]["m2o_iou"]})
    out["m2o_iou"] = {k: mean_sd([r["scores"]["m2o_iou"].get(k, float("nan")) for r in rows])
                      for k in classes}
    out["chip_size"] = sorted({r["grid"]["size"] for r in rows})
    out["stride"] = sorted({r["grid"]["stride"] for r in rows})
    out["n_chips"] = sorted({r["n_chips"] for r in rows})
    return out


def quality_phantom(args: argparse.Namespace) -> dict[str, Any]:
    from multimodal_seg.synthetic.phantoms import haadf_phantom

    size = args.phantom_size
    records = []
    for config in ("default", "resnet50-random"):
        for seed in args.seeds:
            ph = haadf_phantom((size, size), seed=seed)
            log(f"phantom {size}x{size} seed {seed}: {config}")
            rec = run_segment(ph.image, ph.truth, config,
                              case={"dataset": "phantom", "image": f"seed{seed}", "seed": seed})
            if "scores" in rec:
                log(f"  ARI {rec['scores']['ari']:.3f}  many-to-one {rec['scores']['many_to_one']:.3f}"
                    f"  communities {rec['n_communities']}  {rec['seconds']:.1f} s")
            records.append(rec)
    ph = haadf_phantom((size, size), seed=args.seeds[0])
    return {
        "shape": [size, size],
        "seeds": list(args.seeds),
        "region_names": ph.region_names,
        "records": records,
        "summary": {c: summarise(records, c) for c in ("default", "resnet50-random")},
    }


def pick_subset(items: list[Any], n: int) -> list[Any]:
    """``n`` items spread evenly over the (sorted) list: deterministic and not just the first."""
    if n >= len(items):
        return list(items)
    if n <= 0:
        return []
    idx = np.unique(np.round(np.linspace(0, len(items) - 1, n)).astype(int))
    return [items[i] for i in idx]


def quality_labelled(args: argparse.Namespace, name: str) -> dict[str, Any]:
    from PIL import Image

    spec = DATASETS[name]
    folder = Path(args.data_dir) / spec["folder"]
    images = sorted(folder.glob("*_image.png")) if folder.is_dir() else []
    pairs = [(p, p.with_name(p.name.replace("_image.png", "_label.png"))) for p in images]
    pairs = [(i, l) for i, l in pairs if l.is_file()]
    if not pairs:
        msg = f"no *_image.png/*_label.png pairs in {folder}"
        log(f"{name}: skipped: {msg}")
        return {"skipped": msg, "folder": str(folder)}
    n_all = args.ebc_images if name == "ebc" else args.super_images
    n_sub = args.ebc_resnet_images if name == "ebc" else args.super_resnet_images
    all_pairs = pick_subset(pairs, n_all) if n_all is not None else pairs
    subset = pick_subset(all_pairs, n_sub)
    plan = [("default", all_pairs), ("default-nonoverlap", subset), ("resnet50-random", subset)]
    records = []
    for config, chosen in plan:
        for k, (img, lab) in enumerate(chosen, 1):
            truth = np.asarray(Image.open(lab)).astype(np.int16)
            stem = img.name.removesuffix("_image.png")
            log(f"{name} [{k}/{len(chosen)}] {stem}: {config}")
            rec = run_segment(img, truth, config, case={"dataset": name, "image": stem})
            if "scores" in rec:
                log(f"  ARI {rec['scores']['ari']:.3f}  many-to-one {rec['scores']['many_to_one']:.3f}"
                    f" (majority {rec['scores']['majority_fraction']:.3f})"
                    f"  communities {rec['n_communities']}  {rec['seconds']:.1f} s")
            records.append(rec)
    subset_names = [i.name.removesuffix("_image.png") for i, _ in subset]
    summary = {c: summarise(records, c) for c in CONFIGS}
    # the default encoder on exactly the subset the baselines saw: the fair comparison
    sub_records = [dict(r, config="default") for r in records
                   if r["config"] == "default" and r["image"] in subset_names]
    summary["default@subset"] = summarise(sub_records, "default")
    summary["default@subset"]["label"] = CONFIGS["default"]["label"] + ", baseline subset only"
    return {
        "folder": str(folder),
        "title": spec["title"],
        "classes": spec["classes"],
        "n_available": len(pairs),
        "images_default": [i.name.removesuffix("_image.png") for i, _ in all_pairs],
        "images_subset": subset_names,
        "records": records,
        "summary": summary,
    }


# --------------------------------------------------------------------------- speed (subprocess side)


@contextlib.contextmanager
def timed_attr(owner: Any, name: str, bucket: dict[str, float], key: str,
               generator: bool = False) -> Iterator[bool]:
    """Replace ``owner.name`` by a wrapper that adds its wall time to ``bucket[key]``.

    Yields whether the attribute existed (a missing one is left alone, so the
    instrumentation survives refactoring of the package).  ``generator=True`` times
    the iteration of a generator function (each ``next``), not just the call.
    """
    original = getattr(owner, name, None)
    if original is None or not callable(original):
        yield False
        return

    def add(dt: float, calls: int = 1) -> None:
        bucket[key] = bucket.get(key, 0.0) + dt
        bucket[f"{key}#calls"] = bucket.get(f"{key}#calls", 0) + calls

    if generator:
        @functools.wraps(original)
        def wrapper(*a: Any, **kw: Any) -> Any:
            it = iter(original(*a, **kw))
            while True:
                t0 = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    add(time.perf_counter() - t0, 0)
                    return
                add(time.perf_counter() - t0)
                yield item
    else:
        @functools.wraps(original)
        def wrapper(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(*a, **kw)
            finally:
                add(time.perf_counter() - t0)

    if isinstance(owner, type) or inspect.ismodule(owner):
        had_own = name in vars(owner)
        setattr(owner, name, wrapper)
    else:  # an instance, possibly of a frozen dataclass: shadow the bound method
        had_own = False
        object.__setattr__(owner, name, wrapper)
    try:
        yield True
    finally:
        if isinstance(owner, type) or inspect.ismodule(owner):
            if had_own:
                setattr(owner, name, original)
            else:
                delattr(owner, name)
        else:
            object.__delattr__(owner, name)


#: (module, attribute, key, is-generator) wrapped with timers during the instrumented run.
#: Top-level keys are the steps segment() calls; "a.b" keys are parts of step "a".
#: Attributes that do not exist (older or newer package) are skipped.
INSTRUMENT = [
    ("pipeline", "read_image", "read_validate", False),
    ("pipeline", "make_encoder", "build_encoder", False),
    ("stages", "add_modality", "store_modality", False),
    ("stages", "make_chips", "chip_grid", False),
    ("stages", "embed_chips", "embed", False),
    ("stages", "intensity_scale", "embed.intensity_scale", False),
    ("stages", "_fit_sample", "embed.fit_sample", False),
    ("stages", "iter_chips", "embed.read_and_cut_chips", True),
    ("stages", "chip_statistics", "embed.chip_statistics", False),
    ("stages", "build_graph", "graph", False),
    ("graph", "reduce_features", "graph.standardise_pca", False),
    ("graph", "knn_graph", "graph.knn", False),
    ("stages", "find_communities", "communities", False),
    ("communities", "to_igraph", "communities.to_igraph", False),
    ("pipeline", "collect", "collect", False),
    ("pipeline", "community_crystallinity", "collect.crystallinity", False),
    ("descriptors", "crystallinity", "collect.crystallinity.fft_index", False),
    ("pipeline", "community_table", "collect.community_table", False),
    ("pipeline", "run_record", "collect.provenance", False),
]


def instrumented_segment(image: np.ndarray, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The real ``segment()`` call, with timers around the stage functions it calls
    (``multimodal_seg.pipeline.stages.*``, ``pipeline.collect`` ...) and around the functions
    those call (``encoder.encode``, PCA, kNN, back-projection, crystallinity ...)."""
    from contextlib import ExitStack
    import importlib

    from multimodal_seg import pipeline, segment
    from multimodal_seg.chips.grid import ChipGrid

    t: dict[str, float] = {}
    missing = []
    with ExitStack() as stack:
        for mod, attr, key, gen in INSTRUMENT:
            module = importlib.import_module(f"multimodal_seg.{mod}")
            if not stack.enter_context(timed_attr(module, attr, t, key, generator=gen)):
                missing.append(f"{mod}.{attr}")
        stack.enter_context(timed_attr(ChipGrid, "chip_labels_to_pixels", t, "collect.back_projection"))
        stack.enter_context(timed_attr(ChipGrid, "extract_row", t, "embed.read_and_cut_chips"))
        make = pipeline.make_encoder  # already the timing wrapper

        def make_encoder(*a: Any, **kw: Any) -> Any:
            enc, reason = make(*a, **kw)
            stack.enter_context(timed_attr(enc, "encode", t, "embed.encode"))
            stack.enter_context(timed_attr(enc, "fit", t, "embed.fit"))
            return enc, reason

        pipeline.make_encoder = make_encoder
        stack.callback(setattr, pipeline, "make_encoder", make)
        t0 = time.perf_counter()
        seg = segment(image, progress=False, **kwargs)
        total = time.perf_counter() - t0
    stages_ = {k: v for k, v in t.items() if "." not in k and "#" not in k}
    detail = {k: v for k, v in t.items() if "." in k and "#" not in k}
    calls = {k.split("#")[0]: v for k, v in t.items() if "#" in k}
    # what the wrappers inside a step do not cover
    for step in ("embed", "graph", "communities", "collect"):
        if step in stages_:
            inner = sum(v for k, v in detail.items() if k.startswith(step + ".") and k.count(".") == 1)
            detail[f"{step}.other"] = stages_[step] - inner
    if "collect.crystallinity" in detail:
        detail["collect.crystallinity.window_reads"] = (detail["collect.crystallinity"]
                                                        - detail.get("collect.crystallinity.fft_index", 0.0))
    stages_["segment_other"] = total - sum(stages_.values())
    return {"total": total, "stages": stages_, "detail": detail, "calls": calls,
            "not_instrumented": missing, "n_communities": seg.n_communities}


def chip_batches(image: np.ndarray, grid: Any) -> tuple[list[np.ndarray], int]:
    """The chips ``stages.embed_chips`` feeds the encoder, in the same batches, scaled the
    same way, cut in memory with the package's own helpers."""
    from multimodal_seg.pipeline.segment import stages

    batch_chips = inspect.signature(stages.embed_chips).parameters["batch_chips"].default
    data = np.asarray(image, dtype=np.float32)
    low, high = stages.intensity_scale(data)
    scale = lambda raw: np.ascontiguousarray(  # noqa: E731
        np.clip((raw.astype(np.float32) - low) / (high - low), 0.0, 1.0), dtype=np.float32)
    iter_chips = getattr(stages, "iter_chips", None)
    if iter_chips is not None:  # chips streamed in batches of batch_chips (current package)
        return [scale(raw) for _, raw in iter_chips(data, grid.origins, grid.size,
                                                     batch=batch_chips)], batch_chips
    # older package: bands of whole chip rows
    n_rows, n_cols = grid.grid_shape
    rows_per_batch = max(1, batch_chips // n_cols)
    batches = []
    for first in range(0, n_rows, rows_per_batch):
        starts = grid.row_starts[first : first + rows_per_batch]
        band = data[starts[0] : starts[-1] + grid.size]
        raw = np.concatenate([grid.extract_row(band[r - starts[0] : r - starts[0] + grid.size])
                              for r in starts])
        batches.append(scale(raw))
    return batches, batch_chips


def speed_case(spec: dict[str, Any]) -> dict[str, Any]:
    """Run inside a fresh process: timings and memory of one speed case."""
    t_import = time.perf_counter()
    rss0 = rss_kib()
    from multimodal_seg import segment
    from multimodal_seg.config import load_config, with_overrides
    from multimodal_seg.pipeline.segment import make_encoder

    res: dict[str, Any] = {"spec": spec, "rss_start_kib": rss0["VmRSS"]}
    image = np.load(spec["image"])
    if spec.get("crop"):
        image = np.ascontiguousarray(image[: spec["crop"], : spec["crop"]])
    res["shape"] = list(image.shape)
    kwargs = spec["kwargs"]
    res["import_seconds"] = time.perf_counter() - t_import

    # warm-up on a small crop: imports, lazy initialisation, first-call costs
    w = spec["warmup_crop"]
    t0 = time.perf_counter()
    segment(np.ascontiguousarray(image[:w, :w]), progress=False, **kwargs)
    res["warmup_seconds"] = time.perf_counter() - t0

    # 1) full pipeline, in memory; the first timed run also measures peak memory
    res["peak_reset_supported"] = reset_peak_rss()
    base = rss_kib()
    times, cpu_times = [], []
    seg = None
    res["loadavg_before"] = os.getloadavg()
    for i in range(spec["repeats"]):
        t0, c0 = time.perf_counter(), time.process_time()
        seg = segment(image, progress=False, **kwargs)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
        if i == 0:
            peak = rss_kib()
            res["memory"] = {
                "rss_before_kib": base["VmRSS"],
                "peak_rss_kib": peak["VmHWM"] if res["peak_reset_supported"] else None,
                "peak_increase_kib": (peak["VmHWM"] - base["VmRSS"])
                if res["peak_reset_supported"] and peak["VmHWM"] and base["VmRSS"] else None,
            }
        seg_embeddings, seg_grid = seg.embeddings, seg.grid
        del seg
    res["segment_seconds"] = times
    res["segment_cpu_seconds"] = cpu_times
    res["grid"] = None

    # 2) the encoder alone on exactly the same chips, same batches, same object type
    cfg = with_overrides(load_config(kwargs.get("config")),
                         **{k: v for k, v in kwargs.items() if k != "config"})
    grid = seg_grid  # the grid segment() used
    res["grid"] = grid.to_dict()
    res["grid_shape"] = list(grid.grid_shape)
    res["n_chips"] = grid.n_chips
    t0 = time.perf_counter()
    enc, _ = make_encoder(cfg.encoder)
    res["encoder_build_seconds"] = time.perf_counter() - t0
    res["encoder"] = enc.fingerprint()
    from multimodal_seg.encoders.base import Encoder

    base_fit = getattr(Encoder, "fit", None)
    if base_fit is not None and getattr(type(enc), "fit", base_fit) is not base_fit:
        res["encoder_needs_fit"] = True  # not fitted here: encode() alone may then differ
    batches, batch_chips = chip_batches(image, grid)
    res["encode_batches"] = [len(b) for b in batches]
    res["batch_chips"] = batch_chips
    enc_times, enc_cpu = [], []
    emb = None
    for _ in range(spec["encode_repeats"]):
        t0, c0 = time.perf_counter(), time.process_time()
        emb = np.concatenate([enc.encode(b) for b in batches])
        enc_times.append(time.perf_counter() - t0)
        enc_cpu.append(time.process_time() - c0)
    res["encode_seconds"] = enc_times
    res["encode_cpu_seconds"] = enc_cpu
    res["same_chips_max_abs_diff"] = float(np.abs(emb - seg_embeddings).max())
    res["same_chips_allclose"] = bool(np.allclose(emb, seg_embeddings, rtol=1e-4, atol=1e-5))
    del batches

    # 3) stage breakdown: the real segment() with timers around what it calls
    res["staged"] = [instrumented_segment(image, kwargs) for _ in range(spec["staged_repeats"])]

    # 4) tracemalloc peak (numpy and Python allocations; not torch's) of one more run
    if spec.get("tracemalloc"):
        import tracemalloc

        tracemalloc.start()
        tracemalloc.reset_peak()
        t0 = time.perf_counter()
        segment(image, progress=False, **kwargs)
        res["tracemalloc_seconds"] = time.perf_counter() - t0
        res["tracemalloc_peak_bytes"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    # 5) encoder throughput on synthetic chips of several sizes (ResNet case)
    if spec.get("throughput"):
        from multimodal_seg.encoders import get_encoder

        rng = np.random.default_rng(0)
        res["throughput"] = []
        for item in spec["throughput"]:
            opts = {k: v for k, v in item.items() if k not in ("chip", "n")}
            tenc = get_encoder(item.get("name", "resnet50"), **{k: v for k, v in opts.items()
                                                                 if k != "name"})
            chips = rng.random((item["n"], item["chip"], item["chip"]), dtype=np.float32)
            tenc.encode(chips[:2])  # first call: allocations
            t0 = time.perf_counter()
            tenc.encode(chips)
            dt = time.perf_counter() - t0
            res["throughput"].append({**item, "seconds": dt, "chips_per_s": item["n"] / dt})
    import resource

    res["loadavg_after"] = os.getloadavg()
    res["ru_maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    res["machine"] = machine_info(import_torch=False)
    return res


# --------------------------------------------------------------------------- speed (parent side)


def speed_part(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from multimodal_seg.synthetic.phantoms import haadf_phantom

    work.mkdir(parents=True, exist_ok=True)
    size = args.speed_size
    log(f"speed: rendering a {size}x{size} phantom (seed 0)")
    ph = haadf_phantom((size, size), seed=0)
    npy = work / f"phantom_{size}_seed0.npy"
    np.save(npy, ph.image)
    del ph
    cases = [{
        "name": "default",
        "title": f"default encoder ('auto'), {size}x{size} phantom, default chips",
        "image": str(npy), "crop": None, "kwargs": {"encoder": "auto"},
        "repeats": args.repeats, "encode_repeats": args.repeats,
        "staged_repeats": 1 if args.quick else 2,
        "warmup_crop": 256, "tracemalloc": not args.quick, "env": {},
    }]
    if args.blas1:
        cases.append({
            "name": "default-blas1",
            "title": "as 'default' with OPENBLAS_NUM_THREADS=1 (numpy/scipy BLAS single-threaded)",
            "image": str(npy), "crop": None, "kwargs": {"encoder": "auto"},
            "repeats": max(1, args.repeats - 1), "encode_repeats": 1, "staged_repeats": 1,
            "warmup_crop": 256, "tracemalloc": False,
            "env": {"OPENBLAS_NUM_THREADS": "1"},
        })
    if args.resnet_speed_size:
        rs, rc = args.resnet_speed_size, args.resnet_speed_chip
        cases.append({
            "name": "resnet50-random",
            "title": (f"ResNet50 random weights (layer4, resize=None), top-left {rs}x{rs} crop of the "
                      f"phantom, {rc} px chips, stride {rc}"),
            "image": str(npy), "crop": rs if rs < size else None,
            "kwargs": {"encoder": "resnet50", "weights": "random", "chip_size": rc, "stride": rc,
                       "config": {"encoder": {"options": {"resize": None, "layer": "layer4"}}}},
            "repeats": 1 if args.quick else 2, "encode_repeats": 1 if args.quick else 2,
            "staged_repeats": 1,
            "warmup_crop": max(2 * rc, 256), "tracemalloc": False, "env": {},
            "throughput": [] if args.quick else [
                {"chip": 32, "n": 32, "weights": "random", "resize": None, "layer": "layer4"},
                {"chip": 64, "n": 32, "weights": "random", "resize": None, "layer": "layer4"},
                {"chip": 128, "n": 16, "weights": "random", "resize": None, "layer": "layer4"},
                {"chip": 64, "n": 8, "weights": "random", "resize": 224, "layer": "layer4"},
            ],
        })
    results: dict[str, Any] = {"image": f"haadf_phantom(({size}, {size}), seed=0)", "cases": {}}
    for case in cases:
        spec_path = work / f"speed_{case['name']}.spec.json"
        out_path = work / f"speed_{case['name']}.json"
        write_json(spec_path, case)
        env = {**os.environ, **case["env"], "MPLBACKEND": "Agg"}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_speed-case", str(spec_path),
               "--_speed-out", str(out_path)]
        log(f"speed: case {case['name']} ({case['title']}) in a fresh process")
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not out_path.is_file():
            err = (proc.stderr or proc.stdout)[-3000:]
            log(f"  ERROR (exit {proc.returncode}):\n{err}")
            results["cases"][case["name"]] = {"title": case["title"], "error": err,
                                              "returncode": proc.returncode}
            continue
        res = json.loads(out_path.read_text())
        res["title"] = case["title"]
        res["process_wall_seconds"] = wall
        res["summary"] = summarise_speed(res)
        s = res["summary"]
        log(f"  segment {s['segment_median']:.2f} s, encode alone {s['encode_median']:.2f} s, "
            f"overhead {100 * s['overhead']:.0f} %, peak RSS "
            f"{(s['peak_rss_mib'] or float('nan')):.0f} MiB")
        results["cases"][case["name"]] = res
    for p in work.glob("*.npy"):
        p.unlink()
    return results


def median_staged(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-step median over staged runs (one run: itself)."""
    keys = lambda part: sorted({k for r in runs for k in r[part]})  # noqa: E731
    return {
        "n_runs": len(runs),
        "total": statistics.median(r["total"] for r in runs),
        "stages": {k: statistics.median(r["stages"].get(k, 0.0) for r in runs) for k in keys("stages")},
        "detail": {k: statistics.median(r["detail"].get(k, 0.0) for r in runs) for k in keys("detail")},
    }


def summarise_speed(res: dict[str, Any]) -> dict[str, Any]:
    seg_med = statistics.median(res["segment_seconds"])
    enc_med = statistics.median(res["encode_seconds"])
    mem = res.get("memory", {})
    staged = median_staged(res["staged"])
    return {
        "n_chips": res["n_chips"],
        "chip_size": res["grid"]["size"],
        "stride": res["grid"]["stride"],
        "segment_median": seg_med,
        "segment_min": min(res["segment_seconds"]),
        "encode_median": enc_med,
        "encode_min": min(res["encode_seconds"]),
        "overhead": seg_med / enc_med - 1.0,
        "overhead_min_based": min(res["segment_seconds"]) / min(res["encode_seconds"]) - 1.0,
        "segment_cpu_median": statistics.median(res["segment_cpu_seconds"]),
        "encode_cpu_median": statistics.median(res["encode_cpu_seconds"]),
        "overhead_cpu": (statistics.median(res["segment_cpu_seconds"])
                         / statistics.median(res["encode_cpu_seconds"]) - 1.0),
        "goal_overhead": 0.15,
        "meets_goal": seg_med / enc_med - 1.0 <= 0.15,
        "chips_per_s_encode": res["n_chips"] / enc_med,
        "chips_per_s_pipeline": res["n_chips"] / seg_med,
        "staged_median": staged,
        "staged_total": staged["total"],
        "staged_encode": staged["detail"].get("embed.encode"),
        "peak_rss_mib": mem.get("peak_rss_kib") / 1024 if mem.get("peak_rss_kib") else None,
        "peak_increase_mib": mem.get("peak_increase_kib") / 1024 if mem.get("peak_increase_kib") else None,
        "rss_before_mib": mem.get("rss_before_kib") / 1024 if mem.get("rss_before_kib") else None,
        "ru_maxrss_mib": res["ru_maxrss_kib"] / 1024,
        "tracemalloc_peak_mib": (res["tracemalloc_peak_bytes"] / 2**20
                                 if res.get("tracemalloc_peak_bytes") else None),
    }


# --------------------------------------------------------------------------- report


def fnum(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    return f"{x:.{digits}f}"


def pm(ms: tuple[float, float] | list, digits: int = 3) -> str:
    if not ms or ms[0] is None or not np.isfinite(ms[0]):
        return "-"
    m, s = ms
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def quality_table(summary: dict[str, Any], keys: list[str], class_names: list[str] | None,
                  iou_classes: list[str]) -> list[str]:
    head = ("| configuration | images | chip / stride (px) | ARI | many-to-one | majority baseline "
            "| NMI | mIoU |")
    sep = "|---|---:|---|---:|---:|---:|---:|---:|"
    for c in iou_classes:
        name = class_names[int(c)] if class_names else c
        head += f" IoU {name} (m2o) |"
        sep += "---:|"
    head += " communities | s / image |"
    sep += "---:|---:|"
    lines = [head, sep]
    for key in keys:
        s = summary.get(key)
        if not s or not s.get("n"):
            continue
        row = (f"| {s['label']} | {s['n']} | {'/'.join(map(str, s['chip_size']))} / "
               f"{'/'.join(map(str, s['stride']))} | {pm(s['ari'])} | {pm(s['many_to_one'])} | "
               f"{pm(s['majority_fraction'])} | {pm(s['nmi'])} | {pm(s['miou'])} |")
        for c in iou_classes:
            row += f" {pm(s['m2o_iou'].get(c, (float('nan'), float('nan'))))} |"
        row += f" {pm(s['n_communities'], 1)} | {pm(s['seconds'], 1)} |"
        lines.append(row)
    return lines


def per_image_table(records: list[dict[str, Any]], configs: list[str]) -> list[str]:
    images = sorted({r["image"] for r in records})
    head = "| image |" + "".join(f" {c}: ARI / m2o / n |" for c in configs)
    lines = [head, "|---|" + "---|" * len(configs)]
    for im in images:
        row = f"| {im} |"
        for c in configs:
            r = next((r for r in records if r["image"] == im and r["config"] == c), None)
            if r is None:
                row += " |"
            elif "scores" not in r:
                row += " error |"
            else:
                row += (f" {r['scores']['ari']:.3f} / {r['scores']['many_to_one']:.3f} / "
                        f"{r['n_communities']} |")
        lines.append(row)
    return lines


STAGE_ORDER = ["read_validate", "build_encoder", "store_modality", "chip_grid", "embed", "graph",
               "communities", "collect", "segment_other"]
STAGE_NAMES = {
    "read_validate": "read & validate (read_image: dask array, min/max/NaN pass)",
    "build_encoder": "build encoder (make_encoder)",
    "store_modality": "store image in the Study (stages.add_modality; zarr in memory)",
    "chip_grid": "chip grid (stages.make_chips)",
    "embed": "stages.embed_chips",
    "graph": "stages.build_graph",
    "communities": "stages.find_communities",
    "collect": "pipeline.collect (back-projection, descriptors, provenance)",
    "segment_other": "rest of segment() (config, chip geometry, array digest, Study.open)",
}
DETAIL_ORDER = [
    ("embed.encode", "  encoder.encode() (the forward pass)"),
    ("embed.fit", "  encoder.fit()"),
    ("embed.fit_sample", "  sample for encoder.fit()"),
    ("embed.read_and_cut_chips", "  reading chip bands from the store (dask/zarr) + cutting chips"),
    ("embed.intensity_scale", "  intensity percentiles"),
    ("embed.chip_statistics", "  per-chip mean/std"),
    ("embed.other", "  rest: clip/scale, writing embeddings + stats"),
    ("graph.standardise_pca", "  standardise + PCA (30 PCs)"),
    ("graph.knn", "  exact cosine kNN + symmetrise"),
    ("graph.other", "  rest: reading embeddings, writing the graph"),
    ("communities.to_igraph", "  sparse -> igraph"),
    ("communities.other", "  Leiden + modularity + store"),
    ("collect.back_projection", "  back-projection to pixels (chip_labels_to_pixels)"),
    ("collect.crystallinity", "  community_crystallinity, of which:"),
    ("collect.crystallinity.window_reads", "    window reads from the dask array"),
    ("collect.crystallinity.fft_index", "    FFT index"),
    ("collect.community_table", "  community table"),
    ("collect.provenance", "  provenance record"),
    ("collect.other", "  rest: reading results back from the Study, Segmentation"),
]


def stage_table(cases: dict[str, Any]) -> list[str]:
    names = [n for n, c in cases.items() if "staged" in c]
    if not names:
        return []
    head = "| step |" + "".join(f" {n}: s | {n}: % |" for n in names)
    lines = [head, "|---|" + "---:|---:|" * len(names)]

    def row(label: str, getter: Callable[[dict[str, Any]], float | None]) -> str:
        out = f"| {label} |"
        for n in names:
            st = cases[n]["summary"]["staged_median"]
            v = getter(st)
            out += (f" {v:.3f} | {100 * v / st['total']:.1f} |" if v is not None else " - | - |")
        return out

    for key in STAGE_ORDER:
        lines.append(row(f"**{STAGE_NAMES[key]}**", lambda st, k=key: st["stages"].get(k)))
        for dkey, dlabel in DETAIL_ORDER:
            if dkey.split(".")[0] == key and any(dkey in cases[n]["summary"]["staged_median"]["detail"]
                                                 for n in names):
                lines.append(row(dlabel, lambda st, k=dkey: st["detail"].get(k)))
    lines.append(row("**total (instrumented segment())**", lambda st: st["total"]))
    lines.append(row("everything but encode()", lambda st: st["total"] - st["detail"]["embed.encode"]))
    return lines


def blas_line(machine: dict[str, Any]) -> str:
    pools = machine.get("threadpools") or []
    if not pools:
        return ""
    text = ", ".join(f"{p.get('internal_api')}{' ' + p['version'] if p.get('version') else ''} "
                     f"({p.get('num_threads')} threads"
                     f"{', ' + p['architecture'] if p.get('architecture') else ''})" for p in pools)
    return f"Thread pools: {text}."


def headlines(results: dict[str, Any]) -> list[str]:
    """A few sentences with the main numbers, computed from the results."""
    out: list[str] = []
    q = results.get("quality", {})
    for name in ("phantom", "ebc", "super"):
        d = q.get(name)
        if not d or "summary" not in d:
            continue
        bits = []
        for key in ("default", "default@subset", "resnet50-random"):
            s = d["summary"].get(key)
            if s and s.get("n"):
                bits.append(f"{key} (n={s['n']}): ARI {s['ari'][0]:.3f}, many-to-one "
                            f"{s['many_to_one'][0]:.3f}, {s['n_communities'][0]:.1f} communities")
        base = "" if name == "phantom" else \
            f"; majority baseline {d['summary']['default']['majority_fraction'][0]:.3f}"
        out.append(f"- **{name}**: " + "; ".join(bits) + base + ".")
    cases = (results.get("speed") or {}).get("cases", {})
    for name, c in cases.items():
        if "summary" not in c:
            continue
        s = c["summary"]
        st = s["staged_median"]
        others = {**{k: v for k, v in st["stages"].items() if k != "embed"},
                  **{k: v for k, v in st["detail"].items()
                     if k.startswith("embed.") and k != "embed.encode" and "#" not in k}}
        if "collect" in others and "collect.crystallinity" in st["detail"]:
            others["collect.crystallinity"] = st["detail"]["collect.crystallinity"]
            others["collect"] -= st["detail"]["collect.crystallinity"]
        worst = max(others, key=others.get)
        out.append(f"- **speed {name}** ({s['n_chips']} chips of {s['chip_size']} px): segment() "
                   f"{s['segment_median']:.2f} s vs encode() {s['encode_median']:.2f} s: overhead "
                   f"{100 * s['overhead']:.0f} % (min/min {100 * s['overhead_min_based']:.0f} %, "
                   f"goal 15 %: {'met' if s['meets_goal'] else 'not met'}); largest non-encoder "
                   f"step: {worst} {others[worst]:.2f} s ({100 * others[worst] / st['total']:.0f} % "
                   f"of the staged run); peak RSS {fnum(s['peak_rss_mib'], 0)} MiB "
                   f"(+{fnum(s['peak_increase_mib'], 0)} MiB during the run).")
    if out:
        out = ["## Headlines", ""] + out + [""]
    return out


def make_report(results: dict[str, Any], out: Path) -> str:
    m = results["machine"]
    v = results["versions"]
    L: list[str] = []
    L.append("# Image pipeline benchmark")
    L.append("")
    L.append(f"Created {results['created']} in {results['wall_seconds'] / 60:.1f} min. "
             f"Parts: {', '.join(results['parts'])}{' (--quick)' if results['args']['quick'] else ''}.")
    L.append("")
    L.append(f"Machine: {m.get('cpu_model')}, {m.get('cpu_count')} CPUs "
             f"(affinity {m.get('cpu_affinity')}), {m.get('mem_total_gib')} GiB RAM, no GPU used; "
             f"torch {v.get('torch')} with {m.get('torch_threads')} threads; "
             f"numpy {v.get('numpy')}, scipy {v.get('scipy')}, scikit-learn {v.get('scikit-learn')}, "
             f"igraph {v.get('igraph')}, dask {v.get('dask')}, zarr {v.get('zarr')}; "
             f"multimodal-seg {v.get('multimodal-seg')}, Python {v.get('python')}. "
             + blas_line(m))
    L.append("")
    L.append(f"Default encoder here: {results.get('auto_encoder_choice', '?')}")
    L.append("")
    g0, g1 = results.get("package_state_start", {}), results.get("package_state_end", {})
    if g0.get("head"):
        L.append(f"Package code measured: commit `{g0['head'][:12]}`"
                 + (f" plus uncommitted changes to {len(g0['dirty'])} file(s) under `multimodal_seg/` "
                    f"(state hash `{g0['changes_sha256']}`)" if g0.get("dirty") else " (clean)") + "."
                 + ("" if (g0.get("head"), g0.get("changes_sha256")) == (g1.get("head"), g1.get("changes_sha256"))
                    else " **The package code changed while the benchmark ran** (end state: "
                         f"`{(g1.get('head') or '?')[:12]}`, hash `{g1.get('changes_sha256')}`); "
                         "parts that ran later may have measured different code."))
    L.append("")
    L.append("All scores are **pixel-level** (`multimodal_seg.metrics.agreement` on "
             "`Segmentation.pixel_labels` vs the truth/label image, every pixel). "
             "Many-to-one accuracy maps each community to its majority truth class; "
             "*majority baseline* is the many-to-one accuracy of a single community "
             "(the largest class's pixel fraction). *IoU (m2o)* is the IoU of a truth class "
             "with the union of the communities mapped to it. `communities` = Leiden communities "
             "on the chip graph. Values are mean ± sd over images/seeds. All runs use `seed=0`, "
             "`k=15`, 30 PCs, Leiden resolution 1.")
    L.append("")

    L += headlines(results)
    q = results.get("quality", {})
    if "phantom" in q:
        p = q["phantom"]
        L.append(f"## Quality: HAADF phantom {p['shape'][0]}x{p['shape'][1]}, seeds "
                 f"{', '.join(map(str, p['seeds']))}")
        L.append("")
        L.append("Truth regions: " + "; ".join(f"{i}: {n}" for i, n in enumerate(p["region_names"])) + ".")
        L.append("")
        L += quality_table(p["summary"], ["default", "resnet50-random"], None, [])
        L.append("")
        L.append("<details><summary>per seed</summary>")
        L.append("")
        L += per_image_table(p["records"], ["default", "resnet50-random"])
        L.append("")
        L.append("</details>")
        L.append("")
    for name in ("ebc", "super"):
        if name not in q:
            continue
        d = q[name]
        title = DATASETS[name]["title"]
        L.append(f"## Quality: {title}")
        L.append("")
        if "skipped" in d:
            L.append(f"Skipped: {d['skipped']}")
            L.append("")
            continue
        L.append("Labels: " + "; ".join(f"{i} {c}" for i, c in enumerate(d["classes"])) + ". "
                 f"{d['n_available']} labelled images available; the default encoder ran on "
                 f"{len(d['images_default'])}, the baselines (ResNet50 random, and the default "
                 f"encoder with non-overlapping chips) on {len(d['images_subset'])} spread over the "
                 f"sorted list: {', '.join(d['images_subset'])}.")
        L.append("")
        if name == "ebc":
            L.append("**Read the EBC numbers with care:** the human labels lump the top coating "
                     "and the substrate into one *background* class, while an unsupervised method "
                     "sees two very different materials and separates them; that costs ARI (and "
                     "NMI) without being wrong. Many-to-one accuracy does not penalise that split "
                     "and is the fairer figure here, but it must be read against the majority "
                     "baseline (what one single community scores: the background fraction, "
                     f"{d['summary']['default']['majority_fraction'][0]:.2f} on average here) and "
                     "the number of communities. "
                     "The TGO and crack IoU (m2o) show whether the thin classes are found at all.")
            L.append("")
        iou = [str(i) for i in range(len(d["classes"]))]
        L += quality_table(d["summary"], ["default", "default@subset", "default-nonoverlap",
                                          "resnet50-random"], d["classes"], iou)
        L.append("")
        L.append("<details><summary>per image (ARI / many-to-one / communities)</summary>")
        L.append("")
        L += per_image_table(d["records"], list(CONFIGS))
        L.append("")
        L.append("</details>")
        L.append("")

    sp_ = results.get("speed")
    if sp_:
        L.append(f"## Speed and memory: {sp_['image']}")
        L.append("")
        L.append("Each case runs in a fresh Python process: a warm-up `segment()` on a small crop "
                 "(imports, first-call costs), then `segment(image, out=None, progress=False)` "
                 "timed (median of the repeats), then the encoder's `encode()` alone on exactly the "
                 "same chips (cut in memory with the package's own `stages.intensity_scale` and "
                 "chip iterator, in the batches `embed_chips` passes, checked to give the same "
                 "embeddings), then instrumented `segment()` runs: the real call, with timing "
                 "wrappers around the stage functions it calls (`stages.*`, `pipeline.collect`, "
                 "...) and around the functions those call (`encode`, PCA, kNN, back-projection, "
                 "crystallinity ...); a step's `rest` is its time outside the wrapped parts. "
                 "**overhead = segment / encode - 1**; the issue's goal is <= 15 %. "
                 "Peak memory: kernel peak RSS (VmHWM, reset just before the first timed run) "
                 "of the whole process, and its rise over the RSS before that run; "
                 "`tracemalloc` peak counts numpy/Python allocations only. *CPU time* is the "
                 "process's `time.process_time()` (all its threads), less sensitive to other load "
                 "on the machine than wall time.")
        L.append("")
        L.append("| case | chips (size/stride px) | segment() s: median (runs) | encode() alone s: "
                 "median (runs) | overhead (median) | overhead (min/min) | overhead (CPU time) | "
                 "goal <= 15 % | chips/s encode | peak RSS MiB | rise MiB | tracemalloc peak MiB |")
        L.append("|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|")
        for name, c in sp_["cases"].items():
            if "error" in c:
                L.append(f"| {name} | error: see results.json | | | | | | | | | | |")
                continue
            s = c["summary"]
            L.append(
                f"| {name}: {c['title']} | {s['n_chips']} ({s['chip_size']}/{s['stride']}) | "
                f"{s['segment_median']:.2f} ({', '.join(f'{x:.2f}' for x in c['segment_seconds'])}) | "
                f"{s['encode_median']:.2f} ({', '.join(f'{x:.2f}' for x in c['encode_seconds'])}) | "
                f"{100 * s['overhead']:.0f} % | {100 * s['overhead_min_based']:.0f} % | "
                f"{100 * s['overhead_cpu']:.0f} % | {'yes' if s['meets_goal'] else '**no**'} | "
                f"{s['chips_per_s_encode']:.1f} | {fnum(s['peak_rss_mib'], 0)} | "
                f"{fnum(s['peak_increase_mib'], 0)} | {fnum(s['tracemalloc_peak_mib'], 0)} |")
        L.append("")
        for name, c in sp_["cases"].items():
            if "error" in c:
                continue
            L.append(f"- {name}: warm-up {c['warmup_seconds']:.1f} s on a {c['spec']['warmup_crop']} px "
                     f"crop; encode batches {c['encode_batches']} (batch_chips={c['batch_chips']}); "
                     f"same-chips check: max |diff| of embeddings {c['same_chips_max_abs_diff']:.2g}; "
                     f"encoder {json.dumps(c['encoder'])}; "
                     f"instrumented segment() totals "
                     f"{', '.join('%.2f' % r['total'] for r in c['staged'])} s; CPU time of "
                     f"segment() {', '.join('%.2f' % x for x in c['segment_cpu_seconds'])} s, of "
                     f"encode() {', '.join('%.2f' % x for x in c['encode_cpu_seconds'])} s; "
                     f"load average before/after {c['loadavg_before'][0]:.2f}/"
                     f"{c['loadavg_after'][0]:.2f}.")
            if c.get("throughput"):
                L.append("  ResNet50 (random weights) `encode()` throughput on this machine: " + "; ".join(
                    f"{t['chip']} px chips{' resized to ' + str(t['resize']) if t.get('resize') else ''}"
                    f" ({t['layer']}): {t['chips_per_s']:.1f} chips/s" for t in c["throughput"]) + ".")
        L.append("")
        spreads = [max(x) / min(x) for c in sp_["cases"].values() if "summary" in c
                   for x in (c["segment_seconds"], c["encode_seconds"]) if len(x) > 1 and min(x) > 0]
        if spreads and max(spreads) > 1.3:
            L.append(f"**Noisy timings:** identical repeated runs differed by up to "
                     f"{max(spreads):.1f}x (slowest/fastest) in this report; the machine was not "
                     f"idle (see the load averages) or its CPU time is shared. Prefer the min/min "
                     f"and CPU-time overheads, and compare stage shares rather than absolute seconds.")
            L.append("")
        L.append("### Where the time goes (instrumented segment(); median per step over "
                 + ", ".join(f"{c['summary']['staged_median']['n_runs']} ({n})"
                             for n, c in sp_["cases"].items() if "summary" in c) + " runs)")
        L.append("")
        L += stage_table(sp_["cases"])
        L.append("")
        if (out / "speed_stages.png").exists():
            L.append("![stage times](speed_stages.png)")
            L.append("")
    if (out / "quality.png").exists():
        L.append("![quality](quality.png)")
        L.append("")
    if results.get("errors"):
        L.append("## Errors")
        L.append("")
        for e in results["errors"]:
            L.append(f"- {e}")
        L.append("")
    L.append("## Reproduce")
    L.append("")
    L.append("```")
    L.append(results["command"])
    L.append("```")
    L.append("")
    L.append("All numbers, per image and per run, are in `results.json`.")
    L.append("")
    return "\n".join(L)


def make_plots(results: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    written = []
    sp_ = results.get("speed")
    cases = {n: c for n, c in (sp_ or {}).get("cases", {}).items() if "staged" in c}
    if cases:
        fig = Figure(figsize=(8, 1.2 + 0.7 * len(cases)))
        ax = fig.add_subplot(1, 1, 1)
        parts = [("embed.encode", "encode()"),
                 ("embed.read_and_cut_chips", "chip reads"),
                 ("graph.standardise_pca", "PCA"), ("graph.knn", "kNN"),
                 ("communities", "Leiden"), ("collect.back_projection", "back-projection"),
                 ("collect.crystallinity", "crystallinity"),
                 ("other", "other")]
        colors = ["#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#d62728", "#9467bd",
                  "#c7c7c7"]
        names = list(cases)
        for i, n in enumerate(names):
            st = cases[n]["summary"]["staged_median"]
            vals = []
            for key, _ in parts[:-1]:
                vals.append(st["stages"][key] if key in st["stages"] else st["detail"].get(key, 0.0))
            vals.append(st["total"] - sum(vals))
            total = st["total"]
            left = 0.0
            for (key, label), v, col in zip(parts, vals, colors):
                ax.barh(i, 100 * v / total, left=left, color=col, label=label if i == 0 else None)
                left += 100 * v / total
            ax.text(101, i, f"{total:.1f} s", va="center", fontsize=8)
        ax.set_yticks(range(len(names)), names)
        ax.set_xlim(0, 115)
        ax.set_xlabel("% of segment() wall time (instrumented run)")
        ax.legend(ncol=4, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.35 if len(names) < 3 else -0.2),
                  frameon=False)
        fig.tight_layout()
        write_atomic(out / "speed_stages.png", lambda p: fig.savefig(p, dpi=90, format="png"))
        written.append("speed_stages.png")

    q = results.get("quality", {})
    groups = []
    for name in ("phantom", "ebc", "super"):
        d = q.get(name)
        if not d or "summary" not in d:
            continue
        keys = ["default", "resnet50-random"] if name == "phantom" else \
            ["default@subset", "default-nonoverlap", "resnet50-random"]
        groups.append((name, d["summary"], keys))
    if groups:
        fig = Figure(figsize=(3.2 * len(groups), 3.2))
        for gi, (name, summ, keys) in enumerate(groups):
            ax = fig.add_subplot(1, len(groups), gi + 1)
            width = 0.8 / len(keys)
            for ki, key in enumerate(keys):
                s = summ.get(key)
                if not s or not s.get("n"):
                    continue
                vals = [s["ari"][0], s["many_to_one"][0]]
                errs = [s["ari"][1], s["many_to_one"][1]]
                ax.bar(np.arange(2) + (ki - (len(keys) - 1) / 2) * width, vals, width, yerr=errs,
                       label=f"{key} (n={s['n']})", capsize=2)
            base = next((summ[k]["majority_fraction"][0] for k in keys
                         if summ.get(k, {}).get("n") and name != "phantom"), None)
            if base is not None:
                ax.axhline(base, color="k", lw=0.8, ls="--")
                ax.text(1.45, base, "majority", fontsize=7, va="bottom", ha="right")
            ax.set_xticks([0, 1], ["ARI", "many-to-one"])
            ax.set_ylim(0, 1.45)
            ax.set_yticks(np.linspace(0, 1, 6))
            ax.set_title(name, fontsize=9)
            ax.legend(fontsize=6, loc="upper left", frameon=False)
        fig.tight_layout()
        write_atomic(out / "quality.png", lambda p: fig.savefig(p, dpi=90, format="png"))
        written.append("quality.png")
    return written


# --------------------------------------------------------------------------- main


def parse_parts(text: str) -> list[str]:
    parts: list[str] = []
    for item in text.split(","):
        item = item.strip().lower()
        if not item:
            continue
        if item in PART_ALIASES:
            parts += PART_ALIASES[item]
        elif item in ALL_PARTS:
            parts.append(item)
        else:
            raise argparse.ArgumentTypeError(
                f"unknown part {item!r}; use {', '.join([*PART_ALIASES, *ALL_PARTS])}")
    return [p for p in ALL_PARTS if p in parts]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_dir", nargs="?", default=None,
                    help="shared data folder holding labelled/nasa_pmm (real-data parts are skipped "
                         "when it is absent or lacks the sets)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "reports" / "local",
                    help="report folder (default: benchmarks/reports/local)")
    ap.add_argument("--parts", type=parse_parts, default=list(ALL_PARTS),
                    help="comma-separated: quality (= phantom,ebc,super), phantom, ebc, super, speed, all")
    ap.add_argument("--quick", action="store_true",
                    help="small, fast subset (~3 min): 1 phantom seed, 2+1 images per set, "
                         "1024 px speed image, 1 repeat")
    ap.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=None,
                    help="phantom seeds (default 0,1,2; quick: 0)")
    ap.add_argument("--phantom-size", type=int, default=512)
    ap.add_argument("--ebc-images", type=int, default=None,
                    help="EBC images for the default encoder (default all; quick 2)")
    ap.add_argument("--ebc-resnet-images", type=int, default=None,
                    help="EBC images for the baselines (default 4; quick 1)")
    ap.add_argument("--super-images", type=int, default=None,
                    help="superalloy images for the default encoder (default all; quick 2)")
    ap.add_argument("--super-resnet-images", type=int, default=None,
                    help="superalloy images for the baselines (default 3; quick 1)")
    ap.add_argument("--speed-size", type=int, default=None, help="speed phantom edge (default 2048)")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats (default 3; quick 1)")
    ap.add_argument("--resnet-speed-size", type=int, default=None,
                    help="edge of the phantom crop for the ResNet50 speed case (default 1024; "
                         "quick 512; 0 skips it)")
    ap.add_argument("--resnet-speed-chip", type=int, default=128,
                    help="chip size and stride of the ResNet50 speed case (default 128)")
    ap.add_argument("--no-blas1", dest="blas1", action="store_false",
                    help="skip the OPENBLAS_NUM_THREADS=1 variant of the speed case")
    ap.add_argument("--no-plots", dest="plots", action="store_false")
    ap.add_argument("--_speed-case", dest="speed_case", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_speed-out", dest="speed_out", default=None, help=argparse.SUPPRESS)
    return ap


def apply_defaults(args: argparse.Namespace) -> None:
    q = args.quick

    def dflt(name: str, full: Any, quick: Any) -> None:
        if getattr(args, name) is None:
            setattr(args, name, quick if q else full)

    dflt("seeds", [0, 1, 2], [0])
    dflt("ebc_images", None, 2)
    dflt("ebc_resnet_images", 4, 1)
    dflt("super_images", None, 2)
    dflt("super_resnet_images", 3, 1)
    dflt("speed_size", 2048, 1024)
    dflt("repeats", 3, 1)
    dflt("resnet_speed_size", 1024, 512)
    if q:
        args.blas1 = False


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.speed_case:  # subprocess entry: one speed case
        spec = json.loads(Path(args.speed_case).read_text())
        write_json(Path(args.speed_out), speed_case(spec))
        return 0
    apply_defaults(args)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    t_start = time.perf_counter()
    command = "python benchmarks/bench_image.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))

    from multimodal_seg.encoders import resolve_auto
    from multimodal_seg.provenance import package_versions

    results: dict[str, Any] = {
        "benchmark": "image",
        "created": now_iso(),
        "command": command,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                 if not k.startswith("speed_case") and k != "speed_out"},
        "parts": args.parts,
        "machine": machine_info(),
        "versions": package_versions(),
        "configs": CONFIGS,
        "auto_encoder_choice": resolve_auto()[2],
        "package_state_start": git_state(),
        "quality": {},
    }
    log(f"parts {args.parts}; out {out}")
    log(results["auto_encoder_choice"])

    def checkpoint() -> None:
        results["wall_seconds"] = time.perf_counter() - t_start
        write_json(out / "results.json", results)

    if "phantom" in args.parts:
        results["quality"]["phantom"] = quality_phantom(args)
        checkpoint()
    for name in ("ebc", "super"):
        if name in args.parts:
            if args.data_dir is None:
                msg = "no DATA_DIR given"
                log(f"{name}: skipped: {msg}")
                results["quality"][name] = {"skipped": msg}
            else:
                results["quality"][name] = quality_labelled(args, name)
            checkpoint()
    if "speed" in args.parts:
        results["speed"] = speed_part(args, work)
        checkpoint()

    errors = []
    for name, d in results["quality"].items():
        for r in d.get("records", []):
            if "error" in r:
                errors.append(f"{name} {r['image']} {r['config']}: {r['error']}")
    for name, c in (results.get("speed") or {}).get("cases", {}).items():
        if "error" in c:
            errors.append(f"speed {name}: exit {c.get('returncode')}")
    results["errors"] = errors
    results["package_state_end"] = git_state()
    results["wall_seconds"] = time.perf_counter() - t_start
    results["figures"] = make_plots(results, out) if args.plots else []
    write_json(out / "results.json", results)
    report = make_report(results, out)
    write_atomic(out / "report.md", lambda p: p.write_text(report))
    with contextlib.suppress(OSError):
        for p in work.glob("*"):
            p.unlink()
        work.rmdir()
    log(f"done in {results['wall_seconds'] / 60:.1f} min: {out / 'report.md'}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
