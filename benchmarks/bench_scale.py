"""Scale: encoders against the hardware, fixed costs, schedulers, and a killed batch resumed.

    python benchmarks/bench_scale.py WORK_DIR --out benchmarks/reports/scale-2cpu [--parts ...]

Parts (``--parts encoders,overhead,schedulers,resume``):

``encoders``
    The float32 matmul peak (:func:`multimodal_seg.bench.speed.peak_flops`), then each convnet
    encoder's FLOP rate as a fraction of it, eager and compiled (``compile=True``:
    ``torch.compile``; the first call, which compiles or reads inductor's cache, is reported
    apart): ResNet50 at its default 224 px input on 128 px phantom chips, ``spectrum-cnn`` on
    EELS chips and ``diffraction-cnn`` on 4D-STEM chips of the multimodal phantom.
``overhead``
    The ``fourier`` encoder's forward pass on the 961 chips of a 2048^2 HAADF phantom (one
    thread, as ``encoder.encode`` runs) against ``segment()`` of the same image (the second of
    two runs), as ``mmseg bench --parts speed`` measures it.
``schedulers``
    A batch of phantom images on Dask's threaded scheduler and on a 2-worker ``LocalCluster``:
    wall times, and whether every specimen's labels are equal.
``resume``
    ``mmseg batch`` of >= 20 phantom images, killed with SIGKILL part way, then run again:
    how many specimens were finished, how many times each was started (``logs/``), and whether
    any stage output finished before the kill was written again (modification times of the
    studies' outputs).

Writes ``scale.json`` and ``scale.md`` in ``--out`` (atomically, after each part).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

QUICK = {"encoder": {"name": "fourier"}}


def load() -> float:
    return round(os.getloadavg()[0], 2)


def write_images(folder: Path, n: int, size: int) -> list[Path]:
    from multimodal_seg.synthetic.files import write_phantom_images

    return write_phantom_images(folder, n, size=size)


# --------------------------------------------------------------------------- encoders


def part_encoders(work: Path) -> dict:
    from multimodal_seg.bench import speed
    from multimodal_seg.chips.grid import ChipGrid, iter_chips
    from multimodal_seg.encoders import get_encoder
    from multimodal_seg.synthetic.multimodal import multimodal_phantom
    from multimodal_seg.synthetic.phantoms import haadf_phantom

    peak = speed.peak_flops()
    image = haadf_phantom((1024, 1024), seed=0).image.astype(np.float32)
    image = np.clip((image - image.min()) / np.ptp(image), 0, 1)
    grid = ChipGrid(image.shape, 128, 128)
    image_chips = np.concatenate([c for _, c in iter_chips(image, grid.origins, 128)])[:64]
    phantom = multimodal_phantom((32, 32), seed=0)
    eels, diffraction = np.asarray(phantom.eels), np.asarray(phantom.diffraction)
    spectrum_chips = np.concatenate([c for _, c in iter_chips(eels, ChipGrid((32, 32), 4, 4).origins, 4)])
    pattern_chips = np.concatenate([c for _, c in iter_chips(diffraction, ChipGrid((32, 32), 4, 4).origins, 4)])[:16]
    cases = [("resnet50", {"weights": "random"}, image_chips),
             ("spectrum-cnn", {"weights": "random"}, spectrum_chips),
             ("diffraction-cnn", {"weights": "random"}, pattern_chips)]
    rows = []
    for name, options, chips in cases:
        eager = get_encoder(name, **options)
        flops = speed.encoder_flops_per_chip(eager, chips.shape[1:])
        for compiled in (False, True):
            encoder = eager if not compiled else get_encoder(name, **options, compile=True)
            encoder.encode(chips[:1])  # compiles (or reads the cache) before the peak is measured
            # On a shared machine the peak moves with the load: measured right before each row.
            row_peak = speed.peak_flops()
            result = speed.encoder_throughput(encoder, chips, repeats=3, peak=row_peak, flops_per_chip=flops)
            result["peak_measured_method"] = row_peak["measured_method"]
            result.update(name=name, compiled=compiled, load=load(),
                          fallback=getattr(getattr(encoder, "runner", None), "fallback", None))
            rows.append(result)
            print("encoders", name, compiled, f"{result['fraction_of_measured_peak']:.3f}",
                  f"warm-up {result['warmup_seconds']:.1f} s", flush=True)
    return {"peak": peak, "rows": rows,
            "inductor_cache": os.environ.get("TORCHINDUCTOR_CACHE_DIR", "default (under the temp folder)")}


# --------------------------------------------------------------------------- overhead


def part_overhead(work: Path) -> dict:
    from multimodal_seg.bench import methods, speed
    from multimodal_seg.chips.grid import iter_chips
    from multimodal_seg.encoders import get_encoder
    from multimodal_seg.pipeline.segment import segment
    from multimodal_seg.synthetic.phantoms import haadf_phantom

    image = haadf_phantom((2048, 2048), seed=0).image.astype(np.float32)
    low, high = np.percentile(image, [1, 99])
    scaled = np.clip((image - low) / (high - low), 0, 1).astype(np.float32)
    grid = methods.default_grid(image.shape)
    chips = np.concatenate([c for _, c in iter_chips(scaled, grid.origins, grid.size)])
    forward = speed.encoder_throughput(get_encoder("fourier"), chips, repeats=3, peak={})
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        segment(image, seed=0, progress=False, encoder="fourier", stride=grid.stride)
        runs.append(time.perf_counter() - start)
    seconds = float(np.median(runs[1:]))
    out = {"n_chips": grid.n_chips, "forward_seconds": forward["seconds"], "segment_seconds": seconds,
           "segment_runs": runs, "overhead": seconds / forward["seconds"] - 1.0, "load": load()}
    print("overhead", out, flush=True)
    return out


# --------------------------------------------------------------------------- schedulers


def part_schedulers(work: Path, n: int = 8, size: int = 512) -> dict:
    import zarr

    from multimodal_seg.batch import run_batch

    images = write_images(work / "sched-images", n, size)
    out = {"n_inputs": n, "image_size": size}
    for name, compute in (("threads", {}), ("processes", {"scheduler": "processes", "workers": 2})):
        target = work / f"sched-{name}"
        shutil.rmtree(target, ignore_errors=True)
        before = load()
        start = time.perf_counter()
        result = run_batch(images, out=target, config={**QUICK, "compute": compute}, progress=False)
        out[name] = {"seconds": time.perf_counter() - start, "ok": result.ok, "scheduler": result.scheduler,
                     "load_before": before, "load_after": load()}
        print("schedulers", name, out[name], flush=True)
    equal = [bool(np.array_equal(zarr.open_group(str(work / "sched-threads" / p.stem / "labels.zarr"))["chip_labels"][...],
                                 zarr.open_group(str(work / "sched-processes" / p.stem / "labels.zarr"))["chip_labels"][...]))
             for p in images]
    out["equal_labels"] = f"{sum(equal)} of {len(equal)}"
    return out


# --------------------------------------------------------------------------- resume


def _stamps(store: Path) -> dict[str, int]:
    from multimodal_seg.batch.repair import finished_outputs

    return {k: (store / k / "zarr.json").stat().st_mtime_ns for k in finished_outputs(store)}


def part_resume(work: Path, n: int = 24, size: int = 384, kill_after: int = 8) -> dict:
    from multimodal_seg.batch.run import attempts

    images = work / "resume-images"
    write_images(images, n, size)
    out_dir = work / "resume-out"
    shutil.rmtree(out_dir, ignore_errors=True)
    config = work / "quick.yaml"
    config.write_text("encoder: {name: fourier}\n")
    command = [sys.executable, "-m", "multimodal_seg.cli", "batch", str(images), "--out", str(out_dir),
               "-c", str(config), "-q"]
    root = Path(__file__).resolve().parents[1]
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while sum((out_dir / f"img{i:0{len(str(n - 1))}d}" / "batch.json").exists() for i in range(n)) < kill_after:
        time.sleep(0.05)
        if process.poll() is not None:
            raise SystemExit("the batch ended before it could be killed")
    os.kill(process.pid, signal.SIGKILL)  # kill -9 of the batch process
    process.wait()
    killed_after = time.perf_counter() - start
    names = [f"img{i:0{len(str(n - 1))}d}" for i in range(n)]
    finished = [m for m in names if (out_dir / m / "batch.json").exists()]
    interrupted = [m for m in names if m not in finished and (out_dir / m / "study.zarr").exists()]
    stamps = {m: _stamps(out_dir / m / "study.zarr") for m in finished + interrupted}
    start = time.perf_counter()
    resumed = subprocess.run(command, cwd=root, capture_output=True, text=True)
    resume_seconds = time.perf_counter() - start
    with (out_dir / "summary.csv").open() as fh:
        rows = {r["name"]: r for r in csv.DictReader(fh)}
    starts = {m: sum(e["event"] == "start" for e in attempts(out_dir, m)) for m in names}
    rewritten = {m: sorted(k for k, t in before.items() if _stamps(out_dir / m / "study.zarr").get(k) != t)
                 for m, before in stamps.items()}
    out = {"n_inputs": n, "image_size": size, "killed_after_seconds": killed_after,
           "finished_before_kill": len(finished), "interrupted": interrupted,
           "finished_outputs_kept": {m: sorted(stamps[m]) for m in interrupted},
           "resume_exit_status": resumed.returncode, "resume_seconds": resume_seconds,
           "summary_rows": len(rows), "statuses": {s: sum(r["status"] == s for r in rows.values())
                                                  for s in ("done", "skipped", "failed", "pending")},
           "starts": starts, "computed_twice": sorted(m for m in finished if starts[m] > 1),
           "outputs_written_again": {m: v for m, v in rewritten.items() if v}, "load": load()}
    print("resume", {k: v for k, v in out.items() if k not in ("starts", "finished_outputs_kept")}, flush=True)
    return out


# --------------------------------------------------------------------------- report


def report(record: dict) -> str:
    lines = ["# Scale: encoders, fixed costs, schedulers, a killed batch", "",
             f"Machine: {record['machine']}. The machine is shared with other work: the 1-minute load "
             "average is given beside each figure (2 cores; a load above 2 means other processes were "
             "running).", ""]
    parts = record["parts"]
    if "encoders" in parts:
        enc = parts["encoders"]
        lines += ["## Encoders against the measured float32 matmul peak", "",
                  f"Peak: {enc['peak']['measured_method']} (at the start; each row's fraction is of the peak "
                  "measured right before it, given in GFLOP/s).", "",
                  "| encoder | path | chips | GFLOP/chip | chips/s | GFLOP/s | peak GFLOP/s | of measured peak | "
                  "of peak per CPU-second | first call s | load |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in enc["rows"]:
            path = "compiled" if r["compiled"] else "eager"
            if r.get("fallback"):
                path += f" (fell back: {r['fallback']})"
            frac = r["fraction_of_measured_peak"]
            lines.append(f"| {r['name']} | {path} | {r['n_chips']} | {(r['flops_per_chip'] or 0) / 1e9:.3f} | "
                         f"{r['chips_per_s']:.1f} | {r['flop_rate'] / 1e9:.1f} | {r['peak_measured_flops'] / 1e9:.1f} | "
                         f"{frac:.3f} | {r['fraction_of_measured_cpu_peak']:.3f} | {r['warmup_seconds']:.1f} | "
                         f"{r['load']} |")
        lines += ["", "Goal: >= 0.50 of the measured peak. 'Per CPU-second': FLOP per CPU-second of the "
                  "process (times torch's 2 threads) against the same for the matmul peak; it counts only "
                  "the time the threads ran, so other work on the machine moves it less than the wall-time "
                  "fraction (which can exceed 1 when the peak was measured in a busier moment). First call: the untimed warm-up of the timed "
                  "batch; the compiled encoders compiled (or read inductor's on-disk cache) on one chip "
                  "before it, and a new chip count (the padded batch shape) can compile again.", ""]
    if "overhead" in parts:
        o = parts["overhead"]
        lines += ["## Fixed costs around a cheap encoder", "",
                  f"`fourier` on {o['n_chips']} chips of a 2048^2 phantom: forward pass {o['forward_seconds']:.2f} s "
                  f"(one thread), `segment()` {o['segment_seconds']:.2f} s (median of runs 2-3): overhead "
                  f"**{100 * o['overhead']:+.0f} %** (goal <= +15 %; load {o['load']}).", ""]
    if "schedulers" in parts:
        s = parts["schedulers"]
        lines += ["## Threaded scheduler against a 2-worker LocalCluster", "",
                  f"{s['n_inputs']} phantom images of {s['image_size']}^2 px, `fourier`, defaults otherwise.", "",
                  "| scheduler | s | load before / after |", "|---|---:|---|"]
        for name in ("threads", "processes"):
            lines.append(f"| {name} | {s[name]['seconds']:.1f} | {s[name]['load_before']} / {s[name]['load_after']} |")
        lines += ["", f"Equal labels: {s['equal_labels']} specimens.", ""]
    if "resume" in parts:
        r = parts["resume"]
        lines += ["## A batch killed with SIGKILL and resumed", "",
                  f"{r['n_inputs']} phantom images of {r['image_size']}^2 px; killed after "
                  f"{r['killed_after_seconds']:.0f} s with {r['finished_before_kill']} finished and "
                  f"{len(r['interrupted'])} interrupted ({', '.join(r['interrupted']) or 'none'}); "
                  f"the same command again took {r['resume_seconds']:.0f} s and exited {r['resume_exit_status']}.", "",
                  f"- summary rows: {r['summary_rows']} of {r['n_inputs']}; statuses {r['statuses']}",
                  f"- specimens finished before the kill and computed again: {len(r['computed_twice'])} "
                  f"({', '.join(r['computed_twice']) or 'none'})",
                  f"- stage outputs finished before the kill and written again: "
                  f"{sum(len(v) for v in r['outputs_written_again'].values())}",
                  f"- interrupted specimens resumed from: " + "; ".join(
                      f"{m}: {', '.join(v) or 'nothing'}"
                      for m, v in r["finished_outputs_kept"].items()), ""]
    lines += ["Reproduce: `python benchmarks/bench_scale.py WORK --out DIR`", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--parts", default="encoders,overhead,schedulers,resume")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    from multimodal_seg.provenance import package_versions, to_json, write_text_atomic

    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    functions = {"encoders": part_encoders, "overhead": part_overhead, "schedulers": part_schedulers,
                 "resume": part_resume}
    previous = args.out / "scale.json"
    record = json.loads(previous.read_text()) if previous.exists() else {"parts": {}}
    record.update(versions=package_versions(), machine=f"{platform.processor() or platform.machine()}, "
                  f"{os.cpu_count()} CPUs, {platform.platform()}")
    for part in args.parts.split(","):
        record["parts"][part] = functions[part](args.work)
        write_text_atomic(args.out / "scale.json", to_json(record))
        write_text_atomic(args.out / "scale.md", report(record))
    if not args.keep:
        shutil.rmtree(args.work)


if __name__ == "__main__":
    main()
