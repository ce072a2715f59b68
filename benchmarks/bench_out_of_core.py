"""A 4D-STEM phantom larger than memory allows, segmented out of core, against HyperSpy.

    python benchmarks/bench_out_of_core.py WORK_DIR --out benchmarks/reports/scale-2cpu \
        [--scan 368] [--pattern 128] [--seed 0] [--keep]

1. The multimodal phantom (:func:`multimodal_seg.synthetic.multimodal.multimodal_phantom`) is
   rendered to ``WORK_DIR/phantom.zarr`` with zarr's compression off, so that the 4D-STEM cube
   takes its full size on disk (scan 368 x 368, 128 x 128 float32 patterns: 8.9 GB), as raw
   detector files do.
2. ``segment()`` of the 4D-STEM cube alone (defaults: its chips, ``diffraction-profiles``, the
   kNN graph, the community step), out of core from that store, into ``WORK_DIR/mmseg``.
3. HyperSpy on the same cube: ``Signal2D`` over the lazy zarr array, ``decomposition()``
   (lazy randomized SVD of 16 components, Poisson-normalised: HyperSpy's recipe for counts), then ``cluster_analysis`` with
   scikit-learn's k-means told the true number of regions (4), on its estimated number of
   significant components (as ``multimodal_seg.bench.peers`` does for its HyperSpy peers).

Each step runs in its own process; its wall time and peak resident memory (``ru_maxrss`` of
that process, from ``os.wait4``) are recorded, with the 1-minute load average before and after
(the machine may be shared).  Both labellings are scored against the phantom's truth (ARI).
Writes ``out_of_core.json`` and ``out_of_core.md`` in ``--out``; WORK_DIR is deleted unless
``--keep``.  ``--steps mmseg,hyperspy`` on a WORK_DIR kept from an earlier run compares the two
again on its cube without rendering it (the report takes the cube's size from its render
record).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

#: Regions of the phantom (its truth), told to k-means.
N_REGIONS = 4
#: Scan rows per chunk of the uncompressed cube (2 rows of 368 patterns of 128^2 float32: 48 MB).
CUBE_CHUNK_ROWS = 2
#: Address space HyperSpy's process may use (bytes): the machine's 24 GiB are shared.
HYPERSPY_ADDRESS_SPACE = 18 * 2**30
#: Components HyperSpy's lazy (randomized) SVD computes.
OUTPUT_DIMENSION = 16


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def step_render(work: Path, scan: int, pattern: int, seed: int) -> dict:
    import dask.array as da
    import zarr

    from multimodal_seg.synthetic.multimodal import multimodal_phantom

    multimodal_phantom((scan, scan), pattern_size=pattern, seed=seed, out=work / "phantom.zarr", overwrite=True)
    # The phantom's store is compressed (its patterns are mostly zeros); the cube is copied
    # into an array without compression, so that it takes its full size on disk like a raw
    # detector file, and the compressed one is removed.
    group = zarr.open_group(str(work / "phantom.zarr"), mode="r+")
    source = group["diffraction"]
    chunks = (CUBE_CHUNK_ROWS, *source.shape[1:])
    cube = group.create_array("cube", shape=source.shape, chunks=chunks, dtype=source.dtype, compressors=None)
    da.from_zarr(source).rechunk(chunks).store(cube, lock=False)
    del group["diffraction"]
    return {"diffraction_shape": list(cube.shape), "diffraction_bytes_on_disk": disk_bytes(work / "phantom.zarr" / "cube"),
            "compressors": str(cube.compressors), "chunks": list(cube.chunks)}


def _cube(work: Path):
    """The phantom's 4D-STEM cube as a calibrated, lazy modality, and its truth."""
    import numpy as np
    import zarr

    from multimodal_seg.synthetic.multimodal import MultimodalPhantom  # noqa: F401 (layout reference)
    from multimodal_seg.modalities.base import Axis, ModalityData
    import dask.array as da

    group = zarr.open_group(str(work / "phantom.zarr"), mode="r")
    axes = [Axis(**a) for a in group.attrs["axes"]["diffraction"]]
    data = da.from_zarr(group["cube"])
    modality = ModalityData(name="diffraction", kind="diffraction", data=data, axes=axes,
                            source=str(work / "phantom.zarr/cube"), metadata={})
    return modality, np.asarray(group["truth"][...])


def step_mmseg(work: Path, seed: int) -> dict:
    from multimodal_seg.bench.speed import ChildrenMemory
    from multimodal_seg.metrics import agreement
    from multimodal_seg.pipeline.segment import segment

    modality, truth = _cube(work)
    shutil.rmtree(work / "mmseg", ignore_errors=True)  # a study kept from an earlier run would skip stages
    start = time.perf_counter()
    # a consensus may share its runs with a forked helper process (graphs/ahead.py): its own
    # memory counts beside this process's peak
    with ChildrenMemory() as helper:
        seg = segment({"diffraction": modality}, seed=seed, out=work / "mmseg", progress=False)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "score": agreement(seg.scan_labels["diffraction"], truth),
            "helper_private_mib": helper.peak_mib or 0.0,
            "grid": seg.provenance["grid"], "n_chips": seg.provenance["n_chips"],
            "study_bytes_on_disk": disk_bytes(work / "mmseg")}


def step_hyperspy(work: Path, seed: int) -> dict:
    import logging
    import warnings

    import hyperspy.api as hs
    from sklearn.cluster import KMeans

    from multimodal_seg.metrics import agreement

    modality, truth = _cube(work)
    logging.getLogger("hyperspy").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    # The machine is shared: HyperSpy's lazy SVD holds the cube in memory, so its address
    # space is capped, and running out is a result (MemoryError), not the OOM killer's pick.
    resource.setrlimit(resource.RLIMIT_AS, (HYPERSPY_ADDRESS_SPACE, HYPERSPY_ADDRESS_SPACE))
    start = time.perf_counter()
    try:
        return _hyperspy_labels(hs, KMeans, agreement, modality, truth, seed, start)
    except MemoryError as exc:
        return {"seconds": time.perf_counter() - start,
                "error": f"MemoryError within {HYPERSPY_ADDRESS_SPACE / 2**30:.0f} GiB of address space: {exc}"}


def _hyperspy_labels(hs, KMeans, agreement, modality, truth, seed: int, start: float) -> dict:
    signal = hs.signals.Signal2D(modality.data).as_lazy()
    # Lazy SVD is randomized and needs a number of components: 16, well above the 4 regions.
    signal.decomposition(normalize_poissonian_noise=True, algorithm="SVD", output_dimension=OUTPUT_DIMENSION,
                         print_info=False)
    estimate = signal.learning_results.number_significant_components
    n_components = int(estimate) if estimate else N_REGIONS
    signal.cluster_analysis("decomposition", number_of_components=n_components,
                            algorithm=KMeans(n_clusters=N_REGIONS, n_init=10, random_state=seed))
    labels = signal.learning_results.cluster_labels.argmax(axis=0).reshape(truth.shape)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "score": agreement(labels, truth), "n_components": n_components}


def run_child(step: str, args: argparse.Namespace) -> dict:
    """Run one step in a fresh process; its result, wall time and peak RSS."""
    result_file = args.work / f"{step}.json"
    command = [sys.executable, __file__, str(args.work), "--out", str(args.out), "--scan", str(args.scan),
               "--pattern", str(args.pattern), "--seed", str(args.seed), "--step", step]
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"step {step} failed (exit {os.waitstatus_to_exitcode(status)})")
    result = json.loads(result_file.read_text())
    result.update(process_seconds=wall, peak_rss_mib=usage.ru_maxrss / 1024, cpu_seconds=usage.ru_utime + usage.ru_stime,
                  load_before=load_before, load_after=os.getloadavg()[0])
    print(step, {k: v for k, v in result.items() if k not in ("grid",)}, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--scan", type=int, default=368)
    parser.add_argument("--pattern", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--step", choices=("render", "mmseg", "hyperspy"), help=argparse.SUPPRESS)
    parser.add_argument("--steps", default="render,mmseg,hyperspy")
    args = parser.parse_args()
    if args.step:  # a child: one step, its result in WORK/<step>.json
        fn = {"render": lambda: step_render(args.work, args.scan, args.pattern, args.seed),
              "mmseg": lambda: step_mmseg(args.work, args.seed),
              "hyperspy": lambda: step_hyperspy(args.work, args.seed)}[args.step]
        (args.work / f"{args.step}.json").write_text(json.dumps(fn(), default=str))
        return
    from multimodal_seg.provenance import package_versions, to_json, write_text_atomic

    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    steps = {}
    for step in args.steps.split(","):
        steps[step] = run_child(step, args)
    record = {"args": {k: str(v) for k, v in vars(args).items()}, "steps": steps, "versions": package_versions(),
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count()}}
    if "render" not in steps and (args.work / "render.json").is_file():  # a cube kept from an earlier run
        record["cube"] = json.loads((args.work / "render.json").read_text())
    write_text_atomic(args.out / "out_of_core.json", to_json(record))
    write_text_atomic(args.out / "out_of_core.md", report(record))
    if not args.keep:
        shutil.rmtree(args.work)


def report(record: dict) -> str:
    steps = record["steps"]
    render = steps.get("render") or record.get("cube", {})
    gb = render.get("diffraction_bytes_on_disk", 0) / 1e9
    lines = ["# A 4D-STEM cube out of core, against HyperSpy", "",
             f"Phantom scan {record['args']['scan']}^2, {record['args']['pattern']}^2 float32 patterns: "
             f"{gb:.2f} GB on disk, uncompressed ({render.get('diffraction_shape')}). Each step in its own "
             "process; peak RSS = that process's ru_maxrss."
             + (" The cube was rendered by an earlier run (`--keep`) and read again." if "cube" in record else ""),
             "",
             "| step | s | peak RSS (MiB) | CPU s | load before / after | ARI | many-to-one |",
             "|---|---:|---:|---:|---|---:|---:|"]
    for name, st in sorted(steps.items(), key=lambda item: ("render", "mmseg", "hyperspy").index(item[0])):
        score = st.get("score") or {}
        lines.append(f"| {name} | {st.get('seconds', st['process_seconds']):.1f} | {st['peak_rss_mib']:.0f} | "
                     f"{st['cpu_seconds']:.0f} | {st['load_before']:.1f} / {st['load_after']:.1f} | "
                     f"{score.get('ari', float('nan')):.3f} | {score.get('many_to_one', float('nan')):.3f} |")
    lines += [f"- {name}: **{st['error']}**" for name, st in steps.items() if st.get("error")]
    ours, theirs = steps.get("mmseg"), steps.get("hyperspy")
    if ours and theirs and not theirs.get("error"):
        ours_mib = ours["peak_rss_mib"] + ours.get("helper_private_mib", 0.0)
        lines += ["", "Goals (issue 11):", "",
                  f"- peak resident memory <= 2 GiB: {'reached' if ours_mib <= 2048 else 'NOT reached'} "
                  f"({ours_mib / 1024:.2f} GiB with {ours.get('helper_private_mib', 0.0):.0f} MiB of the consensus's "
                  f"helper process's own; HyperSpy {theirs['peak_rss_mib'] / 1024:.1f} GiB: "
                  "its lazy SVD holds the cube in memory);",
                  f"- faster than HyperSpy on the same cube: {'reached' if ours['seconds'] < theirs['seconds'] else 'NOT reached'} "
                  f"({ours['seconds']:.0f} s against {theirs['seconds']:.0f} s wall, {ours['cpu_seconds']:.0f} against "
                  f"{theirs['cpu_seconds']:.0f} CPU s, under the same shared load)."]
    lines += ["", "Times are of the work itself (segment() call, HyperSpy's decomposition + clustering); "
              "each process also paid its imports (process_seconds in out_of_core.json).", "",
              f"Reproduce: `python benchmarks/bench_out_of_core.py WORK --out DIR --scan {record['args']['scan']} "
              f"--pattern {record['args']['pattern']} --seed {record['args']['seed']}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
