"""The ``families`` part of ``mmseg bench``: phantom families with random parameters as the yardstick.

Every family of :mod:`multimodal_seg.synthetic.families` is drawn many times (one
specimen per seed).  Seeds are split into a **tuning** set (seeds 0-9: defaults may
be chosen on them) and a **held-out** set (seeds 10 and up: never looked at while
choosing), reported separately (:func:`split_seeds`).  A held-out set that every run
draws again is looked at every time a report is read, and a default that fails on it
gets looked into: over many rounds it stops being held out.  So each run can add
**fresh** draws too: seeds drawn at random for that run (:func:`fresh_seeds`), from a
range no other split uses, reported as a third split; the entropy they were drawn from
is recorded, so a run can be replayed.

On every draw:

* the project's defaults (:func:`multimodal_seg.bench.methods.run_project`, i.e.
  ``segment()``): the joint partition (for one image, the image's own) and each
  modality's own partition (``seg.scan_labels``), scored with
  :func:`multimodal_seg.metrics.adjusted_rand` against ``draw.truth`` on the grid it
  is painted on (image pixels for image-only families, the scan for multimodal
  ones), with their number of communities against the true number of regions;
* GraphEM (:mod:`multimodal_seg.bench.graphem`) on the project's own chip
  embeddings of that run, at every cutoff, feature variant and modality set;
* HyperSpy not told the number of regions (gap estimate) and told it, on the image
  (image-only families; the chip route of :mod:`multimodal_seg.bench.peers`) or on
  every spectrum image (multimodal families), and, on images, Felzenszwalb + k-means
  told it.  Image peers are not run on the HAADF of multimodal families, whose truth
  lives on the coarser scan.

:func:`summarise` gives per family and split the mean and worst ARI of every method,
how often the joint partition is at least as good as the best single modality and by how
much it trails it at worst, the
communities found against the truth, the time per draw, and GraphEM's spread over
its cutoffs (best, median and worst cutoff by mean ARI, and the cutoff chosen on
the tuning draws scored on the held-out ones).  Goals of issue 9 (:data:`GOALS`):
every family's mean ARI >= 0.95, worst draw >= 0.85, joint >= best single modality
in every draw.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import ParameterError
from ..metrics import adjusted_rand
from ..synthetic.families import FAMILIES, IMAGE_FAMILIES, Draw, draw
from . import graphem, methods, peers

#: Goals of issue 9, per family: mean ARI, worst draw, joint >= best single modality in every draw.
GOALS = {"mean_ari": 0.95, "worst_ari": 0.85, "joint_at_least_best_single": 1.0}
#: Seeds 0 .. TUNING_SEEDS - 1 may be tuned on; held-out seeds start at TUNING_SEEDS.
TUNING_SEEDS = 10
#: Fresh seeds (:func:`fresh_seeds`) are drawn from ``[FRESH_FIRST, 2**31)``, beyond every tuning
#: and held-out seed.
FRESH_FIRST = 1 << 20
#: The splits of a run's draws, in the order they are run.
SPLITS = ("tune", "held_out", "fresh")
#: Image peers run on image-only families (method names of :data:`methods.METHODS`).
IMAGE_PEERS = ("hyperspy-gap", "hyperspy-kmeans", "felzenszwalb-kmeans")
#: Two ARIs closer than this count as equal (joint against best single modality).
TIE = 1e-9
#: The project's main partition, as named in the results.
JOINT = "joint"


def split_seeds(n_draws: int) -> dict[str, list[int]]:
    """``{"tune": seeds, "held_out": seeds}`` for ``n_draws`` draws per family.

    Half (rounded up, at most :data:`TUNING_SEEDS`) come from the tuning seeds
    ``0, 1, ...``; the rest are held out, from seed :data:`TUNING_SEEDS` on.  30 draws:
    seeds 0-9 and 10-29; 20: 0-9 and 10-19; 2: 0 and 10.
    """
    if (isinstance(n_draws, bool) or not isinstance(n_draws, (int, np.integer))
            or not 1 <= n_draws <= FRESH_FIRST - TUNING_SEEDS):
        raise ParameterError(f"draws must be a positive integer, at most {FRESH_FIRST - TUNING_SEEDS} (where the "
                             f"fresh seeds start), got {n_draws!r}",
                             fix="e.g. draws=30 (10 tuning and 20 held-out seeds)", where="draws")
    tune = min(TUNING_SEEDS, (int(n_draws) + 1) // 2)
    return {"tune": list(range(tune)), "held_out": list(range(TUNING_SEEDS, TUNING_SEEDS + int(n_draws) - tune))}


def fresh_seeds(n: int, entropy: int | None = None) -> tuple[list[int], int]:
    """``n`` distinct seeds drawn at random from ``[FRESH_FIRST, 2**31)``, and the entropy they
    were drawn from.

    Without ``entropy`` it is new (the operating system's, as ``numpy.random.SeedSequence``
    takes it): every run draws specimens that no one has seen, let alone tuned a default on.
    Give a recorded ``entropy`` to draw the same seeds again.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ParameterError(f"fresh draws must be a non-negative integer, got {n!r}",
                             fix="e.g. fresh=10 (10 draws per family from new random seeds), or 0 for none",
                             where="fresh")
    if entropy is not None and (isinstance(entropy, bool) or not isinstance(entropy, (int, np.integer))
                                or entropy < 0):
        raise ParameterError(f"the entropy of fresh seeds must be a non-negative integer, got {entropy!r}",
                             fix="give the fresh_entropy a run recorded in its results.json, or leave it out",
                             where="fresh_entropy")
    sequence = np.random.SeedSequence(None if entropy is None else int(entropy))
    rng = np.random.default_rng(sequence)
    seeds = FRESH_FIRST + rng.choice(2**31 - FRESH_FIRST, size=int(n), replace=False)
    return sorted(int(s) for s in seeds), int(sequence.entropy)


def check_families(names: Sequence[str] | None) -> list[str]:
    """The families to run (all by default), checked."""
    names = list(FAMILIES if names is None else names)
    bad = sorted(set(names) - set(FAMILIES))
    if bad or not names:
        raise ParameterError(f"unknown phantom families {bad}" if bad else "no phantom family given",
                             fix=f"use some of {', '.join(FAMILIES)}", where="families")
    return names


def _score(labels: np.ndarray, truth: np.ndarray, seconds: float | None = None) -> dict[str, Any]:
    labels = np.asarray(labels)
    if labels.shape != truth.shape:
        raise ValueError(f"labels of shape {labels.shape} against a truth of shape {truth.shape}")
    out: dict[str, Any] = {"ari": adjusted_rand(labels, truth), "n": int(np.unique(labels[labels >= 0]).size)}
    if seconds is not None:
        out["seconds"] = seconds
    return out


def _timed(fn: Callable[[], np.ndarray]) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    labels = fn()
    return labels, time.perf_counter() - start


def _peers(specimen: Draw, n_true: int, seed: int) -> dict[str, dict]:
    """Scores of the peers on one draw: image peers on an image-only draw, HyperSpy on spectra."""
    out: dict[str, dict] = {}
    truth = np.asarray(specimen.truth)
    kinds = {name: m.kind for name, m in specimen.modalities.items()}
    if set(kinds.values()) == {"image"}:
        for name, modality in specimen.modalities.items():
            image = np.asarray(modality.data, dtype=np.float32)
            for peer in IMAGE_PEERS:
                outcome = methods.METHODS[peer][1](image, n_true, seed)
                key = peer if len(kinds) == 1 else f"{peer} ({name})"
                out[key] = _score(outcome.pixel_labels, truth, outcome.seconds)
        return out
    for name, modality in specimen.modalities.items():
        if modality.kind != "spectrum":
            continue
        data = np.asarray(modality.data)
        for peer, k in (("hyperspy-gap", None), ("hyperspy-kmeans", n_true)):
            labels, seconds = _timed(lambda k=k: peers.hyperspy_kmeans_spectrum(data, k, seed=seed))
            out[f"{peer} ({name})"] = _score(labels, truth, seconds)
    return out


def run_draw(specimen: Draw, *, seed: int = 0, cutoffs: Sequence[float] = graphem.CUTOFFS,
             with_peers: bool = True) -> dict[str, Any]:
    """Every method on one draw (the project alone with ``with_peers=False``); ARIs against
    ``specimen.truth``.

    Returns
    -------
    dict
        ``n_true``; ``project``: ``seconds``, ``chip``/``stride`` (reference-grid
        pixels), ``modalities`` and ``partitions`` (``{"joint" or modality: {"ari", "n"}}``;
        for one modality ``"joint"`` is its partition), ``joint_at_least_best_single``
        (several modalities only); ``graphem``: ``{features: {modality set:
        {cutoff: {"ari", "n"}}}}`` and ``graphem_seconds``; ``peers``: ``{name:
        {"ari", "n", "seconds"}}`` (without peers: ``{}``, ``None`` and ``{}``).
    """
    truth = np.asarray(specimen.truth)
    n_true = int(np.unique(truth).size)
    start = time.perf_counter()
    seg, study = methods.run_project(specimen.modalities, seed=seed)
    seconds = time.perf_counter() - start
    names = study.modality_names()
    main = JOINT if len(names) > 1 else names[0]
    partitions = {JOINT: _score(seg.scan_labels[main], truth)}
    if len(names) > 1:  # one modality: its partition is the joint one
        partitions.update({name: _score(seg.scan_labels[name], truth) for name in names})
    project: dict[str, Any] = {"seconds": seconds, "chip": int(seg.grid.size), "stride": int(seg.grid.stride),
                               "modalities": names, "partitions": partitions}
    if len(names) > 1:
        best_single = max(partitions[n]["ari"] for n in names)
        project["joint_at_least_best_single"] = bool(partitions[JOINT]["ari"] >= best_single - TIE)
    sweep: dict[str, dict] = {}
    graphem_seconds, peer_scores = None, {}
    if with_peers:
        start = time.perf_counter()
        for part in graphem.sweep(study, cutoffs=cutoffs, seed=seed):
            score = _score(part.scan_labels, truth)
            sweep.setdefault(part.features, {}).setdefault(part.name, {})[f"{part.cutoff:g}"] = score
        graphem_seconds = time.perf_counter() - start
        peer_scores = _peers(specimen, n_true, seed)
    return {"n_true": n_true, "project": project, "graphem": sweep, "graphem_seconds": graphem_seconds,
            "peers": peer_scores}


def run_families(names: Sequence[str] | None, n_draws: int, *, fresh: int = 0, fresh_entropy: int | None = None,
                 seed: int = 0, cutoffs: Sequence[float] | None = None, with_peers: bool = True,
                 echo: Callable[[str], None] | None = None,
                 checkpoint: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Run :func:`run_draw` on ``n_draws`` draws of every family in ``names``
    (:func:`split_seeds`), and on ``fresh`` more from seeds drawn for this run
    (:func:`fresh_seeds`, from ``fresh_entropy`` when given; the entropy used is returned as
    ``fresh_entropy``).

    ``cutoffs``: GraphEM's (default :data:`multimodal_seg.bench.graphem.CUTOFFS`).
    ``with_peers=False`` scores the project alone (no GraphEM, HyperSpy or Felzenszwalb): about
    a second a draw instead of tens, for many fresh draws.
    A failing draw is recorded with its error and the others still run;
    ``checkpoint(result so far)`` is called after every draw (for a report that can be
    read while the part runs).
    """
    names = check_families(names)
    seeds = split_seeds(n_draws)
    seeds["fresh"], entropy = fresh_seeds(fresh, fresh_entropy)
    cutoffs = graphem.CUTOFFS if cutoffs is None else cutoffs
    out: dict[str, Any] = {"families": names, "seeds": seeds, "fresh_entropy": entropy,
                           "cutoffs": [float(c) for c in cutoffs], "segment_seed": seed, "with_peers": with_peers,
                           "goals": GOALS, "draws": []}
    for family in names:
        for split, split_seeds_ in seeds.items():
            for s in split_seeds_:
                if echo:
                    echo(f"families: {family} seed {s} ({split})")
                record: dict[str, Any] = {"family": family, "seed": s, "split": split}
                try:
                    specimen = draw(family, s)
                    record["params"] = specimen.params
                    record.update(run_draw(specimen, seed=seed, cutoffs=cutoffs, with_peers=with_peers))
                except Exception as exc:  # one failing draw must not lose the others
                    record["error"] = f"{type(exc).__name__}: {exc}"
                    record["traceback"] = traceback.format_exc(limit=5)
                    if echo:
                        echo(f"  error: {record['error']}")
                out["draws"].append(record)
                if checkpoint:
                    out["summary"] = summarise(out)
                    checkpoint(out)
    out["summary"] = summarise(out)
    return out


# --------------------------------------------------------------------------- summary


def _stats(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "worst": float(arr.min()), "median": float(np.median(arr)), "n": int(arr.size)}


def _method_rows(draws: list[dict]) -> dict[str, dict]:
    """Per method: ARI stats, communities found against the truth, seconds."""
    scores: dict[str, list[tuple[dict, int]]] = {}
    for d in draws:
        for name, s in d["project"]["partitions"].items():
            scores.setdefault(f"mmseg {name}", []).append((s | {"seconds": d["project"]["seconds"]}, d["n_true"]))
        for name, s in d["peers"].items():
            scores.setdefault(name, []).append((s, d["n_true"]))
    rows = {}
    for name, pairs in scores.items():
        rows[name] = {"ari": _stats([s["ari"] for s, _ in pairs]),
                      "n_found": float(np.mean([s["n"] for s, _ in pairs])),
                      "n_exact": float(np.mean([s["n"] == t for s, t in pairs])),
                      "seconds": float(np.mean([s["seconds"] for s, _ in pairs]))}
    return rows


def _graphem_spread(draws: list[dict]) -> dict[str, dict[str, dict]]:
    """Per feature variant and modality set: mean and worst ARI at each cutoff; best, median, worst cutoff."""
    out: dict[str, dict[str, dict]] = {}
    for features, sets in draws[0]["graphem"].items():
        for name, by_cutoff in sets.items():
            cut = {c: _stats([d["graphem"][features][name][c]["ari"] for d in draws])
                   | {"n_found": float(np.mean([d["graphem"][features][name][c]["n"] for d in draws]))}
                   for c in by_cutoff}
            order = sorted(cut, key=lambda c: cut[c]["mean"])
            out.setdefault(features, {})[name] = {"by_cutoff": cut, "best_c": order[-1], "worst_c": order[0],
                                                  "median_c": order[(len(order) - 1) // 2]}
    return out


def main_set(draws: list[dict]) -> str:
    """GraphEM's counterpart of the joint partition: the set of every modality."""
    return "+".join(draws[0]["project"]["modalities"])


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """Per family and split (:data:`SPLITS`): what the module docstring lists, and the goals."""
    summary: dict[str, Any] = {}
    for family in result["families"]:
        mine = [d for d in result["draws"] if d["family"] == family]
        entry: dict[str, Any] = {"image_only": family in IMAGE_FAMILIES}
        for split in SPLITS:
            draws = [d for d in mine if d["split"] == split and "error" not in d]
            errors = sum(1 for d in mine if d["split"] == split and "error" in d)
            if not draws:
                entry[split] = {"n_draws": 0, "n_errors": errors}
                continue
            rows = _method_rows(draws)
            joint = rows[f"mmseg {JOINT}"]["ari"]
            fused = [d["project"] for d in draws if "joint_at_least_best_single" in d["project"]]
            fraction = float(np.mean([p["joint_at_least_best_single"] for p in fused])) if fused else None
            # how far the joint partition trails the best single modality at worst (0: never)
            shortfall = max((max(s["ari"] for name, s in p["partitions"].items() if name != JOINT)
                             - p["partitions"][JOINT]["ari"] for p in fused), default=None)
            entry[split] = {
                "n_draws": len(draws), "n_errors": errors, "n_true": float(np.mean([d["n_true"] for d in draws])),
                "methods": rows, "graphem": _graphem_spread(draws),
                "graphem_seconds": float(np.mean([d["graphem_seconds"] for d in draws])) if draws[0]["graphem"]
                else None,
                "joint_at_least_best_single": fraction,
                "joint_shortfall": None if shortfall is None else max(shortfall, 0.0),
                "goals": {"mean_ari": joint["mean"] >= GOALS["mean_ari"],
                          "worst_ari": joint["worst"] >= GOALS["worst_ari"],
                          "joint_at_least_best_single": None if fraction is None
                          else fraction >= GOALS["joint_at_least_best_single"]},
            }
        # GraphEM with its cutoff chosen on the tuning draws, scored on the held-out and fresh ones.
        tune = entry["tune"]
        scored = [split for split in SPLITS[1:] if entry[split].get("n_draws")]
        if tune.get("n_draws") and scored:
            name = main_set([d for d in mine if "error" not in d])
            entry["graphem_tuned"] = {}
            for features in tune["graphem"]:
                c = tune["graphem"][features][name]["best_c"]
                entry["graphem_tuned"][features] = {"set": name, "c": c} | {
                    split: entry[split]["graphem"][features][name]["by_cutoff"][c] for split in scored}
        summary[family] = entry
    return summary
