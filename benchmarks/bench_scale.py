"""Scale: schedulers, and a killed batch resumed.

    python benchmarks/bench_scale.py WORK_DIR --out benchmarks/reports/scale-2cpu [--parts ...]

Parts (``--parts schedulers,resume``; encoder speed, eager and compiled, and the pipeline's
fixed costs are measured by ``mmseg bench --parts speed``):

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
    lines = ["# Scale: schedulers, a killed batch", "",
             f"Machine: {record['machine']}. The machine is shared with other work: the 1-minute load "
             "average is given beside each figure (2 cores; a load above 2 means other processes were "
             "running).", ""]
    parts = record["parts"]
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
    parser.add_argument("--parts", default="schedulers,resume")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    from multimodal_seg.provenance import package_versions, to_json, write_text_atomic

    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    functions = {"schedulers": part_schedulers, "resume": part_resume}
    previous = args.out / "scale.json"
    record = json.loads(previous.read_text()) if previous.exists() else {"parts": {}}
    # parts this script no longer has (encoders, overhead: now ``mmseg bench --parts speed``)
    record["parts"] = {name: part for name, part in record["parts"].items() if name in functions}
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
