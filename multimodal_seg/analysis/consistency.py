"""How far the modalities agree: pairwise scores between their partitions and a disagreement map."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from ..metrics import adjusted_rand, contingency, nmi, variation_of_information

SCORES = {"ari": adjusted_rand, "nmi": nmi, "vi": variation_of_information}


def consistency_matrices(partitions: dict[str, np.ndarray]) -> dict:
    """ARI, NMI and variation of information between every pair of partitions.

    Parameters
    ----------
    partitions
        Chip labels per name (one per modality, plus ``"joint"``), same chips.

    Returns
    -------
    ``{"names": [...], "ari": [[...]], "nmi": [[...]], "vi": [[...]]}`` (JSON-able).
    """
    names = list(partitions)
    out: dict = {"names": names}
    for score, function in SCORES.items():
        out[score] = [[float(function(partitions[a], partitions[b])) for b in names] for a in names]
    return out


def majority_map(labels: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Relabel ``labels`` by the reference label each of its communities mostly overlaps."""
    labels, reference = np.asarray(labels), np.asarray(reference)
    valid = (labels >= 0) & (reference >= 0)
    table = contingency(labels[valid], reference[valid])
    ids_l, ids_r = np.unique(labels[valid]), np.unique(reference[valid])
    mapping = {l_id: ids_r[row.argmax()] for l_id, row in zip(ids_l, table)}
    return np.array([mapping.get(x, -1) for x in labels])


def disagreement(partitions: dict[str, np.ndarray], joint: np.ndarray) -> np.ndarray:
    """Per chip, the fraction of modality partitions that disagree with the joint one.

    Each modality's communities are first mapped to the joint community they mostly
    overlap, so that different numbering (or a modality splitting one region in
    two) is not counted as disagreement; what remains are chips that a modality
    puts with another region.

    Returns
    -------
    ``(n_chips,)`` float in [0, 1].
    """
    votes = [majority_map(labels, joint) != joint for labels in partitions.values()]
    return np.mean(votes, axis=0)


def consistency_figure(matrices: dict, disagreement_grid: np.ndarray) -> Figure:
    """ARI matrix between partitions and the map of chips where modalities disagree."""
    names = matrices["names"]
    ari = np.asarray(matrices["ari"])
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    im = left.imshow(ari, vmin=0, vmax=1, cmap="viridis")
    left.set_xticks(range(len(names)), names, rotation=45, ha="right")
    left.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            left.text(j, i, f"{ari[i, j]:.2f}", ha="center", va="center",
                      color="white" if ari[i, j] < 0.6 else "black", fontsize="small")
    left.set_title("adjusted Rand index between partitions")
    fig.colorbar(im, ax=left, shrink=0.8)
    im2 = right.imshow(disagreement_grid, vmin=0, vmax=1, cmap="magma", interpolation="nearest")
    right.set_title("fraction of modalities disagreeing with the joint labels")
    right.set_xlabel("chip column")
    right.set_ylabel("chip row")
    fig.colorbar(im2, ax=right, shrink=0.8)
    return fig
