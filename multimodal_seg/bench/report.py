"""The benchmark's Markdown report and figures, from its results dict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..provenance import atomic_path, write_text_atomic
from .quality import BOUND_PER_CLASS

#: Goals of issue 4, checked in the report.
GOAL_SEED_ARI = 0.95
GOAL_OVERHEAD = 0.15


def _f(x: Any, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{digits}f}"


def _ms(entry: dict | None, digits: int = 3) -> str:
    if not entry:
        return "n/a"
    return f"{entry['mean']:.{digits}f}" + (f" ± {entry['sd']:.{digits}f}" if entry["n"] > 1 else "")


def _gflops(x: float | None) -> str:
    return "n/a" if x is None else f"{x / 1e9:.1f}"


def quality_section(results: dict) -> list[str]:
    summary = results["quality"]["summary"]
    project = results["project_methods"]
    lines = ["## Quality", "",
             "Scores against the truth, mean ± sd over the images, seed 0. Peers are given the set's "
             "true number of classes; the project finds its number of communities itself. "
             f"*m2o≤{BOUND_PER_CLASS}k*: many-to-one accuracy where at most {BOUND_PER_CLASS} communities "
             "per truth class may map (the rest count as wrong); *baseline*: the largest class's share. "
             "Chip level: majority labels on the project's default chip grid, for every method.", ""]
    goal_rows = []
    for dataset, by_method in summary.items():
        n_images = len(results["images"].get(dataset, []))
        lines += [f"### {dataset} ({n_images} images)", "",
                  "| method | ARI | NMI | m2o | m2o≤2k | mIoU | chip ARI | communities | s/image |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, entry in by_method.items():
            if "pixel" not in entry:
                lines.append(f"| {name} | failed ({entry['n_errors']} errors) |||||||| ")
                continue
            px, ch = entry["pixel"], entry["chip"]
            lines.append(f"| {name} | {_ms(px['ari'])} | {_ms(px['nmi'])} | {_ms(px['many_to_one'])} | "
                         f"{_ms(px['many_to_one_bounded'])} | {_ms(px['miou'])} | {_ms(ch['ari'])} | "
                         f"{_ms(px['n_pred'], 1)} | {_ms(entry['seconds'], 1)} |")
        base = next((e["pixel"]["majority_baseline"] for e in by_method.values() if "pixel" in e), None)
        lines += ["", f"Majority baseline (many-to-one of one community): {_ms(base)}.", ""]
        default = by_method.get("mmseg-default", {}).get("pixel")
        peers = {n: e["pixel"]["ari"]["mean"] for n, e in by_method.items() if n not in project and "pixel" in e}
        best_project = max(((n, e["pixel"]["ari"]["mean"]) for n, e in by_method.items()
                            if n in project and "pixel" in e), key=lambda t: t[1], default=(None, None))
        if default and peers:
            best_peer = max(peers, key=peers.get)
            goal_rows.append(f"| {dataset} | {default['ari']['mean']:.3f} | {best_peer} {peers[best_peer]:.3f} | "
                             f"{'yes' if default['ari']['mean'] > peers[best_peer] else 'no'} | "
                             f"{best_project[0]} {_f(best_project[1])} |")
    if goal_rows:
        lines += ["### Goal: the default beats every peer on ARI", "",
                  "| set | default ARI | best peer | default beats it | best project setting (chosen on these images) |",
                  "|---|---:|---|---|---|", *goal_rows, ""]
    return lines


def stability_section(rows: list[dict]) -> list[str]:
    lines = ["## Stability", "",
             "Pixel ARI between segmentations of the same image: every pair of seeds; clean against "
             "added Gaussian noise (sigma = 5% of the 1st-99th percentile range); unshifted against "
             f"shifted by half a chip (common area). Goal: seeds agree at ARI ≥ {GOAL_SEED_ARI}.", "",
             "| set | image | setting | seeds: min ARI | seeds: mean ARI | noise ARI | half-chip shift ARI | goal met |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['dataset']} | {r['image']} | {r['method']} | error: {r['error']} ||||| ")
            continue
        lines.append(f"| {r['dataset']} | {r['image']} | {r['method']} | {r['seeds']['min']:.3f} | {r['seeds']['mean']:.3f} | "
                     f"{r['noise_ari']:.3f} | {r['shift_ari']:.3f} | "
                     f"{'yes' if r['seeds']['min'] >= GOAL_SEED_ARI else 'no'} |")
    return lines + [""]


def _matrix(cons: dict, key: str = "ari") -> list[str]:
    names = cons["names"]
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    lines += [f"| {n} | " + " | ".join(f"{v:.2f}" for v in row) + " |" for n, row in zip(names, cons[key])]
    return lines


def consistency_section(cons: dict) -> list[str]:
    lines = ["## Cross-modal consistency", "",
             f"### Multimodal phantom (HAADF + EELS + 4D-STEM, {cons['scan']} x {cons['scan']} scan)", "",
             "ARI with the truth on the scan grid, per partition (and, for comparison, HyperSpy's "
             "decomposition + k-means on the EELS alone, given the number of regions):", ""]
    ok = [r for r in cons["phantom"] if "truth_scores" in r]
    if ok:
        names = list(ok[0]["truth_scores"])
        peers = list(ok[0].get("peer_scores", {}))
        lines += ["| seed | " + " | ".join(names + peers) + " |", "|---|" + "---:|" * len(names + peers)]
        lines += [f"| {r['seed']} | " + " | ".join(
            [f"{r['truth_scores'][n]['ari']:.3f}" for n in names]
            + [f"{r['peer_scores'][n]['ari']:.3f}" for n in peers]) + " |" for r in ok]
        lines += ["", f"ARI between partitions (seed {ok[0]['seed']}):", "", *_matrix(ok[0]["consistency"]), ""]
    for r in cons["phantom"]:
        if "error" in r:
            lines.append(f"- seed {r['seed']}: error {r['error']}")
    lines += ["### Real EDS spectrum images with their survey image", ""]
    for r in cons["real"]:
        if "skipped" in r:
            lines.append(f"- {r['name']}: skipped ({r['skipped']})")
        elif "error" in r:
            lines.append(f"- {r['name']}: error {r['error']}")
        else:
            counts = ", ".join(f"{k} {v}" for k, v in r["n_communities"].items())
            lines += [f"**{r['name']}** (`{r['file']}`; communities: {counts}; chips "
                      f"{r['grid']['grid']['size']} scan positions)", "", *_matrix(r["consistency"]), ""]
    return lines + [""]


def _speed_cells(r: dict) -> str:
    """The cells every encoder row shares: rate, FLOPs, share of peak, times, overhead, memory."""
    fw = r["forward"]
    fpc = fw.get("flops_per_chip")
    return (f"{fw['chips_per_s']:.0f} | {_f(None if fpc is None else fpc / 1e9)} | "
            f"{_gflops(fw.get('flop_rate'))} | {_f(fw.get('fraction_of_measured_peak'), 3)} | "
            f"{r['segment_seconds']:.2f} | {fw['seconds']:.2f} | {r['overhead']:+.0%} | "
            f"{_f(r.get('peak_rss_mib'), 0)} |")


def speed_section(sp: dict) -> list[str]:
    peak = sp["peak"]
    lines = ["## Speed", "",
             f"Peak float32 rate: measured {_gflops(peak.get('measured_flops'))} GFLOP/s "
             f"({peak.get('measured_method', '')}); nominal {_gflops(peak.get('nominal_flops'))} GFLOP/s "
             f"({peak.get('nominal_method', '')}).", "",
             f"Encoders on the chips of a {sp['image_shape'][0]}² HAADF phantom (forward pass = "
             "`encoder.encode` on all chips, median; pipeline = `segment()` end to end on the same image, "
             "run twice: the second run, which redoes every stage, is the one timed (the first, which "
             "also pays a fresh process's one-off imports, is in results.json as `segment_first_seconds`)). "
             f"Goal: pipeline overhead over the forward pass ≤ {GOAL_OVERHEAD:.0%}.", "",
             "| encoder | chips (size, stride) | chips/s | GFLOP/chip | GFLOP/s | of measured peak | "
             "segment() s | forward s | overhead | peak RSS MiB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sp["encoders"]:
        if "error" in r:
            lines.append(f"| {r['encoder']} | error: {r['error']} |||||||||")
            continue
        lines.append(f"| {r['encoder']} | {r['n_chips']} ({r['chip']}, {r['stride']}) | " + _speed_cells(r))
    if sp.get("modality_encoders"):
        scan = sp["speed_scan"][0]
        lines += ["", f"Spectrum and diffraction encoders on the {scan}x{scan} multimodal phantom (chips of the "
                  "grid `segment()` lays for all its modalities; pipeline = `segment()` of that one "
                  "modality). Encoders that pool per-position features encode each scan position once, "
                  "so their forward pass is timed on the positions. FLOPs are counted for the torch "
                  "convnets only.", "",
                  "| encoder | modality | chips (size, stride) | forward on | units/s | GFLOP/unit | GFLOP/s | "
                  "of measured peak | segment() s | forward s | overhead | peak RSS MiB |",
                  "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in sp["modality_encoders"]:
            if "error" in r:
                lines.append(f"| {r['encoder']} | {r['modality']} | error: {r['error']} ||||||||||")
                continue
            lines.append(f"| {r['encoder']} | {r['modality']} | {r['n_chips']} ({r['chip']}, {r['stride']}) | "
                         f"{r['n_forward']} {r['forward_on']} | " + _speed_cells(r))
    rows = sp["graph"].get("rows", [])
    if rows:
        keys = [k for k in ("knn_search", "graph_seconds", "leiden_seconds", "n_communities", "ari",
                            "graph_peak_rss_delta_mib") if k in rows[0]]
        lines += ["", "Graph (standardise, PCA, kNN) and Leiden against the number of chips (synthetic "
                  "embeddings with planted clusters):", "",
                  "| chips | " + " | ".join(keys) + " |", "|---:|" + "---:|" * len(keys)]
        for row in rows:
            lines.append(f"| {row.get('n_chips')} | " + " | ".join(
                _f(row[k]) if isinstance(row[k], float) else str(row[k]) for k in keys) + " |")
    elif "error" in sp["graph"]:
        lines.append(f"graph scaling: error {sp['graph']['error']}")
    return lines + [""]


def quality_figure(results: dict, out: Path) -> str | None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    summary = results.get("quality", {}).get("summary", {})
    if not summary:
        return None
    sets = list(summary)
    names = list(dict.fromkeys(n for s in sets for n in summary[s]))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(sets) * len(names) / 3), 4))
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        means = [summary[s].get(name, {}).get("pixel", {}).get("ari", {}).get("mean", np.nan) for s in sets]
        sds = [summary[s].get(name, {}).get("pixel", {}).get("ari", {}).get("sd", 0.0) for s in sets]
        ax.bar(np.arange(len(sets)) + j * width, means, width, yerr=sds, label=name,
               hatch="" if name in results["project_methods"] else "//")
    ax.set_xticks(np.arange(len(sets)) + 0.4 - width / 2, sets)
    ax.set_ylabel("pixel adjusted Rand index")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Quality: project (plain) vs peers (hatched)")
    fig.tight_layout()
    with atomic_path(out / "quality.png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return "quality.png"


def graph_figure(results: dict, out: Path) -> str | None:
    import matplotlib.pyplot as plt

    rows = results.get("speed", {}).get("graph", {}).get("rows", [])
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.5))
    n = [r["n_chips"] for r in rows]
    for key in ("graph_seconds", "leiden_seconds"):
        ax.loglog(n, [r[key] for r in rows], "o-", label=key.replace("_seconds", ""))
    ax.set_xlabel("chips")
    ax.set_ylabel("s")
    ax.legend(fontsize=7)
    ax.set_title("Graph and Leiden time")
    fig.tight_layout()
    with atomic_path(out / "graph_scaling.png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return "graph_scaling.png"


def _methods_option(results: dict) -> str:
    from .methods import METHODS, QUICK_METHODS

    default = list(QUICK_METHODS if results["quick"] else METHODS)
    chosen = list(results["methods"])
    return "" if chosen == default else f" --methods {','.join(chosen)}"


def write_report(results: dict, out: Path) -> None:
    """Write ``report.md`` (and its figures) for whatever parts ``results`` holds so far."""
    m = results["machine"]
    lines = ["# mmseg benchmark", "",
             f"Started {results['started']}" + (f", finished {results['finished']}" if "finished" in results else
                                                 " (still running)") + ".",
             f"Machine: {m.get('cpu')}, {m.get('cpu_count')} CPUs, {m.get('memory_gib')} GiB, torch threads "
             f"{m.get('torch_threads')}, GPU {m.get('cuda') or 'none'}; {m.get('platform')}.",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items() if v) + ".",
             f"Data: {results['data_dir'] or 'none (phantoms only)'}"
             + (f"; skipped sets (not found): {', '.join(results['skipped_sets'])}" if results.get("skipped_sets")
                else "") + ".",
             "Images: " + "; ".join(f"{k}: {len(v)}" for k, v in results.get("images", {}).items()) + ".",
             "", "Methods:", ""]
    lines += [f"- `{n}`{' (project)' if n in results['project_methods'] else ''}: {d}"
              for n, d in results["methods"].items()]
    lines += ["", "Reproduce: `mmseg bench DATA_DIR --out DIR"
              + (" --quick" if results["quick"] else "")
              + (f" --images {results['n_images']}" if results.get("n_images") else "")
              + _methods_option(results)
              + (f" --parts {','.join(results['parts'])}" if len(results["parts"]) < 4 else "") + "`", ""]
    figures = []
    if "quality" in results:
        lines += quality_section(results)
        figures.append(quality_figure(results, out))
    if "stability" in results:
        lines += stability_section(results["stability"])
    if "consistency" in results:
        lines += consistency_section(results["consistency"])
    if "speed" in results:
        lines += speed_section(results["speed"])
        figures.append(graph_figure(results, out))
    lines += [f"![{f}]({f})" for f in figures if f]
    if results.get("part_seconds"):
        lines += ["", "Time per part: " + ", ".join(f"{k} {v:.0f} s" for k, v in results["part_seconds"].items()), ""]
    write_text_atomic(out / "report.md", "\n".join(lines) + "\n")
