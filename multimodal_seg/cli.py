"""The ``mmseg`` command: segment, demo, bench, train, info."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import MMSegError

app = typer.Typer(
    help="Unsupervised segmentation of electron-microscopy data (chips -> CNN -> graph -> Leiden).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts contain [default: ...], not markup
)
console = Console(stderr=True)


def _fail(exc: Exception) -> None:
    console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code=2)


def _communities_table(seg) -> Table:
    table = Table(title=f"{seg.n_communities} communities (modularity {seg.modularity:.3f})")
    for column in ("community", "chips", "area %", "mean intensity", "crystallinity"):
        table.add_column(column, justify="right")
    for row in seg.communities:
        table.add_row(str(row.community), str(row.n_chips), f"{100 * row.area_fraction:.1f}",
                      f"{row.mean_intensity:.4g}", f"{row.crystallinity:.2f}")
    return table


def _sources(path: Path | None, modality: list[str] | None):
    """The single image, or ``{name: file}`` from repeated ``--modality NAME=FILE``."""
    from .errors import ParameterError

    if modality and path is not None:
        raise ParameterError("give either one image PATH or --modality options, not both",
                             fix="put the image in as --modality haadf=PATH", where="PATH")
    if not modality:
        if path is None:
            raise ParameterError("no input given", fix="give an image PATH or --modality NAME=FILE",
                                 where="PATH")
        return path
    sources = {}
    for item in modality:
        name, sep, file = item.partition("=")
        if not sep or not name or not file:
            raise ParameterError(f"--modality {item!r} is not NAME=FILE",
                                 fix="write e.g. --modality eels=si.dm4", where="--modality")
        sources[name] = Path(file)
    return sources


@app.command()
def segment(
    path: Optional[Path] = typer.Argument(None, help="Image file: dm3, dm4, emd, mrc, tif, hspy, png, jpg ..."),
    modality: Optional[list[str]] = typer.Option(
        None, "--modality", "-m",
        help="NAME=FILE, repeatable: several modalities of one specimen (e.g. haadf=a.dm4 "
             "eels=b.dm4 diffraction=c.mib); NAME:KIND=FILE states the kind."),
    fusion: Optional[str] = typer.Option(None, help="Several modalities: multiplex | concat [default: multiplex]."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder [default: ./<file stem>-mmseg]"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config; options below override it."),
    chip_size: Optional[str] = typer.Option(None, help="Chip edge: pixels (32) or length ('2 nm') [default: auto]."),
    stride: Optional[str] = typer.Option(None, help="Chip step: pixels or length [default: half the chip]."),
    refine: Optional[int] = typer.Option(
        None, help="Place boundaries every stride/N pixels by embedding the chips on them again; 1 = off [default: 1]."),
    encoder: Optional[str] = typer.Option(None, help="auto | fourier | resnet50 | image-cnn | a plugin's name [default: auto]."),
    weights: Optional[str] = typer.Option(
        None, help="micronet | micronet-v1.0 | imagenet-micronet | imagenet | random | FILE; a checkpoint "
                   "from `mmseg train` picks its encoder and goes to the modality of its kind."),
    download_weights: bool = typer.Option(False, "--download-weights", help="Allow downloading missing weights."),
    k: Optional[int] = typer.Option(None, help="Neighbours per chip in the graph [default: 15]."),
    resolution: Optional[float] = typer.Option(None, help="Leiden/Louvain resolution [default: 1.0]."),
    method: Optional[str] = typer.Option(None, help="leiden | louvain [default: leiden]."),
    merge: Optional[float] = typer.Option(
        None, help="Merge communities more connected than this (0-1; 0.5 is a good start) [default: off]."),
    consensus: Optional[int] = typer.Option(
        None, help="Keep the most representative of this many Leiden runs: steadier across seeds; 0 = one run [default: 30]."),
    seed: Optional[int] = typer.Option(None, help="Random seed [default: 0]."),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda | cuda:N | mps [default: auto]."),
    signal: Optional[str] = typer.Option(None, help="Which image of a multi-signal file (index or title)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or tables."),
) -> None:
    """Segment one image into communities of similar chips and write figures, CSV and labels."""
    from .pipeline.segment import segment as run_segment

    try:
        source = _sources(path, modality)
    except MMSegError as exc:
        _fail(exc)
    stem = path.stem if path is not None else "multimodal"
    out = out or Path(f"{stem}-mmseg")
    to_int = lambda v: int(v) if v is not None and v.strip().isdigit() else v  # noqa: E731
    try:
        seg = run_segment(
            source, out=out, fusion=fusion, config=config, chip_size=to_int(chip_size), stride=to_int(stride), refine=refine,
            encoder=encoder, weights=weights, allow_download=download_weights or None, k=k,
            resolution=resolution, method=method, merge=merge, consensus=consensus, seed=seed, device=device,
            signal=to_int(signal), progress=not quiet,
        )
    except MMSegError as exc:
        _fail(exc)
    if not quiet:
        Console().print(_communities_table(seg))
        console.print(f"encoder: {seg.provenance['encoder_choice']}")
    console.print(f"results written to {out}/")


@app.command()
def demo(
    out: Path = typer.Option(Path("mmseg-demo"), "--out", "-o", help="Output folder."),
    scan: int = typer.Option(64, help="Scan positions per side of the multimodal phantom."),
    seed: int = typer.Option(0, help="Phantom and segmentation seed."),
    image_only: bool = typer.Option(False, "--image-only",
                                    help="Segment the HAADF image phantom alone instead."),
    size: int = typer.Option(512, help="Image phantom edge length in pixels (with --image-only)."),
    refine: Optional[int] = typer.Option(
        None, help="Boundary refinement, as for segment: try 4 with --image-only, 2 otherwise [default: 1]."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or tables."),
) -> None:
    """Segment a built-in phantom specimen (two grains of one phase at different orientations, a
    second phase, an amorphous front) seen by HAADF, EELS and 4D-STEM, and score it."""
    from .demo import run_demo, run_multimodal_demo

    try:
        if image_only:
            seg, scores = run_demo(out, size=size, seed=seed, progress=not quiet, refine=refine)
        else:
            seg, all_scores = run_multimodal_demo(out, scan=scan, seed=seed, progress=not quiet,
                                                  refine=refine)
            for name, sc in all_scores.items():
                console.print(f"{name:>12}: adjusted Rand index {sc['ari']:.3f} with the truth "
                              f"({sc['n_pred']} communities)")
            scores = all_scores["joint"]
    except MMSegError as exc:
        _fail(exc)
    if not quiet:
        Console().print(_communities_table(seg))
    console.print(
        f"agreement with the phantom's truth: adjusted Rand index {scores['ari']:.3f}, "
        f"many-to-one accuracy {scores['many_to_one']:.3f}, mIoU {scores['miou']:.3f} "
        f"({scores['n_pred']} communities for {scores['n_truth']} true regions)"
    )
    console.print(f"encoder: {seg.provenance['encoder_choice']}")
    console.print(f"results written to {out}/ (see summary.png)")


@app.command()
def bench(
    data_dir: Path = typer.Argument(None, help="Data folder laid out like ../shared/data (labelled/, "
                                    "multimodal/); leave out for phantoms only."),
    out: Path = typer.Option(..., "--out", "-o", help="Report folder (report.md, results.json, figures)."),
    quick: bool = typer.Option(False, "--quick", help="Fewer images, seeds and sizes (minutes)."),
    parts: str = typer.Option("quality,stability,consistency,speed", help="Comma-separated parts to run."),
    methods: str = typer.Option(None, help="Comma-separated methods for the quality part (default: all)."),
    images: int = typer.Option(None, min=1, help="Images per labelled set, spread over it (default: all)."),
) -> None:
    """Benchmark the project against its peers on the same data: quality, stability,
    cross-modal consistency and speed, written as JSON and a Markdown report."""
    from .bench.runner import run_bench

    try:
        run_bench(data_dir, out, quick=quick, parts=[p.strip() for p in parts.split(",") if p.strip()],
                  method_names=[m.strip() for m in methods.split(",")] if methods else None, n_images=images,
                  echo=lambda msg: console.print(msg, highlight=False))
    except MMSegError as exc:
        _fail(exc)
    console.print(f"report written to {out}/report.md")


@app.command()
def train(
    data: list[Path] = typer.Argument(..., help="Files (any format the modality's reader takes) or studies "
                                      "(a study.zarr, or a run's output folder)."),
    modality: str = typer.Option(..., "--modality", "-m", help="image | spectrum | diffraction."),
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint file to write, e.g. encoder.ckpt."),
    config: Optional[Path] = typer.Option(None, "--config", "-c",
                                          help="Training YAML (configs/training/); options below override it."),
    encoder: Optional[str] = typer.Option(
        None, help="auto | image-cnn | resnet50 | spectrum-cnn | diffraction-cnn [default: auto: image-cnn, "
                   "or resnet50 from MicroNet where its weights are found]."),
    weights: Optional[str] = typer.Option(
        None, help="Initial weights: a known name (micronet ...), a state dict, or a checkpoint to train further."),
    epochs: Optional[int] = typer.Option(None, help="Most epochs (early stopping may end sooner) [default: 20]."),
    batch_size: Optional[int] = typer.Option(None, help="Pairs of views per batch [default: 256]."),
    items_per_epoch: Optional[int] = typer.Option(None, help="Chips (images) or spectra / patterns per epoch "
                                                  "[default: 4096]."),
    chip_size: Optional[str] = typer.Option(None, help="Chip edge, pixels or length [default: auto, as segment]."),
    seed: Optional[int] = typer.Option(None, help="Random seed [default: 0]."),
    accelerator: Optional[str] = typer.Option(None, help="Lightning accelerator: auto | cpu | gpu [default: auto]."),
    devices: Optional[str] = typer.Option(None, help="Lightning devices: auto, a count, or ids [default: auto]."),
    work_dir: Optional[Path] = typer.Option(None, "--work-dir",
                                            help="Lightning checkpoints and CSV logs [default: <out stem>-training]."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in the work folder from its last.ckpt."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train an encoder self-supervised (VICReg) on unlabelled data; use the checkpoint with --weights."""
    to_int = lambda v: int(v) if v is not None and v.strip().isdigit() else v  # noqa: E731
    try:
        from .training import train_encoder
    except ImportError as exc:
        _fail(exc)
    try:
        result = train_encoder(
            [str(p) for p in data], modality=modality, out=out, config=config, work_dir=work_dir,
            resume=resume, progress=not quiet, encoder=encoder, weights=weights, max_epochs=epochs,
            batch_size=batch_size, items_per_epoch=items_per_epoch, chip_size=to_int(chip_size), seed=seed,
            accelerator=accelerator, devices=to_int(devices))
    except MMSegError as exc:
        _fail(exc)
    record = result.info.training
    best = "" if record["best_loss"] is None else f", {record['monitored']} {record['best_loss']:.3f}"
    console.print(f"{result.info.encoder} trained on {len(data)} source(s) in {result.seconds:.0f} s, "
                  f"{len(result.history)} epochs (best: epoch {record['best_epoch']}{best})")
    console.print(f"checkpoint written to {result.checkpoint} (logs and Lightning checkpoints in "
                  f"{result.work_dir}/); use it with: mmseg segment ... --weights {result.checkpoint}")


@app.command()
def info() -> None:
    """Versions, compute device, and which encoder weights are found."""
    from .encoders.device import describe_device
    from .encoders import available_encoders, weights_dir
    from .encoders.weights import KNOWN_WEIGHTS, find_weights
    from .provenance import package_versions

    out = Console()
    table = Table(title="packages")
    table.add_column("package")
    table.add_column("version")
    for name, ver in package_versions().items():
        table.add_row(name, ver or "[red]missing[/]")
    out.print(table)
    dev = describe_device()
    out.print(f"device: {dev}")
    out.print(f"encoders: {', '.join(available_encoders())}")
    weights = Table(title=f"weights (looked for in {weights_dir()})")
    weights.add_column("name")
    weights.add_column("file")
    for name in KNOWN_WEIGHTS:
        found = find_weights(name)
        weights.add_row(name, str(found) if found else "[yellow]not found[/]")
    out.print(weights)


def main() -> None:  # pragma: no cover - console entry point wrapper
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
