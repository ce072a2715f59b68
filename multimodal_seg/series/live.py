"""Live segmentation: frames as they arrive, ids that last, a state to resume from.

:class:`LiveSeries` takes frames one at a time (:meth:`LiveSeries.add`, from a
microscope's callback, or :meth:`LiveSeries.feed` from an iterator); :func:`watch`
feeds it the files that appear in a folder.  For each frame:

1. it is checked against the series (size, calibration; a bad or unreadable frame is
   skipped with a logged error and the stream goes on) and embedded on the series'
   grid (:class:`multimodal_seg.series.model.FrameEmbedder`);
2. its features are projected with the reducer fitted on the first frame, and each of
   its chips is joined to its ``k`` nearest chips among the *window* (the last
   ``window`` frames, this one included);
3. its chips join the partition with every earlier membership fixed
   (:func:`multimodal_seg.series.identities.join`): they take existing ids or found new
   communities with new ids (never reused) and colours; every ``reoptimise_every``
   frames the window's partition is optimised again from its current membership, all
   chips free, ids kept by overlap (:func:`multimodal_seg.series.identities.reoptimise`);
4. its descriptors and points of interest are computed, its overlay written
   (``overlays/frame_N.png`` and ``live.png``, both replaced atomically), the state
   committed, and ``fractions.csv`` and ``poi.*`` rewritten with the new rows.

The first frame is partitioned on its own with the pipeline's community options
(consensus included).  Frames already reported keep the labels they were reported
with; a re-optimisation changes the window's memberships from then on.  Chips of frames
older than the window leave the graph, so time and memory per frame do not grow with
the series (``mmseg series`` over the same frames gives the one-graph answer).

State (``out/state/``): one ``frames/NNNNN.npz`` per frame (features, statistics, the
graph edges it added, its labels, the window's membership after it, its report) and
``state.json``, the commit point, rewritten atomically after each frame.  A new
LiveSeries on the same folder with the same options resumes from it without
reprocessing a frame; other options are refused.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..errors import InputError, OutputError, ParameterError
from ..graphs import knn
from ..graphs.communities import partition_graph
from ..plot import save_figure
from ..provenance import atomic_path, file_identity, fingerprint, run_record, to_json, write_text_atomic
from .frames import Frame, SeriesAxis, frame_files, read_file_frames, read_frames
from .identities import confidence, join, reoptimise, settle_new
from .model import FrameEmbedder, FrameReport, describe_frame, measure_frame, output_folder, series_config
from .outputs import descriptor_figure, overlay, save_png, write_tables
from .poi import PointOfInterest

log = logging.getLogger("multimodal_seg.series")

#: Layout version of ``state/``; another version is refused.
STATE_VERSION = 1
#: The descriptor figure (matplotlib, ~0.4 s of CPU) is redrawn every this many frames and at the
#: end; the watcher waits for a poll that brings no frame, so that no frame waits for the figure.
PLOT_EVERY = 10


def _version(identity: dict[str, Any] | None) -> tuple | None:
    """A file version's key: resolved path, size, modification time."""
    return None if not identity else (identity.get("path"), identity.get("size"), identity.get("mtime_ns"))


def _report_meta(report: FrameReport) -> dict[str, Any]:
    return {"index": report.index, "label": report.label, "value": report.value, "rows": report.rows,
            "points": [p.to_dict() for p in report.points], "new_communities": report.new_communities,
            "seconds": report.seconds}


def _report_from(meta: dict[str, Any], chip_labels: np.ndarray) -> FrameReport:
    return FrameReport(index=meta["index"], label=meta["label"], value=meta["value"], chip_labels=chip_labels,
                       pixel_labels=None, rows=meta["rows"], points=[PointOfInterest(**p) for p in meta["points"]],
                       new_communities=meta["new_communities"], seconds=meta["seconds"])


class LiveSeries:
    """A series segmented frame by frame as the frames arrive; resumable.

    Parameters
    ----------
    out
        Output folder: ``fractions.csv``, ``poi.csv``, ``poi.json``, ``live.png``,
        ``overlays/``, ``descriptors.png``, ``skipped.json``, ``provenance.json`` and
        ``state/``.  A folder holding a state is resumed.
    config
        A YAML file, dict or :class:`multimodal_seg.config.SegmentConfig`.
    window
        Frames whose chips stay in the graph (default 8).
    reoptimise_every
        Frames between re-optimisations of the window's partition (default 10; 0 never).
    max_points
        Points of interest per frame (default 10).
    signal
        Which signal of files holding several.
    on_frame
        Called with each frame's :class:`multimodal_seg.series.model.FrameReport` once
        its files are written.
    options
        :func:`multimodal_seg.segment` keywords (``chip_size``, ``encoder``, ``k``,
        ``resolution``, ``consensus``, ``seed`` ...).

    Raises
    ------
    ParameterError
        Bad options, options that differ from those of the state being resumed, or
        community options the live update cannot honour.
    OutputError
        ``out`` is a file, or its state is damaged or of another layout version.
    """

    def __init__(self, out: str | Path, *, config: Any = None, window: int | None = None,
                 reoptimise_every: int | None = None, max_points: int | None = None,
                 signal: int | str | None = None, on_frame: Callable[[FrameReport], Any] | None = None,
                 **options: Any) -> None:
        self.config = series_config(config, live=True, window=window, reoptimise_every=reoptimise_every,
                                    max_points=max_points, **options)
        self.out = output_folder(out)
        self.signal, self.on_frame = signal, on_frame
        self.reports: list[FrameReport] = []
        self.skipped: list[dict[str, Any]] = []
        self._processed: list[dict[str, Any]] = []  # per frame: label, identity, file
        self._embedder: FrameEmbedder | None = None
        self._axis: SeriesAxis | None = None
        self._reducer: knn.FeatureReducer | None = None
        self._window: list[int] = []  # frame indices whose chips are in the graph
        self._features: dict[int, np.ndarray] = {}
        self._graph: sp.csr_matrix | None = None
        self._labels = np.zeros(0, dtype=np.int64)  # membership of the window's chips
        self._next_id = 0
        self._seen: set[int] = set()
        self._unplotted = 0  # frames since descriptors.png was drawn
        self.plot_when_idle = False  # set by watch(): draw the figure between frames, not after one
        self._files_seen: set[tuple] = set()  # file versions processed or skipped
        (self.out / "state" / "frames").mkdir(parents=True, exist_ok=True)
        (self.out / "overlays").mkdir(exist_ok=True)
        if (self.out / "state" / "state.json").exists():
            self._resume()

    # ------------------------------------------------------------------ public

    @property
    def n_frames(self) -> int:
        """Frames processed so far (resumed ones included)."""
        return len(self.reports)

    @property
    def axis(self) -> SeriesAxis | None:
        """Where the frames sit (set by the first frame)."""
        return self._axis

    def has_seen(self, identity: dict[str, Any]) -> bool:
        """Whether this version of a file (:func:`multimodal_seg.provenance.file_identity`) was
        already processed or skipped."""
        return _version(identity) in self._files_seen

    def add(self, source: Any, *, acquired: datetime | None = None) -> list[FrameReport]:
        """Segment one more frame (a file, which may hold a stack, a 2-D array, or a Frame).

        A frame that cannot be read, or that has another size or calibration than the
        series, is skipped: the error is logged and kept in ``skipped`` (and
        ``skipped.json``), and the series goes on.

        Parameters
        ----------
        acquired
            Acquisition time of an array frame (files carry their own).

        Returns
        -------
        The reports of the frames added (none if it was skipped).
        """
        label = str(source) if isinstance(source, (str, Path)) else None
        try:
            if isinstance(source, Frame):
                frames = [source]
            elif isinstance(source, (str, Path)):
                frames = read_file_frames(source, signal=self.signal)
            else:
                frames = read_frames(np.asarray(source)[None] if np.ndim(source) == 2 else source)
                for i, frame in enumerate(frames):
                    frame.label = f"<array {self.n_frames + i}>"
                    frame.acquired = acquired
        except InputError as exc:
            identity = file_identity(Path(source)) if label and Path(source).is_file() else None
            self.skip(label or "<array>", identity, exc)
            return []
        reports = []
        for frame in frames:
            report = self._process(frame)
            if report is not None:
                reports.append(report)
        return reports

    def feed(self, frames: Iterable[Any]) -> list[FrameReport]:
        """:meth:`add` every frame of an iterable (files, arrays, Frames), in order."""
        reports = []
        for source in frames:
            reports += self.add(source)
        return reports

    def skip(self, label: str, identity: dict[str, Any] | None, error: Exception) -> None:
        """Record a frame that cannot be used (logged at ERROR level, written to ``skipped.json``)."""
        log.error("skipped frame %s: %s", label, error)
        self._files_seen.add(_version(identity))
        self.skipped.append({"label": label, "identity": identity, "reason": str(error),
                             "when": datetime.now().isoformat(timespec="seconds")})
        write_text_atomic(self.out / "skipped.json", to_json(self.skipped))
        if self._embedder is not None:
            self._commit()

    def close(self) -> None:
        """Draw ``descriptors.png`` for every frame so far (also done every ``PLOT_EVERY`` frames)."""
        if self.reports and self._unplotted:
            save_figure(descriptor_figure(self.reports, self._axis), self.out / "descriptors.png", dpi=110)
            self._unplotted = 0

    def __enter__(self) -> "LiveSeries":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ one frame

    def _process(self, frame: Frame) -> FrameReport | None:
        start, cpu_start = time.perf_counter(), time.process_time()
        cfg = self.config
        index = self.n_frames
        if self._embedder is None:
            self._embedder = FrameEmbedder.build(cfg, frame)
            self._axis = SeriesAxis.of(frame)
        try:
            pixels = frame.pixels()
            embeddings, stats = self._embedder.embed(frame, pixels)
        except InputError as exc:
            if index == 0:
                self._embedder = self._axis = None
            self.skip(frame.label, frame.identity, exc)
            return None
        embedded = time.perf_counter()
        n_chips = self._embedder.grid.n_chips
        if index == 0:
            self._reducer = knn.FeatureReducer(n_pcs=cfg.graph.n_pcs, seed=cfg.seed,
                                               standardise=self._embedder.encoder.standardise)
            features = self._reducer.fit_transform(embeddings)
            graph = knn.knn_graph(features, k=cfg.graph.k, seed=cfg.seed)
            # No seams dissolved here: a phase that is still a thin band in the first frame
            # (a damage front just starting) has no interior chip yet, and the first frame's
            # communities are the ids of the whole run (dissolving them: ids kept 0.998 -> 0.991,
            # front found first 1.00 -> 0.96 of frames on the damage series).
            labels = partition_graph(graph, **cfg.communities.model_dump(), seed=cfg.seed,
                                     features={"frame": features}).labels.astype(np.int64)
            edges = sp.triu(graph, k=1).tocoo()
            edges = (edges.row, edges.col, edges.data)
        else:
            features = self._reducer.transform(embeddings)
            graph, edges = self._grow(features, index)
            free = np.r_[np.zeros(self._labels.size, bool), np.ones(n_chips, bool)]
            labels = join(graph, np.r_[self._labels, np.full(n_chips, -1)], free, next_id=self._next_id,
                          resolution=cfg.communities.resolution, seed=cfg.seed + index,
                          n_iterations=cfg.communities.n_iterations)
            if cfg.communities.decide == "dip":  # new communities the data cannot tell from old ones
                window = np.vstack([self._features[f] for f in self._window] + [features])
                labels = settle_new(window, labels, graph, known=self._next_id, alpha=cfg.communities.alpha)
            if cfg.reoptimise_every and index % cfg.reoptimise_every == 0:
                labels = reoptimise(graph, labels, next_id=max(self._next_id, int(labels.max()) + 1),
                                    resolution=cfg.communities.resolution, seed=cfg.seed + index,
                                    n_iterations=cfg.communities.n_iterations)
        partitioned = time.perf_counter()
        self._graph, self._labels = graph, labels
        self._window.append(index)
        self._features[index] = features
        self._next_id = max(self._next_id, int(labels.max()) + 1)
        own = np.arange(labels.size - n_chips, labels.size)
        sure = confidence(graph, labels, own)
        self._slide()
        previous = self.reports[-1].chip_labels.ravel() if self.reports else None
        report = describe_frame(self._embedder, frame, index=index, value=self._axis.value(frame, index),
                                labels=labels[own], confidence=sure, previous=previous, seen=self._seen, config=cfg)
        image = overlay(pixels, report, intensity=self._embedder.intensity)
        path = self.out / "overlays" / f"frame_{index:05d}.png"
        save_png(image, path)
        with atomic_path(self.out / "live.png") as tmp:
            shutil.copyfile(path, tmp)
        shown, cpu_shown = time.perf_counter(), time.process_time()
        self._seen |= set(np.unique(labels[own]).tolist())
        measure_frame(report, self._embedder, pixels, stats, n_known=self._next_id, seed=cfg.seed)
        report.seconds.update({"embed": embedded - start, "partition": partitioned - embedded,
                               "overlay": shown - partitioned - report.seconds["describe"],
                               "to_overlay": shown - start, "cpu_to_overlay": cpu_shown - cpu_start})
        report.pixel_labels = None
        self.reports.append(report)
        self._save_frame(index, frame, features, stats, edges, embeddings if index == 0 else None, report)
        self._commit()
        write_tables(self.out, self.reports, self._axis)
        self._unplotted += 1
        if self._unplotted >= PLOT_EVERY and not self.plot_when_idle:
            self.close()
        log.info("frame %d (%s): %d communities, %.2f s to the overlay", index, frame.label,
                 len(np.unique(labels[own])), report.seconds["to_overlay"])
        if self.on_frame is not None:
            self.on_frame(report)
        return report

    def _grow(self, features: np.ndarray, index: int) -> tuple[sp.csr_matrix, tuple]:
        """The window's graph with the new frame's chips joined to their ``k`` nearest chips.

        Returns the grown graph and the new edges ``(i, j, weight)`` in series-wide chip
        numbers (``frame * n_chips + chip``), ``i > j``.
        """
        k = self.config.graph.k
        n_old = self._labels.size
        reference = np.vstack([self._features[f] for f in self._window] + [features])
        distance, neighbour = knn.cosine_neighbours(reference, features, min(k + 1, len(reference)))
        rows = np.repeat(n_old + np.arange(len(features)), neighbour.shape[1])
        cols, weights = neighbour.ravel(), np.clip(1.0 - distance.ravel(), knn.MIN_WEIGHT, 1.0)
        keep = cols != rows
        n = n_old + len(features)
        new = sp.csr_matrix((weights[keep], (rows[keep], cols[keep])), shape=(n, n))
        new = new.maximum(new.T)
        old = sp.csr_matrix(self._graph)
        old.resize((n, n))
        graph = old.maximum(new).tocsr()
        lower = sp.tril(new, k=-1).tocoo()
        first = self._window[0] * self._embedder.grid.n_chips
        return graph, (lower.row + first, lower.col + first, lower.data)

    def _slide(self) -> None:
        """Drop the chips of frames older than the window from the graph."""
        n_chips = self._embedder.grid.n_chips
        drop = len(self._window) - self.config.window
        if drop <= 0:
            return
        for f in self._window[:drop]:
            self._features.pop(f, None)
        self._window = self._window[drop:]
        keep = slice(drop * n_chips, None)
        self._graph = self._graph[keep][:, keep].tocsr()
        self._labels = self._labels[keep]

    # ------------------------------------------------------------------ state

    def _state_fingerprint(self) -> str:
        return fingerprint(self.config.model_dump())

    def _save_frame(self, index: int, frame: Frame, features: np.ndarray, stats: np.ndarray, edges: tuple,
                    embeddings: np.ndarray | None, report: FrameReport) -> None:
        name = f"frames/{index:05d}.npz"
        arrays = {"features": features, "stats": stats, "edge_i": np.asarray(edges[0], np.int64),
                  "edge_j": np.asarray(edges[1], np.int64), "edge_w": np.asarray(edges[2], np.float64),
                  "labels": report.chip_labels.ravel(), "window_labels": self._labels,
                  "window": np.asarray(self._window, np.int64),
                  "report": np.array(json.dumps(_report_meta(report), default=float))}
        if embeddings is not None:
            arrays["embeddings"] = embeddings
        with atomic_path(self.out / "state" / name) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, **arrays)
        self._processed.append({"index": index, "label": frame.label, "identity": frame.identity, "file": name})
        self._files_seen.add(_version(frame.identity))

    def _commit(self) -> None:
        state = {"version": STATE_VERSION, "config": self.config.model_dump(), "fingerprint": self._state_fingerprint(),
                 "embedder": self._embedder.to_dict(), "axis": self._axis.to_dict(), "frames": self._processed,
                 "next_id": self._next_id, "seen": sorted(self._seen), "skipped": self.skipped}
        write_text_atomic(self.out / "state" / "state.json", to_json(state))
        if len(self._processed) == 1 or not (self.out / "provenance.json").exists():
            write_text_atomic(self.out / "provenance.json", to_json(run_record(self.config.model_dump(), extra={
                "seed": self.config.seed, "mode": "live", "encoder": self._embedder.encoder.fingerprint(),
                "encoder_choice": self._embedder.choice, "grid": self._embedder.grid.to_dict(),
                "axis": self._axis.to_dict(), "intensity": list(self._embedder.intensity)})))

    def _resume(self) -> None:
        where = self.out / "state" / "state.json"
        try:
            state = json.loads(where.read_text())
        except (OSError, ValueError) as exc:
            raise OutputError(f"the live state cannot be read: {exc}",
                              fix="remove the state folder to start afresh, or use a new output folder",
                              where=where) from exc
        if state.get("version") != STATE_VERSION:
            raise OutputError(f"the live state has layout version {state.get('version')}, this version reads "
                              f"{STATE_VERSION}", fix="use a new output folder", where=where)
        if state["fingerprint"] != self._state_fingerprint():
            changed = sorted(k for k, v in self.config.model_dump().items() if state["config"].get(k) != v)
            raise ParameterError(
                f"the output folder holds a live series made with other options ({', '.join(changed)})",
                fix="resume with the same options, or give a new output folder", where=str(self.out))
        self._processed, self.skipped = state["frames"], state["skipped"]
        self._files_seen = {_version(e.get("identity")) for e in (*self._processed, *self.skipped)}
        self._next_id, self._seen = state["next_id"], set(state["seen"])
        self._axis = SeriesAxis.from_dict(state["axis"])
        self._embedder = FrameEmbedder.from_dict(self.config, state["embedder"])
        if self._embedder.encoder.fingerprint() != state["embedder"]["encoder"]:
            raise ParameterError("the encoder built from these options is not the one that made the state",
                                 fix="resume with the same encoder and weights, or give a new output folder",
                                 where=str(self.out))
        loaded = [np.load(self.out / "state" / entry["file"]) for entry in self._processed]
        self.reports = [_report_from(json.loads(str(d["report"])), d["labels"].reshape(self._embedder.grid.grid_shape))
                        for d in loaded]
        if not loaded:
            return
        self._reducer = knn.FeatureReducer(n_pcs=self.config.graph.n_pcs, seed=self.config.seed,
                                           standardise=self._embedder.encoder.standardise)
        self._reducer.fit_transform(loaded[0]["embeddings"])
        last = loaded[-1]
        self._window = last["window"].tolist()
        self._labels = last["window_labels"].astype(np.int64)
        self._features = {f: loaded[f]["features"] for f in self._window}
        n_chips = self._embedder.grid.n_chips
        first, n = self._window[0] * n_chips, len(self._window) * n_chips
        i = np.concatenate([loaded[f]["edge_i"] for f in self._window]) - first
        j = np.concatenate([loaded[f]["edge_j"] for f in self._window]) - first
        w = np.concatenate([loaded[f]["edge_w"] for f in self._window])
        inside = (i >= 0) & (j >= 0)
        graph = sp.csr_matrix((w[inside], (i[inside], j[inside])), shape=(n, n))
        self._graph = graph.maximum(graph.T).tocsr()
        self._unplotted = 1  # the figure is redrawn (it may predate the last frames)
        log.info("resumed %d frames from %s", len(self.reports), where)


def watch(folder: str | Path, out: str | Path, *, poll: float = 0.5, grace: float | None = None,
          max_frames: int | None = None, idle_timeout: float | None = None,
          stop: Callable[[], bool] | None = None, **options: Any) -> LiveSeries:
    """Segment the frames that appear in ``folder`` as they come, until told to stop.

    A file is read once it is complete: the same size and modification time at two
    polls in a row (a writer that renames a finished file into place is seen at once;
    hidden and ``.part``/``.tmp`` names are never read).  A complete file that cannot
    be read is retried until it has stayed unchanged for ``grace`` seconds, then skipped
    with a logged error (a later version of it is tried again).  Frames of another size
    or calibration are skipped at once.  Run again on the same ``out`` it resumes: files
    already processed or skipped (same path, size and time) are not read again.

    Parameters
    ----------
    folder
        The folder the microscope writes frames into.
    out
        Output folder (:class:`LiveSeries`).
    poll
        Seconds between looks at the folder.
    grace
        Seconds an unreadable, unchanged file is retried before it is skipped (default
        ``max(2, 4 * poll)``).
    max_frames
        Stop after this many new frames (default: no limit).
    idle_timeout
        Stop after this many seconds without a new frame (default: never).
    stop
        Called every poll; stop when it returns True (e.g. ``threading.Event().is_set``).
    options
        For :class:`LiveSeries` (``on_frame``, ``window``, ``chip_size``, ``encoder`` ...).

    Returns
    -------
    The :class:`LiveSeries`, closed.

    Raises
    ------
    InputError
        ``folder`` is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("not a folder", fix="give the folder the microscope writes frames into", where=folder)
    if not (poll > 0):
        raise ParameterError(f"poll={poll!r} must be a positive number of seconds", fix="use e.g. 0.5", where="poll")
    grace = max(2.0, 4 * poll) if grace is None else grace
    live = LiveSeries(out, **options)
    live.plot_when_idle = True
    last_seen: dict[Path, tuple] = {}
    failing: dict[Path, tuple[tuple, float]] = {}
    added, last_frame = 0, time.monotonic()
    try:
        while True:
            added_before = added
            for path in frame_files(folder):
                try:
                    identity = file_identity(path)
                except FileNotFoundError:  # removed or renamed between listing and looking
                    continue
                version = (identity["size"], identity["mtime_ns"])
                if live.has_seen(identity):
                    continue
                if last_seen.get(path) != version:  # new or still changing: look again next poll
                    last_seen[path] = version
                    continue
                try:
                    frames = read_file_frames(path, signal=live.signal)
                except InputError as exc:
                    since = failing.get(path)
                    if since is None or since[0] != version:
                        failing[path] = (version, time.monotonic())
                    elif time.monotonic() - since[1] >= grace:
                        live.skip(str(path), identity, exc)
                        failing.pop(path, None)
                    continue
                failing.pop(path, None)
                for frame in frames:
                    frame.identity = identity
                    if live._process(frame) is not None:
                        added += 1
                        last_frame = time.monotonic()
                if max_frames is not None and added >= max_frames:
                    break
            if max_frames is not None and added >= max_frames:
                break
            if added == added_before and live._unplotted >= PLOT_EVERY:
                live.close()  # between frames: no frame waits for the figure
            if idle_timeout is not None and time.monotonic() - last_frame >= idle_timeout:
                break
            if stop is not None and stop():
                break
            time.sleep(poll)
    finally:
        live.close()
    return live
