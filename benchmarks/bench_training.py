"""Self-supervised encoders against weight-free and untrained ones, per modality, on held-out data.

    python benchmarks/bench_training.py DATA_DIR --out benchmarks/reports/training-2cpu [--parts image,spectrum,diffraction]

For each modality an encoder is trained with ``multimodal_seg.training.train_encoder`` (the
defaults unless stated) on *training* data, and three encoders are scored on *held-out*
data it never saw (other phantom seeds, other labelled images), and on the training data
too, reported separately:

* the weight-free default (``fourier``, ``spectrum-pca``, ``diffraction-profiles``),
* the trainable network untrained (``weights="random"``),
* the self-trained network (the checkpoint).

Scores: the adjusted Rand index of ``segment()``'s partition (defaults otherwise) with the
truth, at pixel level for images and on the scan grid for spectra and patterns; the
number of communities; and the *kNN purity* of the chip embeddings: the fraction of
each chip's 15 nearest neighbours (cosine, after the graph stage's standardisation and
PCA) that share its majority truth label.  Purity asks whether the encoder separates
the regions, whatever the community step then makes of the graph.

Phantom families: the multimodal phantom (HAADF + EELS + 4D-STEM, 64 x 64 scan) at
its default doses and at a tenth of them, seeds 0-2 for training and 3-5 held out; the
HAADF image phantom (512 px), seeds 0-2 / 3-5.  Labelled SEM sets (``DATA_DIR/labelled/
nasa_pmm``): even-indexed images for training, odd-indexed held out.  Writes
``results.json`` and ``report.md`` atomically, after each part.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from multimodal_seg import stages
from multimodal_seg.bench.datasets import labelled_images
from multimodal_seg.graphs.knn import cosine_neighbours, reduce_features
from multimodal_seg.metrics import agreement
from multimodal_seg.pipeline.study import Study
from multimodal_seg.provenance import package_versions, to_json, write_text_atomic
from multimodal_seg.synthetic.multimodal import multimodal_phantom
from multimodal_seg.synthetic.phantoms import haadf_phantom
from multimodal_seg.training import train_encoder

#: Neighbours counted by the kNN purity (the graph stage's k).
PURITY_K = 15
#: The diagnostic run's ``merge`` (the project's optional merging; 0.5 is its documented start).
MERGE = 0.5
#: Per modality: the weight-free default and the trainable network.
ENCODERS = {"image": ("fourier", "image-cnn"), "spectrum": ("spectrum-pca", "spectrum-cnn"),
            "diffraction": ("diffraction-profiles", "diffraction-cnn")}
#: Modality name in the phantom, by kind.
PHANTOM_NAME = {"image": "haadf", "spectrum": "eels", "diffraction": "diffraction"}


def evaluate(name: str, modality: Any, truth: np.ndarray, encoder: str, options: dict[str, Any],
             seed: int = 0) -> dict[str, Any]:
    """Segment one modality with ``encoder`` through the public stages; ARI, communities, purity.

    ``truth`` lies on the modality's scan (pixel) grid.
    """
    study = Study.open(None)
    stages.add_modalities(study, {name: modality})
    grid = stages.lay_chips(study)
    start = time.perf_counter()
    used = {name: encoder} if modality.kind != "image" else {}
    stages.embed(study, encoder=encoder if modality.kind == "image" else "auto",
                 encoder_options={name: options}, modality_encoders=used, seed=seed, progress=False)
    stages.build_graphs(study, seed=seed)
    stages.find_communities(study, seed=seed)
    seg = stages.collect(study)
    seconds = time.perf_counter() - start
    labels = seg.scan_labels[name]
    scores = agreement(labels, truth)
    chips = grid.per_modality[name]
    chip_truth = grid.grid.pixel_labels_to_chips(truth).ravel()
    key = f"embeddings/{name}"
    reduced = reduce_features(study.read_array(key), n_pcs=30, seed=seed,
                              standardise=study.attrs_of(key).get("standardise", True))
    _, idx = cosine_neighbours(reduced, reduced, PURITY_K + 1)
    keep = chip_truth >= 0
    purity = float((chip_truth[idx[:, 1:]] == chip_truth[:, None])[keep].mean())
    # diagnostic: the same graph with the project's optional merging of connected communities
    stages.find_communities(study, seed=seed, merge=MERGE)
    merged = agreement(stages.collect(study).scan_labels[name], truth)
    return {"ari": float(scores["ari"]), "communities": int(scores["n_pred"]), "purity": purity,
            "ari_merge": float(merged["ari"]), "communities_merge": int(merged["n_pred"]),
            "seconds": seconds, "n_chips": int(len(chips.origins))}


def _train(data: list[Any], kind: str, out: Path, echo, **options: Any) -> dict[str, Any]:
    shutil.rmtree(out.with_name(f"{out.stem}-training"), ignore_errors=True)  # a fresh run each time
    start = time.perf_counter()
    result = train_encoder(data, modality=kind, out=out, progress=False, **options)
    seconds = time.perf_counter() - start
    echo(f"  trained {result.info.encoder} in {seconds:.0f} s, {len(result.history)} epochs, "
         f"best {result.info.training['best_epoch']}")
    return {"checkpoint": str(out), "seconds": seconds, "history": result.history,
            "best_epoch": result.info.training["best_epoch"], "options": result.info.options}


def _score_all(kind: str, items: list[tuple[str, Any, np.ndarray]], checkpoint: Path, echo) -> list[dict]:
    free, net = ENCODERS[kind]
    variants = {"weight-free": (free, {}), "untrained": (net, {"weights": "random"}),
                "self-trained": (net, {"weights": str(checkpoint)})}
    rows = []
    for label, modality, truth in items:
        for variant, (encoder, options) in variants.items():
            score = evaluate(PHANTOM_NAME.get(kind, kind) if kind != "image" else "image", modality, truth,
                             encoder, options)
            rows.append({"item": label, "variant": variant, "encoder": encoder, **score})
            echo(f"  {label:28s} {variant:12s} ARI {score['ari']:.3f} purity {score['purity']:.3f} "
                 f"({score['communities']} communities; merged ARI {score['ari_merge']:.3f})")
    return rows


def phantom_part(kind: str, work: Path, echo, *, scan: int, train_seeds: list[int], test_seeds: list[int],
                 doses: list[float], options: dict[str, Any]) -> dict[str, Any]:
    """For each dose factor: train on the multimodal (spectra, patterns) or HAADF (images)
    phantoms of ``train_seeds``, score on ``test_seeds`` and on the training phantoms.

    One encoder per dose, as a user trains on data from their own acquisition conditions:
    trained on a mixture of doses, the networks learnt the noise level, which neighbouring
    positions share, as their main feature (purity 0.60 against 0.67 untrained on EELS).
    """

    def render(seed: int, dose: float) -> tuple[Any, np.ndarray]:
        if kind == "image":
            from multimodal_seg.modalities.sources import read_modalities

            ph = haadf_phantom((scan, scan), seed=seed, dose=200.0 * dose)
            return read_modalities({"image": ph.image})["image"], ph.truth
        ph = multimodal_phantom((scan, scan), seed=seed, dose_eels=1e5 * dose, dose_diffraction=2e4 * dose)
        return ph.modalities()[PHANTOM_NAME[kind]], ph.truth

    trainings, rows = {}, []
    for dose in doses:
        train = {s: render(s, dose) for s in train_seeds}
        checkpoint = work / f"{kind}-phantom-dose{dose:g}.ckpt"
        trainings[f"x{dose:g}"] = _train([m for m, _ in train.values()], kind, checkpoint, echo, **options)
        held = [(f"seed {s} dose x{dose:g}", *render(s, dose)) for s in test_seeds]
        seen = [(f"seed {s} dose x{dose:g} (trained on)", m, t) for s, (m, t) in train.items()]
        part = _score_all(kind, held, checkpoint, echo) + _score_all(kind, seen, checkpoint, echo)
        for row in part:
            row["held_out"], row["dose"] = "trained on" not in row["item"], dose
        rows += part
    return {"training": trainings, "rows": rows, "scan": scan, "doses": doses,
            "train_seeds": train_seeds, "test_seeds": test_seeds}


def labelled_part(data_dir: Path, dataset: str, work: Path, echo, *, options: dict[str, Any],
                  n_images: int | None) -> dict[str, Any]:
    """Train ``image-cnn`` on the even-indexed images of a labelled set, score on the odd-indexed ones."""
    from multimodal_seg.modalities.sources import read_modalities

    items = labelled_images(data_dir, dataset)
    if not items:
        return {"skipped": f"no {dataset} images under {data_dir}"}
    train, held = items[0::2], items[1::2]
    if n_images is not None:
        train, held = train[:n_images], held[:n_images]
    checkpoint = work / f"image-{dataset}.ckpt"
    training = _train([it.image for it in train], "image", checkpoint, echo, **options)
    as_items = lambda its, tag: [(f"{it.name}{tag}", read_modalities({"image": it.image})["image"], it.truth)  # noqa: E731
                                 for it in its]
    rows = _score_all("image", as_items(held, ""), checkpoint, echo)
    rows += _score_all("image", as_items(train[: max(1, len(held) // 3)], " (trained on)"), checkpoint, echo)
    for row in rows:
        row["held_out"] = "trained on" not in row["item"]
    return {"training": {"all": training}, "rows": rows, "n_train": len(train), "n_held_out": len(held)}


def _table(part: dict[str, Any], held_out: bool, dose: float | None = None) -> list[str]:
    rows = [r for r in part["rows"] if r["held_out"] == held_out and (dose is None or r["dose"] == dose)]
    lines = ["| encoder | ARI mean | ARI worst | communities | purity mean | purity worst | "
             f"ARI, merge={MERGE} | communities, merge | s / item |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for variant in ("weight-free", "untrained", "self-trained"):
        sel = [r for r in rows if r["variant"] == variant]
        if not sel:
            continue
        ari, pur = [r["ari"] for r in sel], [r["purity"] for r in sel]
        mean = lambda key: np.mean([r[key] for r in sel])  # noqa: E731
        lines.append(f"| {variant} (`{sel[0]['encoder']}`) | {np.mean(ari):.3f} | {min(ari):.3f} | "
                     f"{mean('communities'):.1f} | {np.mean(pur):.3f} | {min(pur):.3f} | "
                     f"{mean('ari_merge'):.3f} | {mean('communities_merge'):.1f} | {mean('seconds'):.1f} |")
    return lines


def goal(part: dict[str, Any], metric: str = "ari") -> tuple[bool, float, float]:
    """Whether the self-trained encoder beats the weight-free one on held-out items (mean ``metric``)."""
    rows = [r for r in part["rows"] if r["held_out"]]
    trained = float(np.mean([r[metric] for r in rows if r["variant"] == "self-trained"]))
    free = float(np.mean([r[metric] for r in rows if r["variant"] == "weight-free"]))
    return trained > free, trained, free


def report(results: dict[str, Any]) -> str:
    lines = ["# Self-supervised encoders (training-2cpu)", "",
             f"Machine: {results['machine']}; torch threads {results['threads']}. "
             f"Versions: {', '.join(f'{k} {v}' for k, v in results['versions'].items() if v)}.", "",
             f"Reproduce: `{results['command']}`", ""]
    for name, part in results["parts"].items():
        lines += [f"## {name}", ""]
        if "skipped" in part:
            lines += [f"Skipped: {part['skipped']}", ""]
            continue
        for label, tr in part["training"].items():
            lines += [f"Training ({label}): {tr['seconds']:.0f} s on this CPU, {len(tr['history'])} epochs "
                      f"(best epoch {tr['best_epoch']}), options {tr['options']}."]
        lines.append("")
        for dose in part.get("doses", [None]):
            for held in (True, False):
                title = ("Held out" if held else "Trained on") + ("" if dose is None else f", dose x{dose:g}")
                lines += [f"**{title}**", "", *_table(part, held, dose), ""]
        ok, trained, free = goal(part)
        lines += [f"Goal (self-trained beats weight-free, held-out ARI): {'reached' if ok else 'not reached'} "
                  f"({trained:.3f} against {free:.3f}).", ""]
        if part.get("ceiling"):
            lines += [part["ceiling"], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path, nargs="?", default=None)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--parts", default="spectrum,diffraction,image-phantom,ebc,super")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--images", type=int, default=None, help="At most this many training and held-out "
                        "images per labelled set.")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "work"
    work.mkdir(exist_ok=True)
    results: dict[str, Any] = {
        "command": "python benchmarks/bench_training.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": f"{platform.processor() or platform.machine()}, {platform.platform()}",
        "threads": args.threads, "versions": package_versions(), "parts": {}}

    def echo(msg: str) -> None:
        print(msg, flush=True)

    def save() -> None:
        write_text_atomic(args.out / "results.json", to_json(results))
        write_text_atomic(args.out / "report.md", report(results))

    common = {"max_epochs": args.epochs}
    for part in [p.strip() for p in args.parts.split(",") if p.strip()]:
        echo(f"== {part}")
        if part in ("spectrum", "diffraction"):
            res = phantom_part(part, work, echo, scan=64, train_seeds=[0, 1, 2], test_seeds=[3, 4, 5],
                               doses=[1.0, 0.1], options=common)
        elif part == "image-phantom":
            res = phantom_part("image", work, echo, scan=512, train_seeds=[0, 1, 2], test_seeds=[3, 4, 5],
                               doses=[1.0, 0.1], options=common)
        elif part in ("ebc", "super"):
            res = (labelled_part(args.data_dir, part, work, echo, options=common, n_images=args.images)
                   if args.data_dir is not None else {"skipped": "no data folder given"})
        else:
            raise SystemExit(f"unknown part {part!r}")
        results["parts"][part] = res
        save()


if __name__ == "__main__":
    main()
