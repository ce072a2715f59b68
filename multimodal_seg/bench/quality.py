"""Scores of one segmentation against a truth, at pixel and at chip level.

Pixel level compares the painted labels with the truth pixel by pixel.  Chip level
compares, on the project's default chip grid for the image (the same grid for every
method), each chip's majority label of the segmentation with its majority truth label
(:meth:`multimodal_seg.chips.grid.ChipGrid.pixel_labels_to_chips`): it ignores how sharply
boundaries are drawn and asks only whether regions are told apart.

Scores (:mod:`multimodal_seg.metrics`): adjusted Rand index, NMI, variation of
information, many-to-one accuracy (unbounded, rewards over-segmentation), many-to-one
accuracy with at most ``2 x n_classes`` communities mapping (the others count as
wrong), mIoU after Hungarian matching, plus the majority baseline (the largest class's
share: what one community scores on many-to-one).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..chips.grid import ChipGrid
from ..metrics import agreement, contingency, many_to_one_bounded

#: Communities allowed to map in the bounded many-to-one accuracy, per truth class.
BOUND_PER_CLASS = 2
#: The row of the truth itself seen at chip level: each chip given its majority truth
#: label and painted back on the chip grid (an oracle, not a method): the best any
#: chip-level partition can score before boundary refinement.
CHIP_CEILING = "chip-level truth (oracle)"


def score_labels(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> dict[str, float]:
    """All scores of ``pred`` against ``truth`` (same shape; negative = unlabelled)."""
    scores: dict[str, Any] = dict(agreement(pred, truth))
    scores["many_to_one_bounded"] = many_to_one_bounded(pred, truth, BOUND_PER_CLASS * n_classes)
    c = contingency(pred, truth)
    scores["majority_baseline"] = float(c.sum(axis=0).max() / c.sum())
    return scores


def score(pred: np.ndarray, truth: np.ndarray, n_classes: int, grid: ChipGrid) -> dict[str, dict]:
    """``{"pixel": scores, "chip": scores}`` of a pixel map ``pred`` against ``truth``."""
    pred = np.asarray(pred)
    truth = np.asarray(truth)
    return {
        "pixel": score_labels(pred, truth, n_classes),
        "chip": score_labels(grid.pixel_labels_to_chips(pred), grid.pixel_labels_to_chips(truth),
                             n_classes),
    }


def chip_ceiling(truth: np.ndarray, n_classes: int, grid: ChipGrid) -> dict[str, dict]:
    """Scores of the truth painted back from its own chip majorities (:data:`CHIP_CEILING`)."""
    truth = np.asarray(truth)
    return score(grid.chip_labels_to_pixels(grid.pixel_labels_to_chips(truth)), truth, n_classes, grid)


def mean_sd(values: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), min and max."""
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "sd": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
            "min": float(arr.min()), "max": float(arr.max()), "n": int(arr.size)}


def summarise(records: list[dict[str, Any]]) -> dict[str, dict[str, dict]]:
    """Per dataset and method: mean and spread of every score over the images.

    ``records`` are dicts with ``dataset``, ``method``, ``scores`` (from :func:`score`)
    and ``seconds``; records with an ``error`` are counted, not scored.
    """
    out: dict[str, dict[str, dict]] = {}
    for rec in records:
        out.setdefault(rec["dataset"], {}).setdefault(rec["method"], {"records": []})["records"].append(rec)
    for methods in out.values():
        for name, entry in methods.items():
            good = [r for r in entry.pop("records") if "scores" in r]
            entry["n_errors"] = sum(1 for r in records if r["method"] == name and "error" in r)
            if not good:
                continue
            for level in ("pixel", "chip"):
                entry[level] = {key: mean_sd([r["scores"][level][key] for r in good])
                                for key in good[0]["scores"][level]}
            entry["seconds"] = mean_sd([r["seconds"] for r in good])
    return out
