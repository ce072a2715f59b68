"""How chemical are the communities of real spectrum images?  The project against HyperSpy.

For every real EDS file in the data folder, the project's default partition of the spectrum
image alone (``segment({"eds:spectrum": ...})``, number of communities decided from the data)
and HyperSpy's route (``decomposition(normalize_poissonian_noise=True)`` +
``cluster_analysis`` with k-means) *given the same number of clusters* are scored against an
independent reference: the net intensity maps of the X-ray lines present in the file
(:func:`multimodal_seg.analysis.spectral_lines.feature_intensities` per scan position: line
window minus the side windows, no partition involved).  The score of a partition on one map is
its correlation ratio eta^2 = between-community variance / total variance: the share of the
map's variance the communities explain (1: every community is one composition).  Lines are the
``--lines`` strongest peaks of the map sum, each with a net sum above 3 standard errors, their
windows apart, none a weaker line or a detector artefact of a stronger one kept
(:func:`multimodal_seg.bench.chemistry.line_maps`).

Usage::

    python benchmarks/bench_chemistry.py ../shared/data --out benchmarks/reports/chemistry-2cpu [--seeds 5]

``--seeds N`` also runs seeds ``seed`` to ``seed + N - 1`` and reports how far their partitions
agree (the worst ARI between two seeds) and the scores over them; the main table is the first
seed's.

Issue 9's goal: on every file, the project's mean eta^2 at least HyperSpy's.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import warnings
from pathlib import Path

import multimodal_seg as mms
from multimodal_seg.bench.chemistry import FILES, across_seeds


def report(results: list[dict], args: argparse.Namespace) -> str:
    lines = ["# Chemistry of spectrum-image communities: the project against HyperSpy", "",
             f"Machine: {platform.machine()}, {platform.platform()}; multimodal-seg {mms.__version__}.", "",
             f"Reproduce: `python benchmarks/bench_chemistry.py {args.data} --out {args.out} --lines {args.lines} "
             f"--seed {args.seed} --seeds {args.seeds}`",
             "", "Reference: net intensity maps of the strongest significant X-ray peaks of each file's map "
             "sum (line window minus side windows, per scan position; no partition involved; peaks whose "
             "windows overlap read once; a weaker line of a family kept at a stronger peak, or a sum peak "
             "of stronger ones, is not a map of its own; each peak named as the figures name it, by a line "
             "borne out where its net counts lie, '?' where none is). Score: the "
             "correlation ratio eta^2, the share of a map's variance the communities explain. "
             "HyperSpy is given the project's number of communities (k).", "",
             "| file | scan | counts / position | k | lines | project mean eta^2 | HyperSpy mean eta^2 | goal |",
             "|---|---|---:|---:|---|---:|---:|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['name']} | error: {r['error']} | | | | | | |")
            continue
        goal = "reached" if r["mean"]["project"] >= r["mean"]["hyperspy"] else "**not reached**"
        lines.append(f"| {r['name']} | {r['scan'][0]} x {r['scan'][1]} | {r['counts_per_position']:.0f} | {r['k']} | "
                     f"{', '.join(r['lines'])} | {r['mean']['project']:.3f} | {r['mean']['hyperspy']:.3f} | {goal} |")
    if args.seeds > 1:
        lines += ["", f"Seeds {args.seed}-{args.seed + args.seeds - 1}: the project's communities in each seed, the "
                  "worst ARI between two seeds' partitions, the mean eta^2 over the seeds (HyperSpy given each "
                  "seed's number), and the seeds where the project's is at least HyperSpy's.", "",
                  "| file | communities | worst ARI between seeds | project mean eta^2 | HyperSpy mean eta^2 | "
                  "seeds reached |", "|---|---|---:|---:|---:|---:|"]
        for r in results:
            if "seeds" in r:
                sd = r["seeds"]
                lines.append(f"| {r['name']} | {', '.join(map(str, sd['k']))} | {sd['worst_ari']:.3f} | "
                             f"{sd['mean']['project']:.3f} | {sd['mean']['hyperspy']:.3f} | "
                             f"{sd['reached']} of {len(sd['seeds'])} |")
    lines += ["", "Per line (project / HyperSpy):", ""]
    for r in results:
        if "error" in r:
            continue
        pairs = ", ".join(f"{line} {p:.2f}/{h:.2f}" for line, p, h in
                          zip(r["lines"], r["eta2"]["project"], r["eta2"]["hyperspy"]))
        lines.append(f"- {r['name']}: {pairs}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="the shared data folder")
    parser.add_argument("--out", type=Path, required=True, help="report folder")
    parser.add_argument("--lines", type=int, default=6, help="strongest lines per file (default 6)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=1,
                        help="run this many seeds from --seed and report how far they agree (default 1)")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        print(f"error: --seeds {args.seeds}: give at least 1", file=sys.stderr)
        return 2
    if not args.data.is_dir():
        print(f"error: data folder {args.data} not found; give the shared data folder", file=sys.stderr)
        return 2
    results = []
    for name, rel, options in FILES:
        path = args.data / rel
        print(f"chemistry: {name}", flush=True)
        if not path.exists():
            results.append({"name": name, "error": f"{rel} absent"})
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results.append(across_seeds(name, path, options, top=args.lines,
                                        seeds=range(args.seed, args.seed + args.seeds))[0])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (args.out / "report.md").write_text(report(results, args))
    print((args.out / "report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
