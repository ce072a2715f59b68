"""The ``mmseg`` command: segment, batch, series, watch, demo, bench, train, info."""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .bench import PARTS
from .errors import MMSegError
from .graphs.labels import communities_phrase

app = typer.Typer(
    help="Unsupervised segmentation of electron-microscopy data (chips -> CNN -> graph -> Leiden).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts contain [default: ...], not markup
)
# Messages carry paths and fixes such as "[path, {reader options}]": never read as markup
console = Console(stderr=True, markup=False, highlight=False)


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        print(f"multimodal_seg {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit (`mmseg info`: every package's)."),
) -> None:
    """Options of ``mmseg`` itself (its help text is the app's)."""
    import warnings

    import rsciio  # noqa: F401  (sets up the logger whose handler is replaced here)

    warnings.showwarning = _show_warning
    # RosettaSciIO logs what its readers notice to stdout in ANSI colours, with its source
    # line; shown here like the run's own warnings
    logging.getLogger("rsciio").handlers[:] = [_ReaderNotes()]


class _ReaderNotes(logging.Handler):
    """RosettaSciIO's log records as ``RosettaSciIO: ...`` lines on the console (stderr)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        console.print(f"RosettaSciIO: {record.getMessage()}", soft_wrap=True)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as a user reads it: ``warning: ...`` (no source file and line of the code),
    on a line of its own: a progress bar drawn on the terminal is cleared first and drawn
    again below it."""
    from tqdm.auto import tqdm

    with tqdm.external_write_mode(file=sys.stderr):
        console.print(f"[yellow]warning:[/] {escape(str(message))}", markup=True, soft_wrap=True)


def _number(value: str | None) -> int | str | None:
    """A command-line value as an int where it is a whole number (``"32"``), else as given
    (``"2 nm"``, ``"auto"``, a signal's title)."""
    return int(value) if value is not None and value.strip().isdigit() else value


def _fail(exc: Exception) -> None:
    console.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, soft_wrap=True)
    raise typer.Exit(code=2)


def _interrupted(out: Path) -> None:
    """Ctrl-C: say what is kept and how to go on, exit 130 (the shell's code for SIGINT)."""
    import warnings

    # zarr's asynchronous writes cut short are reported as never-awaited coroutines when the
    # interpreter exits: nothing a user can act on, and nothing is lost (unfinished arrays
    # are never marked current, so they are computed again on resuming)
    warnings.filterwarnings("ignore", message="coroutine .* was never awaited", category=RuntimeWarning)
    console.print(f"interrupted: finished steps are kept in {out}/; run the same command again to resume")
    raise typer.Exit(code=130)


def _communities_table(seg) -> Table:
    table = Table(title=f"{communities_phrase(seg.n_communities)} (modularity {seg.modularity:.3f})")
    for column in ("community", "chips", "area %", "mean intensity", "crystallinity"):
        table.add_column(column, justify="right")
    for row in seg.communities:
        # crystallinity is an image's (lattice peaks in its windows): none without an image
        crystallinity = f"{row.crystallinity:.2f}" if math.isfinite(row.crystallinity) else "-"
        table.add_row(str(row.community), str(row.n_chips), f"{100 * row.area_fraction:.1f}",
                      f"{row.mean_intensity:.4g}", crystallinity)
    table.caption = _decision_line(seg)
    return table


def _decision_line(seg) -> str | None:
    """How the painted partition's number of communities was decided, with the decision's
    margin, and what the consensus's runs found: ``None`` where neither applies."""
    from .graphs.communities import describe_runs
    from .graphs.decide import describe_decision
    from .provenance import painted_partition

    record = painted_partition(seg.provenance)
    lines = [describe_decision(record["decision"]) if record.get("decision") else None,
             describe_runs(seg.n_communities, record.get("run_counts"), bool(record.get("close_call")))]
    return "; ".join(line for line in lines if line) or None


def _sources(path: Path | None, modality: list[str] | None, read: list[str] | None = None,
             signal: str | None = None):
    """What ``segment()`` reads: the single image, or ``{name: file}`` from repeated
    ``--modality NAME=FILE``; with ``(file, {reader options})`` where ``--read`` (and, for the
    single image, ``--signal``) gives some."""
    from .errors import ParameterError
    from .pipeline.segment import SINGLE_IMAGE

    if modality and path is not None:
        raise ParameterError("give either one image PATH or --modality options, not both",
                             fix="put the image in as --modality haadf=PATH", where="PATH")
    if not modality:
        if path is None:
            raise ParameterError("no input given", fix="give an image PATH or --modality NAME=FILE",
                                 where="PATH")
        options = _reader_options(read, [SINGLE_IMAGE]).get(SINGLE_IMAGE, {})
        if signal is not None:
            options["signal"] = _number(signal)
        return {SINGLE_IMAGE: (path, options)} if options else path
    if signal is not None:
        raise ParameterError("--signal picks the signal of one image PATH; with --modality each file takes "
                             "its own", fix="write --read NAME.signal=VALUE (index or title), e.g. "
                             "--read eds.signal=3", where="--signal")
    sources = {}
    for item in modality:
        name, sep, file = item.partition("=")
        if not sep or not name or not file:
            raise ParameterError(f"--modality {item!r} is not NAME=FILE",
                                 fix="write e.g. --modality eels=si.dm4", where="--modality")
        sources[name] = Path(file)
    labels = {label.split(":", 1)[0]: label for label in sources}
    for name, options in _reader_options(read, list(labels)).items():
        sources[labels[name]] = (sources[labels[name]], options)
    return sources


def _reader_options(read: list[str] | None, names: list[str]) -> dict[str, dict]:
    """``{modality: {option: value}}`` from repeated ``--read NAME.OPTION=VALUE`` (with one
    modality, ``OPTION=VALUE`` will do); values are read as YAML (``3``, ``0.5``, ``[1.2, 9]``,
    ``HAADF``)."""
    import yaml

    from .errors import ParameterError

    options: dict[str, dict] = {}
    for item in read or []:
        key, sep, text = item.partition("=")
        name, _, option = key.rpartition(".")
        name = name or (names[0] if len(names) == 1 else "")
        if not sep or not option or name not in names:
            raise ParameterError(
                f"--read {item!r} is not NAME.OPTION=VALUE for a modality of this run ({', '.join(names)})",
                fix=f"write e.g. --read {names[0]}.signal=3 or --read {names[0]}.bin_scan=2 (the readers' "
                    "options: docs/user-guide.md, 'Several modalities of one specimen')", where="--read")
        try:
            options.setdefault(name, {})[option] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ParameterError(f"--read {item!r}: the value is not readable ({exc.problem})",
                                 fix="quote a title with spaces, write lists as [1.2, 9]", where="--read") from None
    return options


@app.command()
def segment(
    path: Optional[Path] = typer.Argument(
        None, help="Image file: dm3, dm4, emd, mrc, tif, hspy, png, jpg, bcf, elid ... (spectrum images and "
                   "4D-STEM: --modality)"),
    modality: Optional[list[str]] = typer.Option(
        None, "--modality", "-m",
        help="NAME=FILE, repeatable: several modalities of one specimen (e.g. haadf=a.dm4 "
             "eels=b.dm4 diffraction=c.mib); NAME:KIND=FILE states the kind."),
    fusion: Optional[str] = typer.Option(None, help="Several modalities: concat | multiplex [default: concat]."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder [default: ./<file stem>-mmseg]"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config; options below override it."),
    chip_size: Optional[str] = typer.Option(None, help="Chip edge: pixels (32) or length ('2 nm') [default: auto]."),
    stride: Optional[str] = typer.Option(None, help="Chip step: pixels or length [default: half the chip]."),
    refine: Optional[str] = typer.Option(
        None, help="Place boundaries every stride/N pixels by embedding the chips on them again: auto (2 where "
                   "the stride allows and the encoders are lightweight, e.g. fourier), 1 = off, 2, 4 ... "
                   "[default: auto]."),
    place_positions: Optional[bool] = typer.Option(
        None, "--place-positions/--no-place-positions",
        help="Let each scan position near a boundary of a spectrum image or 4D-STEM scan weigh its own signal "
             "against the painted map [default: on]."),
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
        None, help="Keep the most representative of this many Leiden runs (fewer once most agree, four times as many where they split on the number of communities): steadier across seeds; 0 = one run [default: 30]."),
    decide: Optional[str] = typer.Option(
        None, help="dip: merge neighbouring communities whose chips are one population (dip test); none: keep Leiden's [default: dip]."),
    alpha: Optional[float] = typer.Option(None, help="Significance level of that test [default: 0.01]."),
    seed: Optional[int] = typer.Option(None, help="Random seed [default: 0]."),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda | cuda:N | mps [default: auto]."),
    signal: Optional[str] = typer.Option(None, help="Which image of a multi-signal file PATH (index or title); "
                                         "with --modality: --read NAME.signal=..."),
    read: Optional[list[str]] = typer.Option(
        None, "--read", "-r",
        help="NAME.OPTION=VALUE, repeatable: an option of a modality's reader, e.g. eds.signal=3, "
             "eds.bin_channels=32, eds.bin_scan=4, haadf.pixel_size=0.5 (OPTION=VALUE for one PATH)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or tables."),
) -> None:
    """Segment one specimen (an image PATH, or modalities of any kind with --modality) into
    communities of similar chips and write figures, CSV, labels and a report."""
    from .pipeline.segment import segment as run_segment

    try:
        source = _sources(path, modality, read, signal)
    except MMSegError as exc:
        _fail(exc)
    stem = path.stem if path is not None else "multimodal"
    out = out or Path(f"{stem}-mmseg")
    try:
        seg = run_segment(
            source, out=out, fusion=fusion, config=config, chip_size=_number(chip_size), stride=_number(stride),
            refine=_number(refine), place_positions=place_positions,
            encoder=encoder, weights=weights, allow_download=download_weights or None, k=k,
            resolution=resolution, method=method, merge=merge, consensus=consensus, decide=decide, alpha=alpha, seed=seed,
            device=device, progress=not quiet,
        )
    except MMSegError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        _interrupted(out)
    if not quiet:
        Console().print(_communities_table(seg))
        console.print(f"encoder: {seg.provenance['encoder_choice']}")
        console.print(_time_spent(seg.provenance["seconds"]))
    console.print(f"results written to {out}/")


def _time_spent(seconds: dict[str, float], *, most: int = 3) -> str:
    """One line: a run's wall time and the steps that took most of it."""
    slowest = sorted(seconds.items(), key=lambda item: -item[1])[:most]
    return (f"time: {sum(seconds.values()):.1f} s, most in "
            + ", ".join(f"{name} {value:.1f} s" for name, value in slowest) + " (provenance.json: seconds)")


@app.command()
def batch(
    inputs: list[Path] = typer.Argument(..., help="Image files, folders of images, or .csv/.yaml lists of "
                                        "multimodal specimens (one per row: NAME,modality=FILE,...)."),
    out: Path = typer.Option(..., "--out", "-o", help="Batch folder: one folder per specimen, summary.csv, logs/."),
    config: Optional[Path] = typer.Option(None, "--config", "-c",
                                          help="YAML config for every specimen; its compute section picks the "
                                               "scheduler (threads, processes, address, slurm, pbs)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or table."),
) -> None:
    """Segment many specimens, one study each under OUT/<name>/; run it again to resume.

    Finished specimens are skipped, interrupted ones continue from their last finished
    stage, and a failed one does not stop the others: see summary.csv. Exits with
    status 1 if any specimen failed."""
    from .batch import run_batch
    from .batch.summary import summary_table

    try:
        result = run_batch(inputs, out=out, config=config, progress=not quiet)
    except MMSegError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        _interrupted(out)
    if result.skipped_files:
        console.print(f"left out (not images): {', '.join(p.name for p in result.skipped_files)}")
    if not quiet:
        Console().print(summary_table(result.records))
    console.print(f"summary written to {result.out / 'summary.csv'}")
    if not result.ok:
        raise typer.Exit(code=1)


@app.command()
def demo(
    out: Path = typer.Option(Path("mmseg-demo"), "--out", "-o", help="Output folder."),
    scan: int = typer.Option(64, help="Scan positions per side of the multimodal phantom."),
    seed: int = typer.Option(0, help="Phantom and segmentation seed."),
    image_only: bool = typer.Option(False, "--image-only",
                                    help="Segment the HAADF image phantom alone instead."),
    size: int = typer.Option(512, help="Image phantom edge length in pixels (with --image-only)."),
    refine: Optional[str] = typer.Option(
        None, help="Boundary refinement, as for segment: auto (2 with lightweight encoders), 1 = off, 4 ... "
                   "[default: auto]."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or tables."),
) -> None:
    """Segment a built-in phantom specimen (two grains of one phase at different orientations, a
    second phase, an amorphous front) seen by HAADF, EELS and 4D-STEM, and score it."""
    from .demo import run_demo, run_multimodal_demo

    try:
        if image_only:
            seg, scores = run_demo(out, size=size, seed=seed, progress=not quiet, refine=_number(refine))
        else:
            seg, all_scores = run_multimodal_demo(out, scan=scan, seed=seed, progress=not quiet,
                                                  refine=_number(refine))
            for name, sc in all_scores.items():
                console.print(f"{name:>12}: adjusted Rand index {sc['ari']:.3f} with the truth "
                              f"({communities_phrase(sc['n_pred'])})")
            scores = all_scores["joint"]
    except MMSegError as exc:
        _fail(exc)
    if not quiet:
        Console().print(_communities_table(seg))
    console.print(
        f"agreement with the phantom's truth: adjusted Rand index {scores['ari']:.3f}, "
        f"many-to-one accuracy {scores['many_to_one']:.3f}, mIoU {scores['miou']:.3f} "
        f"({communities_phrase(scores['n_pred'])} for {scores['n_truth']} true regions)"
    )
    console.print(f"encoder: {seg.provenance['encoder_choice']}")
    console.print(f"results written to {out}/ (see summary.png)")


#: Segmentation options of the series commands: (type, help); unset ones keep the defaults.
_FRAME_OPTIONS = {
    "chip_size": (str, "Chip edge: pixels or length ('2 nm') [default: auto, from the first frame]."),
    "stride": (str, "Chip step: pixels or length [default: half the chip]."),
    "encoder": (str, "auto | fourier | resnet50 | a plugin's name [default: auto]."),
    "weights": (str, "Encoder weights (resnet50): micronet | FILE ..."),
    "k": (int, "Neighbours per chip in the graph [default: 15]."),
    "resolution": (float, "Leiden resolution [default: 1.0]."),
    "consensus": (int, "Leiden runs whose most representative is kept [default: 30]."),
    "decide": (str, "dip: merge communities whose chips are one population; none: keep Leiden's [default: dip]."),
    "seed": (int, "Random seed [default: 0]."),
    "device": (str, "auto | cpu | cuda ... (torch encoders) [default: auto]."),
    "max_points": (int, "Points of interest kept per frame [default: 10]."),
}


def _with_frame_options(command):
    """Give a command (which takes ``**options``) the options of :data:`_FRAME_OPTIONS` too.

    typer reads a command's options from its signature, so the shared ones are added to
    it here once, rather than written out in every command.
    """
    import inspect

    signature = inspect.signature(command)
    own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    shared = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[kind],
                                default=typer.Option(None, help=text)) for name, (kind, text) in _FRAME_OPTIONS.items()]
    command.__signature__ = signature.replace(parameters=own + shared)
    return command


def _frame_options(options: dict) -> dict:
    """The shared options as ``segment_series`` / ``watch`` keywords (lengths in pixels become ints)."""
    return {**options, "chip_size": _number(options["chip_size"]), "stride": _number(options["stride"])}


@app.command()
@_with_frame_options
def series(
    frames: list[Path] = typer.Argument(..., help="Frame files (in this order), a folder of frames, or a stack in "
                                                  "one file (HyperSpy, TIFF, MRC ... with a time or dose axis)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config; options below override it."),
    signal: Optional[str] = typer.Option(None, help="Which signal of files holding several (index or title)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or table."),
    **options,
) -> None:
    """Segment a dose or time series with one set of communities: an id means the same material
    in every frame. Writes fractions.csv, poi.csv/json, overlays/, descriptors.png, labels.npz."""
    from .series import segment_series

    try:
        result = segment_series(
            [str(f) for f in frames] if len(frames) > 1 else str(frames[0]), out=out, config=config,
            signal=_number(signal), progress=not quiet,
            **_frame_options(options))
    except MMSegError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        _interrupted(out)
    if not quiet:
        table = Table(title=f"{len(result.reports)} frames, {communities_phrase(result.n_communities)}")
        for column in ("frame", result.axis.label, "communities", "disordered area %", "first point of interest"):
            table.add_column(column, justify="right")
        for report, damaged in zip(result.reports, result.disordered_fraction()):
            first = report.points[0] if report.points else None
            table.add_row(str(report.index), f"{report.value:g}", str(len(set(report.chip_labels.ravel()))),
                          f"{100 * damaged:.1f}",
                          f"{first.kind} at ({first.y:.4g}, {first.x:.4g}) {first.units}" if first else "-")
        Console().print(table)
    console.print(f"results written to {out}/")


@app.command()
@_with_frame_options
def watch(
    folder: Path = typer.Argument(..., help="Folder the microscope writes frames into."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (resumed if it holds a live state)."),
    poll: float = typer.Option(0.5, help="Seconds between looks at the folder."),
    grace: Optional[float] = typer.Option(None, help="Seconds an unreadable, unchanged file is retried before it "
                                                     "is skipped [default: max(2, 4 x poll)]."),
    max_frames: Optional[int] = typer.Option(None, help="Stop after this many new frames."),
    idle_timeout: Optional[float] = typer.Option(None, help="Stop after this many seconds without a new frame."),
    window: Optional[int] = typer.Option(None, help="Frames whose chips stay in the live graph [default: 8]."),
    reoptimise_every: Optional[int] = typer.Option(None, help="Frames between re-optimisations; 0 never [default: 10]."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config; options below override it."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No line per frame."),
    **options,
) -> None:
    """Segment frames as the microscope writes them: stable community ids, a live overlay (live.png),
    a growing fractions.csv and points of interest. Ctrl-C stops; run again to resume."""
    import logging

    from .series import watch as run_watch

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")

    def report(frame) -> None:
        if not quiet:
            first = frame.points[0] if frame.points else None
            where = f"; look at ({first.y:.4g}, {first.x:.4g}) {first.units}: {first.kind}" if first else ""
            found = communities_phrase(len(set(frame.chip_labels.ravel())))
            console.print(f"frame {frame.index} ({frame.label}): {found}"
                          f"{', new ' + str(frame.new_communities) if frame.index and frame.new_communities else ''}"
                          f"{where} [{frame.seconds['to_overlay']:.2f} s]", highlight=False)

    try:
        live = run_watch(folder, out, poll=poll, grace=grace, max_frames=max_frames, idle_timeout=idle_timeout,
                         config=config, window=window, reoptimise_every=reoptimise_every, on_frame=report,
                         **_frame_options(options))
    except MMSegError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        _interrupted(out)
    console.print(f"{live.n_frames} frames in {out}/ ({len(live.skipped)} skipped)")


@app.command()
def bench(
    data_dir: Path = typer.Argument(None, help="Data folder laid out like ../shared/data (labelled/, "
                                    "multimodal/); leave out for phantoms only."),
    out: Path = typer.Option(..., "--out", "-o", help="Report folder (report.md, results.json, figures)."),
    quick: bool = typer.Option(False, "--quick", help="Fewer images, seeds and sizes (still not quick: over 8 minutes on 2 cores for four of its parts; choose parts with --parts)."),
    parts: str = typer.Option(",".join(PARTS), help="Comma-separated parts to run."),
    methods: str = typer.Option(None, help="Comma-separated methods for the quality part (default: all)."),
    images: int = typer.Option(None, min=1, help="Images per labelled set, spread over it (default: all)."),
    families: str = typer.Option(None, help="Comma-separated phantom families for the families part "
                                 "(default: all)."),
    draws: int = typer.Option(None, help="Draws per phantom family: half (at most 10) from the tuning "
                              "seeds 0-9, the rest held out from seed 10 (default 30; 2 with --quick)."),
    fresh: int = typer.Option(None, help="More draws per phantom family, from seeds drawn at random for this "
                              "run: specimens no one has seen, reported apart (default 10; 0 with --quick)."),
    fresh_entropy: int = typer.Option(None, help="Draw the fresh seeds of an earlier run again (its "
                                      "fresh_entropy in results.json)."),
    no_peers: bool = typer.Option(False, "--no-peers", help="Score the project alone on the family draws "
                                  "(no GraphEM, HyperSpy or Felzenszwalb): about a second a draw instead of "
                                  "tens, for many fresh draws."),
    stability_images: int = typer.Option(None, min=1, help="Labelled images per set in the stability part, "
                                         "the first of those read (default 3; 1 with --quick)."),
) -> None:
    """Benchmark the project against its peers on the same data: quality, stability,
    cross-modal consistency, speed, phantom families and chip scale, written as JSON and
    a Markdown report."""
    from .bench.runner import run_bench

    def listed(text: str | None) -> list[str] | None:
        return [t.strip() for t in text.split(",") if t.strip()] if text else None

    try:
        run_bench(data_dir, out, quick=quick, parts=listed(parts), method_names=listed(methods), n_images=images,
                  family_names=listed(families), draws=draws, fresh=fresh, fresh_entropy=fresh_entropy,
                  family_peers=not no_peers,
                  stability_images=stability_images,
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
    try:
        from .training import train_encoder
    except ImportError as exc:
        _fail(exc)
    try:
        result = train_encoder(
            [str(p) for p in data], modality=modality, out=out, config=config, work_dir=work_dir,
            resume=resume, progress=not quiet, encoder=encoder, weights=weights, max_epochs=epochs,
            batch_size=batch_size, items_per_epoch=items_per_epoch, chip_size=_number(chip_size), seed=seed,
            accelerator=accelerator, devices=_number(devices))
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
