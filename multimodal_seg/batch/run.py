"""``run_batch``: one :func:`~multimodal_seg.segment` per specimen, on any Dask scheduler.

::

    from multimodal_seg.batch import run_batch

    result = run_batch(["images/", "specimens.csv"], config="configs/hpc-slurm.yaml", out="runs/")
    result.failed        # the specimens that failed, with what happened and where

Each specimen is one Dask task (:func:`segment_specimen`) on the scheduler the
config's ``compute`` section opens (:mod:`multimodal_seg.compute.schedulers`): a
thread of this process, or a worker of a LocalCluster, a running scheduler or a
SLURM/PBS cluster.  Inside a task the specimen's own Dask work stays on that worker
(its ``threads_per_worker`` threads).

Output folder ``out``::

    summary.csv              one row per specimen, rewritten (atomically) as each ends
    <specimen>/              segment()'s output: study.zarr, figures, labels, provenance.json
    <specimen>/batch.json    written last: the specimen is finished
    logs/<specimen>.jsonl    one line per attempt's start and end: where it ran, which stage
                             outputs it found finished, what went wrong (with the traceback),
                             or that Ctrl-C cut it short (``interrupted``)

Resuming is the same command again: a specimen is finished when its
``batch.json`` holds the same job fingerprint (config and input files; not the
scheduler, which does not change labels) and is skipped; any other specimen runs
again and continues from its last finished stage (the study's fingerprints).  A
failure stays with its specimen: it is written to the summary and the log, and
the others go on.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..compute.stopping import Stopped, StopRequest
from ..config import ComputeConfig, SegmentConfig, load_config
from ..errors import MMSegError, OutputError
from ..provenance import RunWarnings, fingerprint, to_json, write_text_atomic
from .inputs import Specimen, expand_inputs
from .repair import damaged_outputs, finished_outputs, forget
from .summary import write_summary

#: Written into a specimen's folder once its results and provenance are: it is finished.
FINISHED = "batch.json"
#: Statuses in the summary.
DONE, SKIPPED, FAILED = "done", "skipped", "failed"
#: Status of a specimen cut short by Ctrl-C (its finished stages are kept).
INTERRUPTED = "interrupted"


@dataclass
class BatchResult:
    """What :func:`run_batch` did.

    Attributes
    ----------
    records
        One dict per specimen, in input order (the rows of ``summary.csv``).
    out
        The batch's output folder.
    skipped_files
        Folder entries that are not images and were left out.
    scheduler
        Which scheduler ran the batch (:func:`multimodal_seg.compute.schedulers.describe`).
    """

    records: list[dict[str, Any]]
    out: Path
    skipped_files: list[Path] = field(default_factory=list)
    scheduler: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> list[dict[str, Any]]:
        """Records of the specimens that failed."""
        return [r for r in self.records if r["status"] == FAILED]

    @property
    def ok(self) -> bool:
        """Whether every specimen is finished."""
        return not self.failed


def job_fingerprint(specimen: Specimen, config: SegmentConfig) -> str:
    """What a finished specimen was computed from: its input files and the config
    (without ``compute``: the scheduler does not change the labels)."""
    return fingerprint("batch-job", config.model_dump(exclude={"compute"}), specimen.identity())


def finished_record(folder: Path, job: str) -> dict[str, Any] | None:
    """The record of a finished specimen, ``None`` if it is not finished for this job."""
    try:
        record = json.loads((folder / FINISHED).read_text())
    except (OSError, ValueError):
        return None
    if record.get("job") != job or not (folder / "provenance.json").is_file():
        return None
    return record


def _log(root: Path, name: str, **event: Any) -> None:
    """Append one event to ``logs/<name>.jsonl`` (one writer per specimen at a time).
    A log that cannot be written (a full disk) does not stop the run."""
    event = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "host": socket.gethostname(), "pid": os.getpid(),
             **event}
    try:
        (root / "logs").mkdir(parents=True, exist_ok=True)
        with open(root / "logs" / f"{name}.jsonl", "a") as fh:
            fh.write(json.dumps(event, default=str) + "\n")
    except OSError:
        pass


def attempts(root: Path, name: str) -> list[dict[str, Any]]:
    """The logged events of a specimen, oldest first."""
    try:
        lines = (root / "logs" / f"{name}.jsonl").read_text().splitlines()
    except OSError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


def describe_failure(exc: BaseException, specimen: Specimen, folder: Path) -> dict[str, str]:
    """``problem``, ``fix`` and ``where`` of a failed specimen, for the summary."""
    if isinstance(exc, MMSegError):
        return {"problem": exc.problem, "fix": exc.fix, "where": exc.where or str(folder)}
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return {"problem": "no space left on the device", "where": str(exc.filename or folder),
                "fix": "free disk space (or give --out on a larger disk) and run the same command again: "
                       "finished specimens and finished stages are kept"}
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "multimodal_seg" in f.filename] or frames
    place = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
    return {"problem": f"{type(exc).__name__}: {exc}",
            "where": f"{', '.join(str(p) for p in specimen.paths())} (raised in {place})",
            "fix": f"see the traceback in logs/{specimen.name}.jsonl; run the same command again to resume"}


def segment_specimen(specimen: Specimen, config: SegmentConfig, root: Path, job: str,
                     threads: int = 1, stopping: StopRequest | None = None) -> dict[str, Any]:
    """One batch task: segment a specimen into ``root/<name>`` and return its summary record.

    Runs wherever the scheduler puts it.  Never raises: a failure becomes a
    ``failed`` record (what, where, how to fix).  When a finished stage output
    turns out to be damaged (an unreadable chunk), it is forgotten and the
    specimen runs once more, recomputing only that output.  ``stopping`` is set when the
    batch is interrupted (in this process, or through the scheduler of a cluster): the run
    stops at its next stop point (:mod:`multimodal_seg.compute.stopping`), and what it
    raises then is the interruption's doing, logged as ``interrupted``, not as the
    specimen's failure.
    """
    with stopping.running() if stopping is not None else nullcontext():
        return _segment_specimen(specimen, config, root, job, threads, stopping)


def _segment_specimen(specimen: Specimen, config: SegmentConfig, root: Path, job: str, threads: int,
                      stopping: StopRequest | None) -> dict[str, Any]:
    from ..pipeline.segment import segment

    folder = root / specimen.name
    # The specimen's own Dask work stays on this worker, with its threads.
    local = config.model_copy(update={"compute": ComputeConfig(scheduler="threads", workers=threads,
                                                               chunk_mib=config.compute.chunk_mib)})
    record: dict[str, Any] = {"name": specimen.name, "out": str(folder), "status": FAILED}
    start = time.perf_counter()
    for attempt in (1, 2):
        resumed = sorted(finished_outputs(folder / "study.zarr"))
        _log(root, specimen.name, event="start", resumed_from=resumed)
        try:
            # the run's warnings come back in the record, to be said with the specimen's name
            with RunWarnings() as caught:
                try:
                    seg = segment(specimen.sources, config=local, out=folder, progress=False)
                finally:
                    record["warnings"] = [str(w.message) for w in caught]
        except Exception as exc:  # noqa: BLE001 - every failure stays with its specimen
            if isinstance(exc, Stopped) or (stopping is not None and stopping.is_set()):
                _log(root, specimen.name, event=INTERRUPTED, error=f"{type(exc).__name__}: {exc}")
                record.update(status=INTERRUPTED)
                break
            damaged = {} if isinstance(exc, (MMSegError, OSError)) else damaged_outputs(folder / "study.zarr")
            _log(root, specimen.name, event="failed", error=f"{type(exc).__name__}: {exc}",
                 traceback=traceback.format_exc(), damaged=damaged)
            if damaged and attempt == 1:
                forget(folder / "study.zarr", sorted(damaged))
                record["repaired"] = "; ".join(damaged.values())
                continue
            record.update(describe_failure(exc, specimen, folder))
            break
        record.update(status=DONE, seconds=round(time.perf_counter() - start, 3), n_chips=seg.grid.n_chips,
                      n_communities=seg.n_communities, modalities=" ".join(seg.modality_labels),
                      resumed_from=len(resumed))
        try:
            write_text_atomic(folder / FINISHED, to_json({**record, "job": job}))
        except OSError as exc:
            record.update(status=FAILED, **describe_failure(exc, specimen, folder))
        break
    _log(root, specimen.name, event="end", status=record["status"])
    return record


def run_batch(inputs: Sequence[str | Path] | str | Path, *, out: str | Path,
              config: SegmentConfig | dict | str | Path | None = None, progress: bool = True,
              on_record: Callable[[dict[str, Any]], None] | None = None) -> BatchResult:
    """Segment every specimen of ``inputs`` into ``out/<name>/``; see the module docstring.

    Parameters
    ----------
    inputs
        Image files, folders of images, ``.csv``/``.yaml`` lists of multimodal
        specimens (:mod:`multimodal_seg.batch.inputs`).
    out
        The batch's folder (created if needed).
    config
        One config for every specimen (a :class:`SegmentConfig`, dict or YAML
        path); its ``compute`` section says where the work runs.
    progress
        A progress bar over specimens.
    on_record
        Called with each specimen's record as it ends (this run's, not skipped ones).

    Returns
    -------
    BatchResult
        Every specimen's record; ``summary.csv`` in ``out`` holds the same.

    Raises
    ------
    InputError, ParameterError, OutputError
        Before any specimen runs: missing inputs, malformed lists, duplicate
        names, a bad config, an output folder that cannot be written.  Failures of
        single specimens are not raised: they are in the records.
    """
    import dask
    from tqdm.auto import tqdm

    from ..compute.schedulers import describe, open_scheduler
    from ..compute.tasks import run_tasks
    from ..pipeline.segment import check_output

    cfg = load_config(config)
    specimens, skipped_files = expand_inputs(inputs)
    root = check_output(out)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the batch folder: {exc.strerror}", fix="choose a folder you can write to",
                          where=root) from None
    jobs = {s.name: job_fingerprint(s, cfg) for s in specimens}
    records: dict[str, dict[str, Any]] = {}
    for s in specimens:
        earlier = finished_record(root / s.name, jobs[s.name])
        if earlier is not None:
            records[s.name] = {**{k: v for k, v in earlier.items() if k != "job"}, "status": SKIPPED}
    todo = [s for s in specimens if s.name not in records]
    threads = cfg.compute.threads_per_worker if cfg.compute.scheduler != "threads" else 1

    def ordered() -> list[dict[str, Any]]:
        return [records.get(s.name, {"name": s.name, "status": "pending", "out": str(root / s.name)})
                for s in specimens]

    def save_summary() -> None:
        try:
            write_summary(root / "summary.csv", ordered())
        except OSError:
            pass  # a full disk: the records still come back, and the next run writes the summary

    save_summary()
    if not todo:  # everything finished earlier: no scheduler (or cluster) to start
        return BatchResult(records=ordered(), out=root, skipped_files=skipped_files,
                           scheduler={"scheduler": cfg.compute.scheduler, "started": False})
    with open_scheduler(cfg.compute) as client, tqdm(
            total=len(specimens), initial=len(records), desc="specimens", unit="specimen",
            disable=not progress) as bar:
        scheduler = describe(cfg.compute, client)

        def finished(i: int, record: dict[str, Any]) -> None:
            records[todo[i].name] = record
            save_summary()
            bar.update(1)
            # raised in the specimen's task, said here with its name (and recorded by no
            # specimen still running)
            RunWarnings.say(warnings.WarningMessage(f"{record['name']}: {message}", UserWarning, __file__, 0)
                            for message in record.get("warnings", []))
            if on_record is not None:
                on_record(record)

        def lost(i: int, exc: BaseException) -> dict[str, Any]:
            specimen = todo[i]
            _log(root, specimen.name, event="lost", error=f"{type(exc).__name__}: {exc}")
            record = {"name": specimen.name, "out": str(root / specimen.name), "status": FAILED,
                      "problem": f"the worker running it was lost ({type(exc).__name__}: {exc})",
                      "where": f"logs/{specimen.name}.jsonl (host and process of each attempt)",
                      "fix": "run the same command again: it continues from the last finished stage"}
            finished(i, record)
            return record

        # Ctrl-C reaches this thread only; the specimens (in Dask's threads, or on a cluster's
        # workers) learn of it through this, stop at their next stop point and log it, and
        # run_tasks waits for them: none is left computing, or writing, after the batch
        stopping = StopRequest(client)
        tasks = [dask.delayed(segment_specimen, pure=False)(s, cfg, root, jobs[s.name], threads, stopping)
                 for s in todo]
        try:
            run_tasks(tasks, on_result=finished, on_error=lost, stopping=stopping)
        except KeyboardInterrupt:
            # the summary says which ended while the batch waited for them, and which were
            # cut short (their runs logged it); the others stay pending
            for s in (s for s in todo if s.name not in records):
                done, logged = finished_record(root / s.name, jobs[s.name]), attempts(root, s.name)
                if done is not None:
                    records[s.name] = {**{k: v for k, v in done.items() if k != "job"},
                                       "status": DONE}
                elif logged and logged[-1].get("status") == INTERRUPTED:
                    records[s.name] = {"name": s.name, "out": str(root / s.name), "status": INTERRUPTED,
                                       "fix": "run the same command again: it continues from the last finished stage"}
            save_summary()
            raise
    save_summary()
    return BatchResult(records=ordered(), out=root, skipped_files=skipped_files, scheduler=scheduler)
