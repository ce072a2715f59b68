"""The benchmark's Markdown report and figures, from its results dict."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ..graphs.decide import format_pvalue
from ..pipeline.embedding import BATCH_CHIPS
from ..pipeline.segment import STEPS
from ..plot import save_figure
from ..provenance import write_text_atomic
from ..synthetic.families import FAMILIES
from .quality import BOUND_PER_CLASS, CHIP_CEILING

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


#: A setting of a swept method in the quality summary: ``graphem-<features> c=<cutoff>``.
SWEPT = re.compile(r"^(?P<method>graphem-\w+) c=(?P<c>[0-9.]+)$")


def collapse_sweeps(by_method: dict[str, dict]) -> tuple[dict[str, dict], dict[str, dict[str, float]]]:
    """Replace a swept method's settings by its best, median and worst one (by mean pixel ARI).

    Returns the collapsed ``{method: entry}`` and ``{swept method: {cutoff: mean ARI}}``.
    """
    kept: dict[str, dict] = {}
    sweeps: dict[str, dict[str, float]] = {}
    for name, entry in by_method.items():
        match = SWEPT.match(name)
        if match and "pixel" in entry:
            sweeps.setdefault(match["method"], {})[match["c"]] = entry["pixel"]["ari"]["mean"]
        elif not match:
            kept[name] = entry
    for method, by_c in sweeps.items():
        order = sorted(by_c, key=by_c.get)
        for label, c in (("best", order[-1]), ("median", order[(len(order) - 1) // 2]), ("worst", order[0])):
            kept[f"{method} {label} c={c}"] = by_method[f"{method} c={c}"]
    return kept, sweeps


def quality_section(results: dict) -> list[str]:
    summary = {d: collapse_sweeps(by)[0] for d, by in results["quality"]["summary"].items()}
    sweeps = {d: collapse_sweeps(by)[1] for d, by in results["quality"]["summary"].items()}
    project = results["project_methods"]
    lines = ["## Quality", "",
             "Scores against the truth, mean ± sd over the images, seed 0. Peers are given the set's "
             "true number of classes; the project finds its number of communities itself. "
             f"*m2o≤{BOUND_PER_CLASS}k*: many-to-one accuracy where at most {BOUND_PER_CLASS} communities "
             "per truth class may map (the rest count as wrong); *baseline*: the largest class's share. "
             "Chip level: majority labels on the project's default chip grid, for every method. "
             f"*{CHIP_CEILING}*: the truth given its chip majorities and painted back on the chip grid, "
             "the best a partition of those chips can score at chip level (not a method; boundary "
             "refinement, on by default, moves pixels between chips and can pass it). "
             "GraphEM's cutoff is swept: its best, median and worst cutoff on each set are shown (the best "
             "is chosen on the very images it is scored on, an optimistic oracle); its time is that of the whole "
             "sweep, the project's run that embeds the chips included.", ""]
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
        for method, by_c in sweeps[dataset].items():
            lines += [f"{method} mean pixel ARI by cutoff: "
                      + ", ".join(f"c={c} {v:.3f}" for c, v in sorted(by_c.items(), key=lambda t: float(t[0]))), ""]
        default = by_method.get("mmseg-default", {}).get("pixel")
        peers = {n: e["pixel"]["ari"]["mean"] for n, e in by_method.items()
                 if n not in project and n != CHIP_CEILING and "pixel" in e}
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
             f"shifted by half a chip (common area). Goal: seeds agree at ARI ≥ {GOAL_SEED_ARI}. "
             "*Communities*: each seed's count. *Margin*: the p-values either side of alpha that "
             "decided each seed's count (the dip test's closest pair kept apart and its last merge, "
             "lowest to highest over the seeds; - where there was none): both near alpha mean the count "
             "is a close call. *Close calls*: the seeds whose consensus runs did not show that most of "
             "them end with the kept number of communities (the run warns; "
             "`multimodal_seg.graphs.communities.Consensus.close_call`).", "",
             "| set | image | setting | seeds: min ARI | seeds: mean ARI | noise ARI | half-chip shift ARI | goal met "
             "| communities | closest kept apart, p | last merge, p | close calls |",
             "|---|---|---|---:|---:|---:|---:|---|---|---|---|---:|"]
    flagged: dict[str, list[bool]] = {}  # setting -> goal met on each image with a close call
    clear: dict[str, list[bool]] = {}  # setting -> goal met on each image without one
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['dataset']} | {r['image']} | {r['method']} | error: {r['error']} ||||||||| ")
            continue
        margins = [m for m in r["seeds"].get("margins", []) if m]
        calls = r["seeds"].get("close_calls")
        met = r["seeds"]["min"] >= GOAL_SEED_ARI
        if calls is not None:
            (flagged if any(calls) else clear).setdefault(r["method"], []).append(met)
        lines.append(f"| {r['dataset']} | {r['image']} | {r['method']} | {r['seeds']['min']:.3f} | {r['seeds']['mean']:.3f} | "
                     f"{r['noise_ari']:.3f} | {r['shift_ari']:.3f} | "
                     f"{'yes' if met else 'no'} | "
                     f"{', '.join(str(n) for n in r['seeds'].get('n_communities', [])) or '-'} | "
                     f"{_p_range(m['closest_kept'] for m in margins)} | {_p_range(m['last_merged'] for m in margins)} | "
                     f"{'-' if calls is None else f'{sum(calls)} of {len(calls)}'} |")
    summary = [f"- {method}: images with a close call in some seed, {len(flagged.get(method, []))} (goal met on "
               f"{sum(flagged.get(method, []))}); without, {len(clear.get(method, []))} (goal met on "
               f"{sum(clear.get(method, []))})."
               for method in dict.fromkeys([*flagged, *clear])]
    if summary:
        lines += ["", "Does the close-call warning point at the images whose seeds disagree?", "", *summary]
    return lines + [""]


def _p_range(values) -> str:
    """``lowest to highest`` of the p-values that are not ``None`` (:func:`format_pvalue`), ``-`` for none."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    low, high = (format_pvalue(v, digits=2) for v in (min(values), max(values)))
    return low if low == high else f"{low} to {high}"


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
            f"{_gflops(fw.get('flop_rate'))} | {_gflops(fw.get('peak_measured_flops'))} | "
            f"{_f(fw.get('fraction_of_measured_peak'), 3)} | "
            f"{r['segment_seconds']:.2f} | {fw['seconds']:.2f} | {r['overhead']:+.0%} | {_paired(r)} | "
            f"{r.get('n_encoded', '')} | {_f(r.get('forward_all_seconds'))} | "
            f"{'' if r.get('overhead_all') is None else format(r['overhead_all'], '+.0%')} | "
            f"{_f(r.get('peak_rss_mib'), 0)} |")


def _paired(r: dict) -> str:
    """The overhead measured in pairs of runs, with the pairs' range where there are several."""
    if r.get("overhead_paired") is None:
        return ""
    spread = r["overhead_paired_range"]
    if len(r.get("segment_over_forward", [])) < 2:
        return f"{r['overhead_paired']:+.0%}"
    return f"{r['overhead_paired']:+.0%} ({spread[0]:+.0%} to {spread[1]:+.0%})"


def _encoder_label(r: dict) -> str:
    """The encoder's name, marked when its network ran through ``torch.compile``."""
    return r["encoder"] + (", compiled" if r.get("compiled") else "")


def _split_table(sp: dict) -> list[str]:
    """The torch encoders' forward passes split into their preprocessing and their network."""
    rows = [r for r in [*sp["encoders"], *sp.get("modality_encoders", [])]
            if (r.get("forward") or {}).get("network_seconds") is not None]
    if not rows:
        return []
    lines = ["", "Where a torch encoder's forward pass goes (`bench.speed.forward_split`): every batch "
             "prepared first (the encoder's preprocessing: scaling, resizing, centring), then the network "
             "on the prepared batches, medians of the same repeats; the network's share of the peak is its "
             "FLOPs over its own time, against the same peak as the forward pass's.", "",
             "| encoder | forward s | preprocessing s | network s | network GFLOP/s | network's share of peak "
             "| forward's share |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        fw = r["forward"]
        total = (fw.get("flops_per_chip") or 0) * fw["n_chips"]
        lines.append(f"| {_encoder_label(r)}{' (' + r['modality'] + ')' if r.get('modality') else ''} | "
                     f"{fw['seconds']:.3f} | {fw['prepare_seconds']:.3f} | {fw['network_seconds']:.3f} | "
                     f"{_gflops(total / fw['network_seconds'] if total else None)} | "
                     f"{_f(fw.get('network_fraction_of_measured_peak'), 3)} | "
                     f"{_f(fw.get('fraction_of_measured_peak'), 3)} |")
    return lines


def _compile_table(sp: dict) -> list[str]:
    """First calls of each compiled encoder in fresh processes, inductor's cache cold and warm."""
    rows = [r for r in [*sp["encoders"], *sp.get("modality_encoders", [])] if r.get("compile_processes")]
    if not rows:
        return []
    lines = ["", "Compilation across processes: " + rows[0]["compile_processes"]["method"] + ". *Warm-up in "
             "run*: the forward pass's untimed first call in the benchmark's own process (inductor's cache "
             "as this machine had it).", "",
             "| encoder | batch | start and build s | first call, cache empty s | first call, cache warm s | "
             "second call s | warm-up in run s | cache hits / misses, empty | warm |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        cp = r["compile_processes"]
        cold, warm = cp["cold"], cp["warm"]
        fallback = cold.get("fallback") or warm.get("fallback")
        lines.append(f"| {_encoder_label(r)} | {' x '.join(map(str, cp['chips_shape']))} | "
                     f"{warm['build_seconds']:.1f} | {cold['first_call_seconds']:.1f} | "
                     f"{warm['first_call_seconds']:.1f} | {warm['second_call_seconds']:.2f} | "
                     f"{r['forward']['warmup_seconds']:.1f} | {_cache_counts(cold)} | {_cache_counts(warm)} |"
                     + (f" fell back to eager: {fallback}" if fallback else ""))
    return lines


def _cache_counts(run: dict) -> str:
    """Inductor's cache hits / misses in one process (AOTAutograd and FX graph caches together)."""
    cache = run.get("cache") or {}
    hits = cache.get("autograd_cache_hit", 0) + cache.get("fxgraph_cache_hit", 0)
    misses = cache.get("autograd_cache_miss", 0) + cache.get("fxgraph_cache_miss", 0)
    return f"{hits} / {misses}" if cache else ""


def _step_names(rows: list[dict]) -> list[str]:
    """The steps timed in ``rows``, in the order ``segment()`` runs them (a results.json read
    back has its keys sorted), any the pipeline does not name last."""
    names = set(name for r in rows for name in r["step_seconds"])
    return [s for s in STEPS if s in names] + sorted(names - set(STEPS))


def _step_table(sp: dict) -> list[str]:
    """The median seconds of each step of the timed ``segment()`` runs, one row per encoder."""
    rows = [r for r in [*sp["encoders"], *sp.get("modality_encoders", [])] if r.get("step_seconds")]
    if not rows:
        return []
    steps = _step_names(rows)
    lines = ["", "Where `segment()` spends its time: the median seconds of each step over the timed runs "
             "(`provenance.json`'s `seconds`; *embed* holds the forward pass, *refine* the boundary chips "
             "it embeds again):", "",
             "| encoder | " + " | ".join(steps) + " | segment() s | forward s |",
             "|---|" + "---:|" * (len(steps) + 2)]
    for r in rows:
        name = _encoder_label(r) + (f" ({r['modality']})" if "modality" in r else "")
        lines.append(f"| {name} | " + " | ".join(f"{r['step_seconds'].get(s, 0.0):.2f}" for s in steps)
                     + f" | {r['segment_seconds']:.2f} | {r['forward']['seconds']:.2f} |")
    return lines


def speed_section(sp: dict) -> list[str]:
    peak = sp["peak"]
    lines = ["## Speed", "",
             f"Peak float32 rate: measured {_gflops(peak.get('measured_flops'))} GFLOP/s "
             f"({peak.get('measured_method', '')}); nominal {_gflops(peak.get('nominal_flops'))} GFLOP/s "
             f"({peak.get('nominal_method', '')}).", "",
             *[f"Peak {p.get('dtype')} rate of {device} (encoders there are measured against it): measured "
               f"{_gflops(p.get('measured_flops'))} GFLOP/s ({p.get('measured_method', '')}).\n"
               for device, p in sp.get("device_peaks", {}).items() if p],
             f"Encoders on the chips of a {sp['image_shape'][0]}² HAADF phantom (forward pass = "
             f"`encoder.encode` on all chips, in the batches `segment()` hands an encoder ({BATCH_CHIPS} chips, fewer "
             "where they would hold more than a task's share of memory), median; pipeline = `segment()` "
             "end to end on the same image, "
             "the median of the runs after a first (the first, which also pays a fresh process's one-off "
             "imports, is in results.json as `segment_first_seconds`)). "
             f"Goal: pipeline overhead over the forward pass ≤ {GOAL_OVERHEAD:.0%}, met when both figures "
             "are. *Overhead*: the median `segment()` over the median forward pass (runs in a row) - 1; "
             "*paired*: each `segment()` run timed right after a forward pass, the median of the pairs' "
             "ratios - 1, their lowest and highest in brackets. A shared host's speed drifts by tens of "
             "per cent within a minute, which the first lets in; a forward pass right after a "
             "`segment()` allocates its arrays afresh and can be slower than in a row, which the second "
             "lets in. Refinement embeds "
             "the boundary chips of a finer grid again, which the forward pass on the grid's chips does "
             "not count: *encoded* is every chip `segment()` embeds, *forward, all* the forward pass's "
             "time for that many at its measured rate, and *over all* the pipeline's time over that "
             "(what is left is the pipeline's own work). Rows marked *compiled* run the network through "
             "`torch.compile` (the encoder option `compile: true`); full runs only, since compiling takes "
             "minutes on a CPU. *Peak GFLOP/s*: the float32 peak measured again (the same way as above) "
             "right before and right after the encoder's forward pass, the higher of the two, which its "
             "share is taken against: a shared host's speed drifts by tens of per cent within minutes.", "",
             "| encoder | chips (size, stride) | chips/s | GFLOP/chip | GFLOP/s | peak GFLOP/s | of measured peak | "
             "segment() s | forward s | overhead | paired | encoded | forward, all s | over all | peak RSS MiB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sp["encoders"]:
        if "error" in r:
            lines.append(f"| {_encoder_label(r)} | error: {r['error']} ||||||||||||||")
            continue
        lines.append(f"| {_encoder_label(r)} | {r['n_chips']} ({r['chip']}, {r['stride']}) | " + _speed_cells(r))
    if sp.get("modality_encoders"):
        scan = sp["speed_scan"][0]
        lines += ["", f"Spectrum and diffraction encoders on the {scan}x{scan} multimodal phantom (chips of the "
                  "grid `segment()` lays for all its modalities; pipeline = `segment()` of that one "
                  "modality). Encoders that pool per-position features encode each scan position once, "
                  "so their forward pass is timed on the positions, in one call; the others' on the chips, "
                  "in the pipeline's batches. FLOPs are counted for the torch "
                  "convnets only.", "",
                  "| encoder | modality | chips (size, stride) | forward on | units/s | GFLOP/unit | GFLOP/s | "
                  "peak GFLOP/s | of measured peak | segment() s | forward s | overhead | paired | encoded | "
                  "forward, all s | over all | peak RSS MiB |",
                  "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in sp["modality_encoders"]:
            if "error" in r:
                lines.append(f"| {_encoder_label(r)} | {r['modality']} | error: {r['error']} |||||||||||||||")
                continue
            lines.append(f"| {_encoder_label(r)} | {r['modality']} | {r['n_chips']} ({r['chip']}, {r['stride']}) | "
                         f"{r['n_forward']} {r['forward_on']} | " + _speed_cells(r))
    lines += _split_table(sp)
    lines += _compile_table(sp)
    lines += _step_table(sp)
    rows = sp["graph"].get("rows", [])
    if rows:
        keys = [k for k in ("knn_search", "knn_recall", "graph_seconds", "leiden_seconds", "n_communities", "ari",
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


def _save(fig: Any, out: Path, name: str) -> str:
    """Lay out ``fig``, write it atomically as ``out/name`` (PNG), close it; return ``name``."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    save_figure(fig, out / name, dpi=110)
    plt.close(fig)
    return name


def speed_steps_figure(results: dict, out: Path) -> str | None:
    """``speed_steps.png``: each encoder's ``segment()`` as a bar of its steps' median seconds,
    beside its bare forward pass and the goal's 15 % over it."""
    import matplotlib.pyplot as plt

    sp = results.get("speed", {})
    rows = [r for r in [*sp.get("encoders", []), *sp.get("modality_encoders", [])] if r.get("step_seconds")]
    if not rows:
        return None
    steps = _step_names(rows)
    colours = plt.get_cmap("tab20")(np.linspace(0, 1, 20))[: len(steps)]
    fig, ax = plt.subplots(figsize=(9.5, 0.45 * len(rows) + 1.4))
    for i, r in enumerate(rows):
        left = 0.0
        for step, colour in zip(steps, colours):
            width = r["step_seconds"].get(step, 0.0)
            ax.barh(i, width, left=left, color=colour, label=step if i == 0 else None)
            left += width
        forward = r["forward"]["seconds"]
        ax.plot([forward, forward], [i - 0.4, i + 0.4], "k-", lw=2, label="forward pass" if i == 0 else None)
        ax.plot([forward * (1 + GOAL_OVERHEAD)] * 2, [i - 0.4, i + 0.4], "k:", lw=1.5,
                label=f"forward + {GOAL_OVERHEAD:.0%} (goal)" if i == 0 else None)
    ax.set_yticks(range(len(rows)), [_encoder_label(r) + (f" ({r['modality']})" if "modality" in r else "")
                                     for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("s (median of the timed runs)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("Where segment() spends its time, against the bare forward pass")
    return _save(fig, out, "speed_steps.png")


def quality_figure(results: dict, out: Path) -> str | None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    summary = {d: collapse_sweeps(by)[0] for d, by in results.get("quality", {}).get("summary", {}).items()}
    summary = {d: {n: e for n, e in by.items() if " median c=" not in n and " worst c=" not in n}
               for d, by in summary.items()}
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
    return _save(fig, out, "quality.png")


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
    return _save(fig, out, "graph_scaling.png")


# --------------------------------------------------------------------------- phantom families

_SPLITS = (("held_out", "held-out draws"), ("fresh", "fresh draws"), ("tune", "tuning draws"))
#: Splits whose GraphEM cutoff is the one chosen on the tuning draws.
_SCORED_SPLITS = ("held_out", "fresh")


def _reached(flag: bool | None) -> str:
    return "n/a" if flag is None else ("reached" if flag else "**not reached**")


def _method_order(name: str) -> tuple[int, str]:
    """The project's joint partition first, then its modalities, then the peers (results.json sorts keys)."""
    return (0 if name == "mmseg joint" else 1 if name.startswith("mmseg ") else 2, name)


def _family_rows(entry: dict, split: str, tuned: dict | None) -> list[tuple[str, dict]]:
    """(label, row) of every method on one family and split; GraphEM at its tuned cutoff (held-out
    and fresh draws) or at its best cutoff on these draws (tuning draws)."""
    from .methods import TOLD

    rows = []
    for name, row in sorted(entry["methods"].items(), key=lambda t: _method_order(t[0])):
        told = any(name == t or name.startswith(f"{t} (") for t in TOLD)
        rows.append((name + (" (told k)" if told else ""), row))
    for features, sets in entry["graphem"].items():
        name = max(sets, key=lambda n: n.count("+"))  # every modality's similarities averaged
        c = tuned[features]["c"] if tuned and split in _SCORED_SPLITS else sets[name]["best_c"]
        how = "tuned on the tuning draws" if tuned and split in _SCORED_SPLITS else "best on these draws"
        at = sets[name]["by_cutoff"][c]
        rows.append((f"graphem-{features} {name} c={c} ({how})",
                     {"ari": at, "n_found": at["n_found"], "n_exact": None, "seconds": entry["graphem_seconds"]}))
    return rows


def _fresh_options(results: dict) -> str:
    """The options that draw a run's fresh seeds again (``--fresh N --fresh-entropy E``), or none."""
    fam = results.get("families") or {}
    fresh = (fam.get("seeds") or {}).get("fresh")
    if "families" not in results["parts"] or "fresh_entropy" not in fam:
        return ""
    if not fresh:  # none drawn: the default already with --quick
        return "" if results["quick"] else " --fresh 0"
    return f" --fresh {len(fresh)} --fresh-entropy {fam['fresh_entropy']}"


def families_section(fam: dict) -> list[str]:
    seeds = fam["seeds"]
    goals = fam["goals"]

    def span(values: list[int]) -> str:
        return f"{values[0]}-{values[-1]}" if len(values) > 1 else (str(values[0]) if values else "none")

    fresh = seeds.get("fresh", [])
    fresh_text = (f"; and {len(fresh)} fresh draws, from seeds drawn at random for this run (entropy "
                  f"{fam['fresh_entropy']}; the seeds are in results.json), which no one had seen before it"
                  if fresh else "")
    lines = ["## Phantom families", "",
             f"{len(seeds['tune']) + len(seeds['held_out'])} draws per family: tuning seeds {span(seeds['tune'])}, "
             f"held-out seeds {span(seeds['held_out'])} (defaults may be chosen on the tuning draws only)"
             f"{fresh_text}; "
             f"`segment()` with every default, seed {fam['segment_seed']}. ARI against each draw's truth on the grid "
             "the partitions are painted on (image pixels for image-only families, the scan for image + EELS). "
             "For image-only families the joint partition is the image's own. *Communities*: mean found / true "
             "number of regions. "
             + ("Peers marked *told k* are given the true number of regions; the others, like the project, are "
                "not. GraphEM is scored on the average of every modality's similarities, at the cutoff chosen on "
                "the tuning draws (held-out and fresh tables) or the best cutoff on the draws themselves (tuning "
                "tables, an oracle)." if fam.get("with_peers", True) else
                "**Peers not run** (`--no-peers`): the project alone, scored on more draws than the peers' time "
                "allows."), "",
             f"### Goals (issue 9): mean ARI ≥ {goals['mean_ari']}, worst draw ≥ {goals['worst_ari']}, "
             "joint ≥ best single modality in every draw", "",
             "| family | draws | mean ARI | worst ARI | joint ≥ best single | communities | mean goal | worst goal "
             "| joint goal |", "|---|---|---:|---:|---:|---:|---|---|---|"]
    summary = {f: fam["summary"][f] for f in fam["families"] if f in fam.get("summary", {})}  # in the order run
    for family, entry in summary.items():
        for split, label in _SPLITS:
            e = entry.get(split, {})
            if not e.get("n_draws"):
                continue
            joint = e["methods"]["mmseg joint"]
            frac, short = e["joint_at_least_best_single"], e.get("joint_shortfall")
            fused = ("n/a (one modality)" if frac is None
                     else f"{frac:.0%}" + (f" (trails by ≤ {short:.3f})" if short else ""))
            lines.append(f"| {family} | {e['n_draws']} {label.split()[0]} | {joint['ari']['mean']:.3f} | "
                         f"{joint['ari']['worst']:.3f} | {fused} | "
                         f"{joint['n_found']:.1f} / {e['n_true']:.1f} | {_reached(e['goals']['mean_ari'])} | "
                         f"{_reached(e['goals']['worst_ari'])} | "
                         f"{_reached(e['goals']['joint_at_least_best_single'])} |")
    errors = [d for d in fam["draws"] if "error" in d]
    if errors:
        lines += ["", f"{len(errors)} draws failed: " + "; ".join(
            f"{d['family']} seed {d['seed']}: {d['error']}" for d in errors[:10])]
    for split, label in _SPLITS:
        lines += ["", f"### Every method, {label}", ""]
        for family, entry in summary.items():
            e = entry.get(split, {})
            if not e.get("n_draws"):
                continue
            lines += [f"**{family}** ({e['n_draws']} draw{'s' if e['n_draws'] > 1 else ''}, "
                      f"{e['n_true']:.1f} regions on average)", "",
                      "| method | mean ARI | worst ARI | median ARI | communities | exact k | s/draw |",
                      "|---|---:|---:|---:|---:|---:|---:|"]
            for name, row in _family_rows(e, split, entry.get("graphem_tuned")):
                exact = "" if row["n_exact"] is None else f"{row['n_exact']:.0%}"
                lines.append(f"| {name} | {row['ari']['mean']:.3f} | {row['ari']['worst']:.3f} | "
                             f"{row['ari']['median']:.3f} | {row['n_found']:.1f} | {exact} | {row['seconds']:.1f} |")
            lines.append("")
    if not fam.get("with_peers", True):
        return lines
    lines += ["### GraphEM's cutoff", "",
              "Mean ARI over the held-out draws at the best, median and worst cutoff (ranked on those draws), and at "
              "the cutoff chosen on the tuning draws; the project's joint partition beside it. † the best cutoff "
              f"is at an end of the swept range ({min(fam['cutoffs']):g}-{max(fam['cutoffs']):g}): one beyond it "
              "might do better.", "",
              "| family | features | modalities | best c | median c | worst c | tuned c → held-out mean (worst) "
              "| mmseg joint |", "|---|---|---|---|---|---|---|---:|"]
    for family, entry in summary.items():
        held = entry.get("held_out", {})
        if not held.get("n_draws"):
            continue
        for features, sets in held["graphem"].items():
            name = max(sets, key=lambda n: n.count("+"))
            g = sets[name]
            cell = {k: f"{g[k]} ({g['by_cutoff'][g[k]]['mean']:.3f})" for k in ("best_c", "median_c", "worst_c")}
            if float(g["best_c"]) in (min(fam["cutoffs"]), max(fam["cutoffs"])):
                cell["best_c"] += " †"
            tuned = entry.get("graphem_tuned", {}).get(features)
            tuned_cell = (f"{tuned['c']} → {tuned['held_out']['mean']:.3f} ({tuned['held_out']['worst']:.3f})"
                          if tuned else "n/a")
            lines.append(f"| {family} | {features} | {name} | {cell['best_c']} | {cell['median_c']} | "
                         f"{cell['worst_c']} | {tuned_cell} | {held['methods']['mmseg joint']['ari']['mean']:.3f} |")
    return lines + [""]


def _family_points(fam: dict, family: str, split: str) -> dict[str, list[float]]:
    """Per method, the ARI of every draw of one family and split (GraphEM at its tuned or best cutoff)."""
    from .methods import TOLD

    entry = fam["summary"][family]
    draws = [d for d in fam["draws"] if d["family"] == family and d["split"] == split and "error" not in d]
    points: dict[str, list[float]] = {}
    for d in draws:
        for name, score in d["project"]["partitions"].items():
            points.setdefault(f"mmseg {name}", []).append(score["ari"])
        for features, sets in d["graphem"].items():
            name = max(sets, key=lambda n: n.count("+"))
            tuned = entry.get("graphem_tuned", {}).get(features) if split in _SCORED_SPLITS else None
            c = tuned["c"] if tuned else entry[split]["graphem"][features][name]["best_c"]
            points.setdefault(f"graphem-{features} c={c}", []).append(sets[name][c]["ari"])
        for name, score in d["peers"].items():
            told = any(name == t or name.startswith(f"{t} (") for t in TOLD)
            points.setdefault(name + (" [told k]" if told else ""), []).append(score["ari"])
    return dict(sorted(points.items(), key=lambda t: _method_order(t[0])))


def families_figure(results: dict, out: Path) -> str | None:
    """``families.png``: per family, the ARI of every draw by method, the held-out and the fresh
    draws side by side (each with its own mean), or the tuning draws where neither was run.

    Both scored splits are drawn because each is judged against the goals on its own: a miss
    on the fresh draws alone is still a miss.
    """
    import matplotlib.pyplot as plt

    fam = results.get("families", {})
    summary = {f: fam["summary"][f] for f in fam.get("families", []) if f in fam.get("summary", {})}
    shown = []
    for family, entry in summary.items():
        splits = [s for s in _SCORED_SPLITS if entry.get(s, {}).get("n_draws")]
        splits = splits or (["tune"] if entry.get("tune", {}).get("n_draws") else [])
        if splits:
            shown.append((family, splits))
    if not shown:
        return None
    cols = min(4, len(shown))
    rows = -(-len(shown) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.4 * rows), squeeze=False)
    rng = np.random.default_rng(0)
    goals = fam["goals"]
    markers = {"held_out": "o", "fresh": "^", "tune": "s"}
    for ax, (family, splits) in zip(axes.ravel(), shown):
        points = {split: _family_points(fam, family, split) for split in splits}
        names = list(dict.fromkeys(name for split in splits for name in points[split]))
        names.sort(key=_method_order)
        width = 0.7 / len(splits)  # each split's share of a method's slot
        for j, split in enumerate(splits):
            for i, name in enumerate(names):
                values = points[split].get(name)
                if not values:
                    continue
                colour = "tab:blue" if name.startswith("mmseg") else "tab:orange" if name.startswith("graphem") \
                    else "tab:grey" if "[told k]" in name else "tab:green"
                x = i - 0.35 + width * (j + 0.5)
                ax.scatter(x + rng.uniform(-0.3, 0.3, len(values)) * width, values, s=12, alpha=0.7,
                           color=colour, marker=markers[split])
                ax.plot([x - 0.4 * width, x + 0.4 * width], [np.mean(values)] * 2, color="black", lw=1.2)
        ax.axhline(goals["mean_ari"], color="tab:red", lw=0.8, ls="--")
        ax.axhline(goals["worst_ari"], color="tab:red", lw=0.8, ls=":")
        ax.set_xticks(range(len(names)), names, rotation=70, ha="right", fontsize=6)
        ax.set_ylim(-0.05, 1.02)
        counts = ", ".join(f"{summary[family][split]['n_draws']} {split.replace('_', '-')}" for split in splits)
        ax.set_title(f"{family} ({counts})", fontsize=9)
        ax.set_ylabel("ARI", fontsize=8)
    for ax in axes.ravel()[len(shown):]:
        ax.axis("off")
    fig.suptitle("Phantom families: ARI per draw (bar: mean; dashed: goal for the mean, dotted: worst draw)\n"
                 "blue: project, orange: GraphEM, green: peers not told k, grey: peers told k; "
                 "circles: held-out draws, triangles: fresh draws (left and right in each slot), "
                 "squares: tuning draws", fontsize=9)
    return _save(fig, out, "families.png")


# --------------------------------------------------------------------------- chip scale


def _error_row(row: dict, columns: int) -> str:
    """A table row of ``columns`` cells for an image whose case failed: set, image, the error."""
    return f"| {row['group']} | {row['image']} | error: {row['error']} |" + " |" * (columns - 3)


def chip_scale_section(rows: list[dict]) -> list[str]:
    lines = ["## ARI against chip size", "",
             "`segment()` with every default but the chip size, from about half to twice the automatic size "
             "(stride: half a chip); pixel ARI against the truth. *Swing*: best minus worst ARI over the range.", "",
             "| set | image | auto chip px | ARI by chip size (px) | swing | communities |",
             "|---|---|---:|---|---:|---|"]
    for r in rows:
        if "error" in r:
            lines.append(_error_row(r, 6))
            continue
        cells = ", ".join(f"{x['chip']}{'*' if x['chip'] == r['auto_chip'] else ''}: {x['ari']:.2f}" for x in r["rows"])
        counts = [x["n_communities"] for x in r["rows"]]
        lines.append(f"| {r['group']} | {r['image']} | {r['auto_chip']} | {cells} | {r['swing']:.2f} | "
                     f"{min(counts)}-{max(counts)} |")
    ok = [r for r in rows if "swing" in r]
    if ok:
        lines += ["", f"Median swing {np.median([r['swing'] for r in ok]):.2f}, largest "
                  f"{max(r['swing'] for r in ok):.2f} ({max(ok, key=lambda r: r['swing'])['image']}); "
                  "* the automatic size."]
    return lines + [""]


def chip_scale_figure(results: dict, out: Path) -> str | None:
    import matplotlib.pyplot as plt

    rows = [r for r in results.get("chip_scale", []) if "rows" in r]
    if not rows:
        return None
    groups = list(dict.fromkeys(r["group"] for r in rows))
    colours = dict(zip(groups, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 3))
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        ax.plot([x["factor"] for x in r["rows"]], [x["ari"] for x in r["rows"]], "o-", ms=3, lw=1,
                color=colours[r["group"]], alpha=0.8)
    for group in groups:
        ax.plot([], [], "o-", color=colours[group], label=group)
    ax.set_xscale("log", base=2)
    ax.axvline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("chip size / automatic chip size")
    ax.set_ylabel("pixel ARI")
    ax.set_ylim(-0.05, 1.02)
    ax.legend(fontsize=7)
    ax.set_title("ARI against chip size (one line per image)")
    return _save(fig, out, "chip_scale.png")


# --------------------------------------------------------------------------- separability


def _p(p: float | None) -> str:
    return "n/a" if p is None else f"{p:.3f}"


def separability_section(rows: list[dict]) -> list[str]:
    from .separability import ALPHA, PURE

    lines = ["## Are the classes two populations?", "",
             "The project keeps two communities apart only where its chips form two modes along the "
             "discriminant axis between them (dip test, alpha = "
             f"{ALPHA}). Here that test is put to the truth: the chips lying at least {PURE:.0%} in each of "
             "the image's two largest classes, in the run's own features, on the axis fitted to those "
             "classes (the most favourable there is). *p*: its p-value; p >= alpha means one population, "
             "which no partition that decides its number of regions from modes can split. *pure*: chips of "
             "each class; *ceiling*: pixel ARI of the truth's chip majorities painted back. *segments*: the same "
             "test on the felzenszwalb-kmeans peer's segments and features.", "",
             "| set | image | chip px | pure chips | p | ceiling ARI | segments pure | segments p |",
             "|---|---|---|---|---|---|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(_error_row(r, 8))
            continue
        chips = r["chips"]
        seg = r["segments"]
        lines.append(" | ".join([
            f"| {r['group']}", r["image"],
            ", ".join(f"{c['chip']}{'*' if c['auto'] else ''}" for c in chips),
            ", ".join(f"{c['pure'][0]}/{c['pure'][1]}" for c in chips),
            ", ".join(_p(c["p"]) for c in chips),
            ", ".join(f"{c['ceiling_ari']:.2f}" for c in chips),
            f"{seg['pure'][0]}/{seg['pure'][1]}", _p(seg["p"]) + " |"]))
    lines += ["", "Per set: images whose two largest classes are two populations (p < alpha) / images tested.", "",
              "| set | images | at the automatic chip | at half of it | on segments "
              "| ceiling ARI at the automatic chip |",
              "|---|---:|---:|---:|---:|---:|"]
    counts = separability_counts(rows)
    for group, c in counts.items():
        lines.append(f"| {group} | {c['images']} | {c['auto']} | {c['half']} | {c['segments']} | {c['ceiling']:.3f} |")
    lines += ["", "* the automatic chip size.", "",
              "By chip size (stride half a chip), mean over the set: the ceiling (pixel ARI of the truth's chip "
              "majorities), and k-means *told the number of classes* on the chips' mean intensities, painted back: "
              "what grey level alone gives at that scale.", "",
              "| set | chip px | ceiling ARI | told-k intensity k-means ARI (worst) |", "|---|---:|---:|---:|"]
    for group, c in counts.items():
        for chip, (ceiling, told, worst) in c["scales"].items():
            lines.append(f"| {group} | {chip} | {ceiling:.3f} | {told:.3f} ({worst:.3f}) |")
    return lines + [""]


def separability_counts(rows: list[dict]) -> dict[str, dict]:
    """Per set: images, and ``"k/n"`` images with two populations (of those tested) at the automatic
    chip, at the smaller chip and on segments; the mean ceiling ARI at the automatic chip; and
    ``scales``: ``{chip px: (mean ceiling ARI, mean and worst told-k intensity k-means ARI)}``."""
    def tally(tests: list[dict]) -> str:
        tested = [t for t in tests if t["p"] is not None]
        return f"{sum(t['two_populations'] for t in tested)}/{len(tested)}"

    out = {}
    for group in dict.fromkeys(r["group"] for r in rows if "chips" in r):
        ok = [r for r in rows if r["group"] == group and "chips" in r]
        auto = [next(c for c in r["chips"] if c["auto"]) for r in ok]
        half = [c for r in ok for c in r["chips"] if not c["auto"]]
        by_chip: dict[int, list[dict]] = {}
        for x in sorted((x for r in ok for x in r["scales"]), key=lambda x: x["chip"]):
            by_chip.setdefault(x["chip"], []).append(x)
        told = {chip: [x["intensity_kmeans_ari"] for x in at] for chip, at in by_chip.items()}
        out[group] = {"images": len(ok), "auto": tally(auto), "half": tally(half),
                      "segments": tally([r["segments"] for r in ok]),
                      "ceiling": float(np.mean([c["ceiling_ari"] for c in auto])),
                      "scales": {chip: (float(np.mean([x["ceiling_ari"] for x in at])), float(np.mean(told[chip])),
                                        float(min(told[chip]))) for chip, at in by_chip.items()}}
    return out


def separability_figure(results: dict, out: Path) -> str | None:
    import matplotlib.pyplot as plt

    from .separability import ALPHA

    rows = [r for r in results.get("separability", []) if "chips" in r]
    if not rows:
        return None
    groups = list(dict.fromkeys(r["group"] for r in rows))
    fig, ax = plt.subplots(figsize=(7, 3.6))
    kinds = (("automatic chip", lambda r: next(c for c in r["chips"] if c["auto"])),
             ("half chip", lambda r: next((c for c in r["chips"] if not c["auto"]), None)),
             ("segments", lambda r: r["segments"]))
    width = 0.8 / len(kinds)
    for k, (label, pick) in enumerate(kinds):
        for g, group in enumerate(groups):
            ps = [t["p"] for r in rows if r["group"] == group and (t := pick(r)) is not None and t["p"] is not None]
            x = g + (k - (len(kinds) - 1) / 2) * width + np.linspace(-0.3, 0.3, max(len(ps), 1))[: len(ps)] * width
            ax.scatter(x, np.maximum(ps, 1e-4), s=10, color=f"C{k}", label=label if g == 0 else None)
    ax.axhline(ALPHA, color="k", lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel("dip-test p of the two largest classes\n(p < 1e-4 drawn at 1e-4)", fontsize=8)
    ax.set_title(f"Below the dashed line (alpha = {ALPHA}) the classes are two populations", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=len(kinds), frameon=False)
    return _save(fig, out, "separability.png")


def _methods_option(results: dict) -> str:
    from .methods import METHODS, QUICK_METHODS

    default = set(QUICK_METHODS if results["quick"] else METHODS)
    chosen = list(results["methods"])
    return "" if "quality" not in results["parts"] or set(chosen) == default else f" --methods {','.join(chosen)}"


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
             f"Thread limits: {m.get('thread_env') or 'none'}.", ""]
    from .methods import TOLD

    if "quality" in results["parts"]:  # the methods compared there
        lines += ["Methods:", ""]
        lines += [f"- `{n}`: {d}" + (" (project)" if n in results["project_methods"]
                                     else " (told the number of classes)" if n in TOLD else "")
                  for n, d in results["methods"].items()] + [""]
    families = results.get("family_names")
    lines += ["Reproduce: `mmseg bench DATA_DIR --out DIR"
              + (" --quick" if results["quick"] else "")
              + (f" --images {results['n_images']}" if results.get("n_images") else "")
              + _methods_option(results)
              + f" --parts {','.join(results['parts'])}"
              + (f" --families {','.join(families)}" if families and "families" in results["parts"]
                 and len(families) < len(FAMILIES) else "")
              + (f" --draws {results['draws']}" if results.get("draws") else "")
              + _fresh_options(results)
              + (" --no-peers" if results.get("family_peers") is False else "")
              + (f" --stability-images {results['stability_images']}" if results.get("stability_images") else "")
              + "`", ""]
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
        figures.append(speed_steps_figure(results, out))
        figures.append(graph_figure(results, out))
    if "families" in results:
        lines += families_section(results["families"])
        figures.append(families_figure(results, out))
    if "chip_scale" in results:
        lines += chip_scale_section(results["chip_scale"])
        figures.append(chip_scale_figure(results, out))
    if "separability" in results:
        lines += separability_section(results["separability"])
        figures.append(separability_figure(results, out))
    lines += [f"![{f}]({f})" for f in figures if f]
    if results.get("part_seconds"):
        lines += ["", "Time per part: " + ", ".join(f"{k} {v:.0f} s" for k, v in results["part_seconds"].items()), ""]
    write_text_atomic(out / "report.md", "\n".join(lines) + "\n")
