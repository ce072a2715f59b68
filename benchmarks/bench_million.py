"""A million chips through the graph and community stages with the default settings.

Issue 11's goal: 10^6 chips through kNN, graph and communities *with the default settings*
(consensus of 30 Leiden runs and the dip-test decision included) in at most 2 minutes and
3 GB on the 2-core machine, pynndescent's numba compilation included or cached; the recall of
the approximate kNN against exact search on a sample reported beside it.

Chips are a planted Gaussian mixture of 64-D embeddings (:func:`multimodal_seg.bench.speed.
planted_mixture`, 5 clusters), so the partition can be scored (ARI) and a fast wrong answer
shows.  Each stage runs in this order, timed alone, with the peak RSS of the process:

1. pynndescent's first search on 300 points in this process (numba compilation; cached
   across processes only where numba's on-disk cache holds it);
2. ``reduce_features`` (standardise + PCA to 30) and ``knn_graph`` (cosine kNN, k = 15);
3. one Leiden run (``consensus=0``, no decision): the unit the defaults multiply;
4. ``partition_graph`` with every default of the pipeline (``CommunityConfig()``: consensus
   of up to 30 runs, stopped early once most agree; dip-test decision on the graph's features).

Usage::

    python benchmarks/bench_million.py --chips 1000000 --out benchmarks/reports/million-2cpu
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

from multimodal_seg.bench.speed import ChildrenMemory, knn_recall, planted_mixture
from multimodal_seg.config import CommunityConfig, GraphConfig
from multimodal_seg.graphs.communities import partition_graph
from multimodal_seg.graphs.knn import knn_graph, reduce_features
from multimodal_seg.metrics import adjusted_rand


def peak_gib() -> float:
    """Peak resident memory of this process so far, GiB (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def timed(label: str, record: dict, run):
    start = time.perf_counter()
    value = run()
    record[label] = {"seconds": time.perf_counter() - start, "peak_gib": peak_gib()}
    print(f"{label}: {record[label]['seconds']:.1f} s, peak {record[label]['peak_gib']:.2f} GiB", flush=True)
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chips", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-defaults", action="store_true",
                        help="stop after one Leiden run (the full default partition takes ~30 runs)")
    args = parser.parse_args(argv)
    graph_cfg, com = GraphConfig(), CommunityConfig()
    record: dict = {"chips": args.chips, "k": graph_cfg.k, "n_pcs": graph_cfg.n_pcs,
                    "defaults": com.model_dump(), "machine": platform.platform(), "stages": {}}
    stages = record["stages"]
    x, truth = planted_mixture(args.chips, dim=64, n_clusters=5, seed=args.seed)
    record["data_peak_gib"] = peak_gib()
    small = reduce_features(x[:300], n_pcs=graph_cfg.n_pcs, seed=args.seed)
    timed("pynndescent first call (compilation)", stages, lambda: knn_graph(small, k=graph_cfg.k, exact_max=0))
    feats = timed("reduce_features", stages, lambda: reduce_features(x, n_pcs=graph_cfg.n_pcs, seed=args.seed))
    del x
    graph = timed("knn_graph", stages, lambda: knn_graph(feats, k=graph_cfg.k, seed=args.seed))
    record["knn_recall"] = knn_recall(graph, feats, k=graph_cfg.k, seed=args.seed)
    print(f"kNN recall on 1000 chips: {record['knn_recall']:.4f}", flush=True)
    one = timed("one Leiden run", stages,
                lambda: partition_graph(graph, resolution=com.resolution, seed=args.seed))
    record["one_run"] = {"n_communities": one.n_communities, "ari": adjusted_rand(one.labels, truth)}
    if not args.skip_defaults:
        # the consensus shares its runs with a forked helper process (graphs/ahead.py): its own
        # memory is counted beside this process's peak
        with ChildrenMemory() as helper:
            full = timed("default partition (consensus + decision)", stages, lambda: partition_graph(
                graph, method=com.method, resolution=com.resolution, seed=args.seed, n_iterations=com.n_iterations,
                n_restarts=com.n_restarts, consensus=com.consensus, merge=com.merge, decide=com.decide,
                alpha=com.alpha, features={"chips": feats}))
        record["helper_private_peak_gib"] = None if helper.peak_mib is None else helper.peak_mib / 1024
        record["defaults_result"] = {"n_communities": full.n_communities, "ari": adjusted_rand(full.labels, truth),
                                     "consensus_runs": full.runs, "groups": full.params["groups"],
                                     "decision": full.decision}
    total = sum(s["seconds"] for name, s in stages.items() if name != "one Leiden run")
    record["total_seconds_with_defaults"] = total if not args.skip_defaults else None
    record["peak_gib"] = peak_gib()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(record, indent=1, default=str))
    lines = [f"# {args.chips:,} chips through the graph and community stages", "",
             f"Machine: {platform.platform()}. Reproduce: `python benchmarks/bench_million.py --chips "
             f"{args.chips} --out {args.out}`", "",
             "| stage | seconds | process peak GiB |", "|---|---:|---:|"]
    lines += [f"| {name} | {s['seconds']:.1f} | {s['peak_gib']:.2f} |" for name, s in stages.items()]
    lines += ["", f"kNN recall against exact search (1000 chips): {record['knn_recall']:.4f}.",
              f"One Leiden run: {record['one_run']['n_communities']} communities, ARI {record['one_run']['ari']:.3f}."]
    if not args.skip_defaults:
        res = record["defaults_result"]
        helper_gib = record["helper_private_peak_gib"] or 0.0
        goal = "reached" if total <= 120 and record["peak_gib"] + helper_gib <= 3 else "**not reached**"
        lines += [f"Default partition: {res['n_communities']} communities, ARI {res['ari']:.3f}, "
                  f"{res['consensus_runs']} of up to {com.consensus} consensus runs made, on the graph of "
                  f"{res['groups']:,} groups of similar chips (then one Leiden pass on the chips).",
                  f"Total with the defaults (compilation included): {total:.0f} s, peak {record['peak_gib']:.2f} GiB "
                  f"in this process and {helper_gib:.2f} GiB of the consensus's helper process's own "
                  f"(goal 120 s and 3 GiB: {goal})."]
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
