"""The ``chip_scale`` part of ``mmseg bench``: does the result swing with the chip size?

Each image is segmented with the project's defaults (the automatic chip size, read
back from the result: ``seg.grid.size``) and again with chips of ``factor`` times
that size (stride: the default, half a chip), every other option at its default.
The pixel ARI against the truth at each size, and its swing (best minus worst over
the range), show whether the defaults hold over a reasonable range of scales
(issue 9: "results that do not swing with chip size").
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ParameterError
from ..metrics import adjusted_rand

#: Chip sizes tried, as multiples of the automatic size (about half to twice).
FACTORS = (0.5, 0.71, 1.0, 1.41, 2.0)
#: Smallest chip tried, px (smaller chips hold too little texture to embed).
MIN_CHIP = 8


def chip_sizes(auto: int, factors: Sequence[float], largest: int) -> list[int]:
    """Distinct chip edges ``round(auto * factor)`` within ``MIN_CHIP .. largest`` px, ascending."""
    if any(not f > 0 for f in factors):
        raise ParameterError(f"chip factors must be positive, got {list(factors)}", fix="e.g. 0.5, 1, 2",
                             where="factors")
    return sorted({min(largest, max(MIN_CHIP, int(round(auto * f)))) for f in factors} | {auto})


def chip_sweep(image: np.ndarray, truth: np.ndarray, *, factors: Sequence[float] = FACTORS,
               seed: int = 0) -> dict[str, Any]:
    """Segment ``image`` at chip sizes around the automatic one and score each against ``truth``.

    Parameters
    ----------
    image
        ``(rows, cols)`` grey image.
    truth
        ``(rows, cols)`` region map.
    factors
        Chip sizes as multiples of the automatic size (the automatic size itself is
        always included).

    Returns
    -------
    dict
        ``auto_chip`` (px) and ``rows``: one per chip size, ascending, with ``chip``,
        ``stride`` (px), ``factor`` (chip / auto), ``ari``, ``n_communities``,
        ``seconds``; ``swing``: max minus min ARI over the rows.
    """
    from ..pipeline.segment import segment

    def run(chip: int | None) -> dict[str, Any]:
        start = time.perf_counter()
        seg = segment(image, chip_size=chip, seed=seed, progress=False)
        return {"chip": int(seg.grid.size), "stride": int(seg.grid.stride),
                "ari": adjusted_rand(seg.pixel_labels, truth), "n_communities": seg.n_communities,
                "seconds": time.perf_counter() - start}

    default = run(None)
    auto = default["chip"]
    rows = [default if chip == auto else run(chip) for chip in chip_sizes(auto, factors, min(image.shape))]
    for row in rows:
        row["factor"] = row["chip"] / auto
    aris = [r["ari"] for r in rows]
    return {"auto_chip": auto, "rows": rows, "swing": float(max(aris) - min(aris))}
