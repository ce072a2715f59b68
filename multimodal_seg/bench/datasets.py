"""The labelled images the benchmark scores on: phantoms and the human-labelled SEM sets.

Every item is a grey image with a truth map of the same shape.  The labelled sets
are read from a data folder laid out like ``../shared/data`` (see its README):

``labelled/nasa_pmm/EBC``
    22 SEM images of environmental barrier coatings, 1024 x 1024 px, ``*_image.png`` with
    ``*_label.png`` (0 background: top coating *and* substrate, 1 thermally grown oxide,
    2 crack).
``labelled/nasa_pmm/Super``
    23 SEM images of Ni superalloys, 512 x 512 px (0 matrix, 1 secondary, 2 tertiary
    gamma-prime).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError
from ..synthetic.phantoms import haadf_phantom

#: Labelled sets: folder under the data folder, title, class names.
LABELLED_SETS: dict[str, dict] = {
    "ebc": {"folder": "labelled/nasa_pmm/EBC", "title": "NASA PMM EBC coatings (SEM, 1024 px)",
            "classes": ["background (top coating + substrate)", "thermally grown oxide", "crack"]},
    "super": {"folder": "labelled/nasa_pmm/Super", "title": "NASA PMM superalloys (SEM, 512 px)",
              "classes": ["matrix", "secondary gamma-prime", "tertiary gamma-prime"]},
}


@dataclass
class LabelledImage:
    """One benchmark image.

    Attributes
    ----------
    dataset, name
        Set key (``"phantom"``, ``"ebc"``, ``"super"``) and image name.
    image
        ``(rows, cols)`` float32 grey levels.
    truth
        ``(rows, cols)`` int64 class ids.
    n_classes
        Classes of the set (what peers are given as their number of clusters).
    """

    dataset: str
    name: str
    image: np.ndarray
    truth: np.ndarray
    n_classes: int


def phantom_images(seeds: list[int], size: int = 512) -> list[LabelledImage]:
    """HAADF phantoms (:func:`multimodal_seg.synthetic.phantoms.haadf_phantom`), one per seed, 4 regions."""
    out = []
    for seed in seeds:
        ph = haadf_phantom((size, size), seed=seed)
        out.append(LabelledImage("phantom", f"haadf-{size}-seed{seed}", ph.image.astype(np.float32),
                                 ph.truth.astype(np.int64), len(ph.region_names)))
    return out


def spread(items: list, n: int | None) -> list:
    """``n`` items evenly spread over the sorted list (all of them for ``None``)."""
    if n is None or n >= len(items):
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


def labelled_images(data_dir: Path, dataset: str, n: int | None = None) -> list[LabelledImage]:
    """The image/label pairs of one labelled set, ``n`` of them spread over the set.

    Returns an empty list where the folder is absent (the caller reports the set as
    skipped).

    Raises
    ------
    InputError
        An image without its label file, or a label of another shape.
    """
    spec = LABELLED_SETS[dataset]
    folder = Path(data_dir) / spec["folder"]
    if not folder.is_dir():
        return []
    out = []
    for image_path in spread(sorted(folder.glob("*_image.png")), n):
        label_path = image_path.with_name(image_path.name.replace("_image.png", "_label.png"))
        if not label_path.exists():
            raise InputError("has no label file beside it", fix=f"add {label_path.name}",
                             where=image_path)
        image = np.asarray(Image.open(image_path).convert("F"), dtype=np.float32)
        truth = np.asarray(Image.open(label_path), dtype=np.int64)
        if truth.ndim == 3:
            truth = truth[..., 0]
        if truth.shape != image.shape:
            raise InputError(f"label shape {truth.shape} differs from the image's {image.shape}",
                             fix="pair each image with its own label map", where=label_path)
        out.append(LabelledImage(dataset, image_path.name.replace("_image.png", ""), image, truth,
                                 len(spec["classes"])))
    return out
