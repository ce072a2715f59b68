"""The built-in example: segment a HAADF phantom and score it against its truth."""

from __future__ import annotations

from pathlib import Path

from .errors import ParameterError
from .metrics import agreement
from .synthetic.phantoms import haadf_phantom
from .pipeline.segment import segment
from .plot import save_figure, summary
from .provenance import to_json, write_text_atomic
from .result import Segmentation


def run_demo(out: str | Path | None = "mmseg-demo", *, size: int = 512, seed: int = 0,
             progress: bool = True, **options) -> tuple[Segmentation, dict[str, float]]:
    """Make a ``size x size`` phantom, segment it with the defaults, and score the result.

    Writes the usual outputs plus ``truth.png`` and ``agreement.json`` to ``out``.

    Returns
    -------
    The segmentation and its pixel-level agreement with the truth (see
    :func:`multimodal_seg.metrics.agreement`).
    """
    if size < 128:
        raise ParameterError(f"demo size {size} px is too small for a meaningful phantom",
                             fix="use --size 128 or more (512 is the default)", where="size")
    phantom = haadf_phantom((size, size), seed=seed)
    seg = segment(phantom.image, pixel_size=phantom.pixel_size, units=phantom.units, seed=seed,
                  out=out, progress=progress, **options)
    scores = agreement(seg.pixel_labels, phantom.truth)
    if out is not None:
        out = Path(out)
        fig = summary(phantom.image, seg.pixel_labels, seg.chip_labels, truth=phantom.truth,
                      pixel_size=phantom.pixel_size, units=phantom.units)
        save_figure(fig, out / "summary.png", dpi=120)
        write_text_atomic(out / "agreement.json", to_json({
            "phantom": {"shape": [size, size], "seed": seed, "regions": phantom.region_names,
                        "description": phantom.description},
            "pixel_agreement": scores,
        }))
    return seg, scores


def run_multimodal_demo(out: str | Path | None = "mmseg-demo", *, scan: int = 64, seed: int = 0,
                        progress: bool = True, phantom=None, **options) -> tuple[Segmentation, dict[str, dict]]:
    """Segment the multimodal phantom (HAADF + EELS + 4D-STEM) and score every partition.

    Returns
    -------
    The joint segmentation, and the agreement with the truth (on the scan grid) of the
    joint partition and of each modality's own partition.

    ``phantom``: an already rendered
    :class:`~multimodal_seg.synthetic.multimodal.MultimodalPhantom` to segment instead of
    rendering one (``scan`` is then ignored).
    """
    from .synthetic.multimodal import multimodal_phantom

    if phantom is None:
        phantom = multimodal_phantom((scan, scan), seed=seed)
    scan = phantom.truth.shape[0]
    seg = segment(phantom.modalities(), seed=seed, out=out, progress=progress, **options)
    scores = {name: agreement(labels, phantom.truth) for name, labels in seg.scan_labels.items()}
    if out is not None:
        # The usual summary plus the truth (on the scan grid, shown over the same field).
        fig = summary(seg.display_image(), seg.pixel_labels, seg.chip_labels, truth=phantom.truth,
                      pixel_size=seg.pixel_size, units=seg.units)
        save_figure(fig, Path(out) / "summary.png", dpi=120)
        write_text_atomic(Path(out) / "agreement.json", to_json({
            "phantom": {"scan": [scan, scan], "seed": seed, "regions": phantom.region_names},
            "scan_grid_agreement": scores,
        }))
    return seg, scores
