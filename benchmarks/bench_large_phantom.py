"""Large multimodal phantom: render it straight to zarr, then segment it from the store.

    python benchmarks/bench_large_phantom.py WORK_DIR --out benchmarks/reports/large-phantom-2cpu \
        [--scan 256] [--pattern 128] [--seed 0]

Exercises the out-of-core path at the size of a real 4D-STEM scan: the phantom
(:func:`multimodal_seg.synthetic.multimodal.multimodal_phantom` with ``out=``) is written chunk
by chunk to ``WORK_DIR/phantom.zarr`` and segmented (defaults) from the lazy zarr arrays, so
neither step holds a whole cube in memory.  Records wall time, peak resident memory (VmHWM,
reset between the steps) and the size on disk of each step, and the joint and per-modality
adjusted Rand index on the scan grid.  WORK_DIR is deleted afterwards unless ``--keep``.
Writes ``results.json`` and ``report.md`` in ``--out`` atomically.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import time
from pathlib import Path

from multimodal_seg.bench.speed import ChildrenMemory, peak_rss_mib, reset_peak_rss
from multimodal_seg.metrics import agreement
from multimodal_seg.synthetic.multimodal import multimodal_phantom
from multimodal_seg.pipeline.segment import segment
from multimodal_seg.provenance import package_versions, to_json, write_text_atomic


def disk_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path, help="scratch folder for the zarr stores")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--scan", type=int, default=256)
    parser.add_argument("--pattern", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    steps: dict[str, dict] = {}

    reset_peak_rss()
    start = time.perf_counter()
    phantom = multimodal_phantom((args.scan, args.scan), pattern_size=args.pattern, seed=args.seed,
                                 out=args.work / "phantom.zarr", overwrite=True)
    steps["render"] = {"seconds": time.perf_counter() - start, "peak_rss_mib": peak_rss_mib(),
                       "disk_mib": disk_mib(args.work / "phantom.zarr")}
    print("render", steps["render"], flush=True)

    reset_peak_rss()
    start = time.perf_counter()
    # a consensus may share its runs with a forked helper process (graphs/ahead.py): its own
    # memory is recorded beside this process's peak
    with ChildrenMemory() as helper:
        seg = segment(phantom.modalities(), seed=args.seed, out=args.work / "segmentation",
                      progress=False)
    steps["segment"] = {"seconds": time.perf_counter() - start, "peak_rss_mib": peak_rss_mib(),
                        "helper_private_mib": helper.peak_mib,
                        "disk_mib": disk_mib(args.work / "segmentation")}
    scores = {n: agreement(labels, phantom.truth) for n, labels in seg.scan_labels.items()}
    print("segment", steps["segment"], {n: round(s["ari"], 3) for n, s in scores.items()}, flush=True)

    cube_gib = phantom.diffraction.nbytes / 2**30
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "steps": steps, "scores": scores,
              "shapes": {"haadf": list(phantom.haadf.shape), "eels": list(phantom.eels.shape),
                         "diffraction": list(phantom.diffraction.shape)},
              "diffraction_gib_in_memory": cube_gib, "grid": seg.provenance["grid"],
              "segment_step_seconds": seg.provenance["seconds"],
              "versions": package_versions(),
              "machine": {"platform": platform.platform(), "processor": platform.processor()}}
    write_text_atomic(args.out / "results.json", to_json(result))
    lines = [
        "# Large multimodal phantom, out of core", "",
        f"Scan {args.scan}x{args.scan}, {args.pattern}x{args.pattern} px patterns "
        f"({cube_gib:.2f} GiB as float32), EELS {phantom.eels.shape[2]} channels, HAADF "
        f"{phantom.haadf.shape[0]}x{phantom.haadf.shape[1]} px; seed {args.seed}; defaults.", "",
        "| step | s | peak RSS (MiB) | on disk (MiB) |", "|---|---:|---:|---:|",
    ]
    for name, st in steps.items():
        rss = "n/a" if st["peak_rss_mib"] is None else f"{st['peak_rss_mib']:.0f}"
        lines.append(f"| {name} | {st['seconds']:.1f} | {rss} | {st['disk_mib']:.0f} |")
    helper_mib = steps["segment"]["helper_private_mib"]
    if helper_mib:
        lines += ["", f"The consensus's helper process held {helper_mib:.0f} MiB of its own beside the "
                  "segment step's peak (graphs/ahead.py)."]
    lines += ["", "Where `segment()` spent its time (s; `provenance.json`'s `seconds`): "
              + ", ".join(f"{name} {value:.1f}" for name, value in seg.provenance["seconds"].items()) + "."]
    lines += ["", "| partition | ARI | many-to-one | communities |", "|---|---:|---:|---:|"]
    lines += [f"| {n} | {s['ari']:.3f} | {s['many_to_one']:.3f} | {s['n_pred']} |" for n, s in scores.items()]
    lines += ["", f"Reproduce: `python benchmarks/bench_large_phantom.py WORK --out DIR --scan {args.scan} "
              f"--pattern {args.pattern} --seed {args.seed}`", ""]
    write_text_atomic(args.out / "report.md", "\n".join(lines))
    if not args.keep:
        shutil.rmtree(args.work)


if __name__ == "__main__":
    main()
