"""Batches: inputs, one study per specimen, resuming, failures kept to their specimen.

Small phantom images with the Fourier encoder and a 2-run consensus keep each
specimen under a second or two; nothing here depends on the default number of
communities.
"""

from __future__ import annotations

import csv
import errno
import json
import re
from pathlib import Path

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from multimodal_seg.batch import expand_inputs, run_batch
from multimodal_seg.batch.repair import finished_outputs
from multimodal_seg.batch.run import attempts
from multimodal_seg.cli import app
from multimodal_seg.errors import InputError, ParameterError
from multimodal_seg.synthetic.files import write_phantom_images

#: Quick settings: the weight-free encoder, two Leiden runs.
QUICK = {"encoder": {"name": "fourier"}, "communities": {"consensus": 2}}


def write_images(folder: Path, n: int = 3, size: int = 128) -> list[Path]:
    """``n`` phantom images (different seeds) as 8-bit PNG files ``img0.png`` ..."""
    return write_phantom_images(folder, n, size=size)


def labels(folder: Path) -> np.ndarray:
    return zarr.open_group(str(folder / "labels.zarr"), mode="r")["chip_labels"][...]


def summary(out: Path) -> dict[str, dict[str, str]]:
    with (out / "summary.csv").open() as fh:
        return {row["name"]: row for row in csv.DictReader(fh)}


def starts(out: Path, name: str) -> list[dict]:
    return [e for e in attempts(out, name) if e["event"] == "start"]


def stamps(store: Path, keys) -> dict[str, int]:
    """Modification time (ns) of each stage output's metadata: rewritten when the output is."""
    return {k: (store / k / "zarr.json").stat().st_mtime_ns for k in keys}


# --------------------------------------------------------------------------- inputs


def test_inputs_from_files_folders_and_lists(tmp_path):
    images = write_images(tmp_path / "images", n=2, size=64)
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "specimens.csv").write_text(
        "# specimen, then name=path\n"
        "grain-1,haadf=../images/img0.png,eels=si.dm4\n"
        "\n"
        "grain-2,haadf=/abs/h.dm4\n")
    (tmp_path / "lists" / "more.yaml").write_text(
        "grain-3: {haadf: g3.dm4, eels: [si3.dm4, {bin_scan: 2}]}\n")
    specimens, skipped = expand_inputs([tmp_path / "images", tmp_path / "lists" / "specimens.csv",
                                        tmp_path / "lists" / "more.yaml"])
    assert [s.name for s in specimens] == ["img0", "img1", "grain-1", "grain-2", "grain-3"]
    assert skipped == [tmp_path / "images" / "notes.txt"]
    assert specimens[0].sources == images[0]  # one image: segmented as one image
    assert specimens[2].sources == {"haadf": tmp_path / "lists" / "../images/img0.png",
                                    "eels": tmp_path / "lists" / "si.dm4"}  # relative to the list
    assert specimens[3].sources == {"haadf": Path("/abs/h.dm4")}
    assert specimens[4].sources == {"haadf": tmp_path / "lists" / "g3.dm4",
                                    "eels": (tmp_path / "lists" / "si3.dm4", {"bin_scan": 2})}


def test_bad_inputs_are_refused_before_any_work(tmp_path):
    images = write_images(tmp_path / "images", n=1, size=64)
    with pytest.raises(ParameterError, match="both named 'img0'") as info:
        expand_inputs([tmp_path / "images", images[0]])
    assert "fix:" in str(info.value)
    with pytest.raises(InputError, match="input not found"):
        expand_inputs([tmp_path / "missing.png"])
    (tmp_path / "bad.csv").write_text("lonely\n")
    with pytest.raises(ParameterError, match="no modality") as info:
        expand_inputs(tmp_path / "bad.csv")
    assert "bad.csv:1" in str(info.value)
    (tmp_path / "cells.csv").write_text("s1,haadf=a.dm4\ns2,haadf\n")
    with pytest.raises(ParameterError, match="is not name=path"):
        expand_inputs(tmp_path / "cells.csv")
    # a header row (or a first row of bare paths) is said to be one, with the row it needs
    (tmp_path / "header.csv").write_text("name,haadf,eels\ns1,haadf=a.dm4,eels=b.dm4\n")
    with pytest.raises(ParameterError, match=r"row 1 has no name=path cell \(name, haadf, eels\): a specimen list "
                                             "has no header row") as info:
        expand_inputs(tmp_path / "header.csv")
    assert "grain-1,haadf=a.dm4" in info.value.fix
    # a config given where the specimens go is named as one, with where it belongs
    (tmp_path / "quick.yaml").write_text("encoder: {name: fourier}\ncommunities: {consensus: 2}\n")
    with pytest.raises(ParameterError, match="reads as a config file, not a specimen list: communities") as info:
        expand_inputs(tmp_path / "quick.yaml")
    assert "--config" in info.value.fix
    (tmp_path / "names.yaml").write_text("'../up': {haadf: a.dm4}\n")
    with pytest.raises(ParameterError, match="cannot be a folder name"):
        expand_inputs(tmp_path / "names.yaml")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ParameterError, match="no specimen"):
        run_batch([tmp_path / "empty"], out=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- runs


def test_batch_segments_each_input_and_resumes_without_recomputing(tmp_path):
    write_images(tmp_path / "images", n=3)
    (tmp_path / "images" / "broken.png").write_bytes(b"not a png at all")
    out = tmp_path / "out"
    result = run_batch([tmp_path / "images"], out=out, config=QUICK, progress=False)
    rows = summary(out)
    assert [r["name"] for r in result.records] == ["broken", "img0", "img1", "img2"]
    assert {n: r["status"] for n, r in rows.items()} == {"broken": "failed", "img0": "done", "img1": "done",
                                                          "img2": "done"}
    # the failure says what and where, with a fix; it left no folder and stopped nothing else
    assert "broken.png" in rows["broken"]["where"] and rows["broken"]["fix"] and rows["broken"]["problem"]
    assert not (out / "broken").exists() and not result.ok
    for name in ("img0", "img1", "img2"):
        assert (out / name / "provenance.json").is_file() and (out / name / "batch.json").is_file()
        assert int(rows[name]["n_chips"]) == labels(out / name).size
    # one image as a batch input gives segment()'s labels for it
    import multimodal_seg as mms

    alone = mms.segment(tmp_path / "images" / "img1.png", config=QUICK, progress=False)
    np.testing.assert_array_equal(labels(out / "img1"), alone.chip_labels)

    store = out / "img0" / "study.zarr"
    before = stamps(store, finished_outputs(store))
    again = run_batch([tmp_path / "images"], out=out, config=QUICK, progress=False)
    assert {r["name"]: r["status"] for r in again.records} == {"broken": "failed", "img0": "skipped",
                                                               "img1": "skipped", "img2": "skipped"}
    assert all(len(starts(out, n)) == 1 for n in ("img0", "img1", "img2"))  # none computed twice
    assert stamps(store, before) == before
    # another config is another job: the finished specimen runs again, and its study
    # reuses the stages the change does not touch
    changed = {**QUICK, "communities": {"consensus": 3}}
    third = run_batch([tmp_path / "images" / "img0.png"], out=out, config=changed, progress=False)
    assert third.records[0]["status"] == "done"
    resumed = starts(out, "img0")[-1]["resumed_from"]
    assert {"modalities/image", "chips/origins", "embeddings/image", "graphs/image"} <= set(resumed)
    after = stamps(store, ["embeddings/image", "graphs/image"])
    assert after == {k: before[k] for k in after}


def test_cli_batch_reports_failures_with_exit_status(tmp_path):
    write_images(tmp_path / "images", n=1, size=96)
    (tmp_path / "images" / "zz-broken.png").write_bytes(b"\x89PNG truncated")
    config = tmp_path / "quick.yaml"
    config.write_text("encoder: {name: fourier}\ncommunities: {consensus: 2}\n")
    runner = CliRunner()
    result = runner.invoke(app, ["batch", str(tmp_path / "images"), "--out", str(tmp_path / "out"), "-c", str(config)])
    assert result.exit_code == 1, result.output
    assert "zz-broken" in result.output and "failed" in result.output and "1 of 2 specimens finished" in result.output
    # a fix written with brackets reaches the terminal whole (it was read as rich markup, and lost)
    (tmp_path / "list.yaml").write_text("s1: {haadf: 3}\n")
    result = runner.invoke(app, ["batch", str(tmp_path / "list.yaml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "fix: give a path, or [path, {reader options}]" in result.output
    (tmp_path / "images" / "zz-broken.png").unlink()
    result = runner.invoke(app, ["batch", str(tmp_path / "images"), "--out", str(tmp_path / "out"), "-c",
                                 str(config), "-q"])
    assert result.exit_code == 0, result.output
    assert summary(tmp_path / "out")["img0"]["status"] == "skipped"


# --------------------------------------------------------------------------- faults


def test_full_disk_fails_one_specimen_keeps_its_finished_stages_and_resumes(tmp_path, monkeypatch):
    write_images(tmp_path / "images", n=2)
    out = tmp_path / "out"
    original = zarr.storage.LocalStore.set

    async def full_disk(self, key, value):
        if "img1" in str(self.root) and key.startswith("partitions/"):
            raise OSError(errno.ENOSPC, "No space left on device", str(Path(str(self.root)) / key))
        return await original(self, key, value)

    monkeypatch.setattr(zarr.storage.LocalStore, "set", full_disk)
    result = run_batch([tmp_path / "images"], out=out, config=QUICK, progress=False)
    rows = summary(out)
    assert rows["img0"]["status"] == "done" and rows["img1"]["status"] == "failed"
    assert rows["img1"]["problem"] == "no space left on the device"
    assert "img1" in rows["img1"]["where"] and "partitions" in rows["img1"]["where"]
    assert "free disk space" in rows["img1"]["fix"] and not result.ok
    store = out / "img1" / "study.zarr"
    kept = finished_outputs(store)
    assert {"embeddings/image", "graphs/image"} <= set(kept) and "partitions/image" not in kept
    before = stamps(store, ["embeddings/image", "graphs/image"])

    monkeypatch.setattr(zarr.storage.LocalStore, "set", original)  # space freed
    again = run_batch([tmp_path / "images"], out=out, config=QUICK, progress=False)
    assert {r["name"]: r["status"] for r in again.records} == {"img0": "skipped", "img1": "done"}
    assert stamps(store, before) == before  # finished stages were not recomputed
    assert set(before) <= set(starts(out, "img1")[-1]["resumed_from"])


def test_corrupt_chunk_in_a_finished_output_is_recomputed_alone(tmp_path):
    from multimodal_seg import Study, stages

    write_images(tmp_path / "images", n=1)
    out = tmp_path / "out"
    # an interrupted earlier run: the study holds modalities, chips and embeddings
    study = Study.open(out / "img0" / "study.zarr")
    stages.add_modalities(study, {"image": tmp_path / "images" / "img0.png"})
    stages.lay_chips(study)
    stages.embed(study, encoder="fourier", progress=False)
    good = study.read_array("embeddings/image")
    store = out / "img0" / "study.zarr"
    kept = stamps(store, ["modalities/image", "chips/origins"])
    chunk = next(p for p in (store / "embeddings" / "image").rglob("c/*/*") if p.is_file())
    chunk.write_bytes(b"\x00garbage\x00" * 4)  # a bad block

    result = run_batch([tmp_path / "images"], out=out, config=QUICK, progress=False)
    record = result.records[0]
    assert record["status"] == "done", record
    assert "embeddings/image" in record["repaired"] and "unreadable" in record["repaired"]
    assert "embeddings/image" in summary(out)["img0"]["repaired"]
    np.testing.assert_array_equal(Study.open(store).read_array("embeddings/image"), good)
    assert stamps(store, kept) == kept  # the sound outputs were not recomputed
    events = [e["event"] for e in attempts(out, "img0")]
    assert events == ["start", "failed", "start", "end"]


@pytest.mark.filterwarnings("error")  # zarr warned about each piece of debris while listing the store
def test_debris_of_a_killed_writer_is_passed_over_without_warnings(tmp_path):
    """A process killed mid-write leaves zarr's temporary metadata files (``zarr.<hex>.partial``)
    and folders whose metadata was never written; a resumed batch reads past them."""
    from multimodal_seg import Study, stages

    write_images(tmp_path / "images", n=1)
    out = tmp_path / "out"
    store = out / "img0" / "study.zarr"
    study = Study.open(store)
    stages.add_modalities(study, {"image": tmp_path / "images" / "img0.png"})
    stages.lay_chips(study)
    stages.embed(study, encoder="fourier", progress=False)
    clean = finished_outputs(store)
    assert {"modalities/image", "chips/origins", "embeddings/image"} <= set(clean)
    (store / "chips" / "zarr.0123456789abcdef0123456789abcdef.partial").write_text('{"zarr_format"')
    (store / "chips" / "stats" / "image").mkdir(parents=True, exist_ok=True)
    (store / "graphs").mkdir()  # the stage's group, killed before its metadata was written
    assert finished_outputs(store) == clean

    kept = stamps(store, clean)
    result = run_batch([tmp_path / "images"], out=out, config=QUICK, progress=False)
    assert result.ok and set(clean) <= set(starts(out, "img0")[-1]["resumed_from"])
    assert stamps(store, kept) == kept
    assert "graphs/image" in finished_outputs(store)


# --------------------------------------------------------------------------- schedulers and killed processes


@pytest.mark.slow
def test_threads_and_a_local_cluster_give_equal_labels(tmp_path):
    pytest.importorskip("distributed")
    import multimodal_seg as mms

    write_images(tmp_path / "images", n=2)
    threads = run_batch([tmp_path / "images"], out=tmp_path / "threads", config=QUICK, progress=False)
    cluster = run_batch([tmp_path / "images"], out=tmp_path / "cluster", progress=False,
                        config={**QUICK, "compute": {"scheduler": "processes", "workers": 2}})
    assert threads.ok and cluster.ok
    assert cluster.scheduler["scheduler"] == "processes" and cluster.scheduler["workers"] == 2
    for name in ("img0", "img1"):
        np.testing.assert_array_equal(labels(tmp_path / "threads" / name), labels(tmp_path / "cluster" / name))
        pids = {e["pid"] for e in starts(tmp_path / "cluster", name)}
        assert len(pids) == 1 and pids != {__import__("os").getpid()}  # ran in a worker process
    with pytest.raises(ParameterError, match="needs the study on disk"):
        mms.segment(tmp_path / "images" / "img0.png", config={"compute": {"scheduler": "processes"}})


def _wait_for_kill_point(out: Path, names: list[str], timeout: float = 120.0) -> tuple[str, dict, int]:
    """Poll until a specimen has started, has a finished embedding and is not finished;
    return it, the stamps of its finished outputs and the process running it."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name in names:
            events = starts(out, name)
            store = out / name / "study.zarr"
            if not events or (out / name / "batch.json").exists():
                continue
            finished = finished_outputs(store)
            if "embeddings/image" in finished:
                return name, stamps(store, finished), events[-1]["pid"]
        time.sleep(0.005)
    raise AssertionError("no specimen was caught between its embedding and its end")


@pytest.mark.slow
def test_worker_killed_mid_specimen_is_resumed_without_recomputing(tmp_path):
    distributed = pytest.importorskip("distributed")
    import os
    import signal
    import threading

    import multimodal_seg as mms

    write_images(tmp_path / "images", n=2, size=512)
    out = tmp_path / "out"
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        config = {**QUICK, "compute": {"scheduler": "address", "address": cluster.scheduler_address}}
        done: dict = {}
        runner = threading.Thread(target=lambda: done.update(
            result=run_batch([tmp_path / "images"], out=out, config=config, progress=False)))
        runner.start()
        name, kept, pid = _wait_for_kill_point(out, ["img0", "img1"])
        with distributed.Client(cluster) as client:  # kill only a process that is the cluster's worker
            assert pid != os.getpid() and pid in set(client.run(os.getpid).values())
        os.kill(pid, signal.SIGKILL)  # the worker dies mid-run; its nanny starts another
        runner.join(timeout=300)
        # one specimen whose spans of chips are embedding tasks on the cluster's workers
        spread = mms.segment(tmp_path / "images" / "img0.png", out=tmp_path / "spread", progress=False,
                             config={**config, "compute": {**config["compute"], "chunk_mib": 1}})
    result = done["result"]
    assert result.ok, result.records  # Dask ran the task again on the new worker process
    assert {r["name"]: r["status"] for r in result.records} == {"img0": "done", "img1": "done"}
    runs = starts(out, name)
    assert len(runs) == 2 and runs[0]["pid"] == pid != runs[1]["pid"]
    assert set(kept) <= set(runs[1]["resumed_from"])  # it went on from its finished stages ...
    store = out / name / "study.zarr"
    assert stamps(store, kept) == kept  # ... without computing them again
    np.testing.assert_array_equal(spread.chip_labels, labels(out / "img0"))


@pytest.mark.slow
def test_killed_batch_resumes_where_it_stopped(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    write_images(tmp_path / "images", n=3, size=384)
    config = tmp_path / "quick.yaml"
    config.write_text("encoder: {name: fourier}\ncommunities: {consensus: 2}\n")
    out = tmp_path / "out"
    root = Path(__file__).resolve().parents[1]
    process = subprocess.Popen([sys.executable, "-m", "multimodal_seg.cli", "batch", str(tmp_path / "images"),
                                "--out", str(out), "-c", str(config), "-q"], cwd=root,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        name, kept, pid = _wait_for_kill_point(out, ["img0", "img1", "img2"])
    finally:
        os.kill(process.pid, signal.SIGKILL)  # kill -9 of the batch itself
        process.wait()
    assert pid == process.pid
    finished_before = {n for n in ("img0", "img1", "img2") if (out / n / "batch.json").exists()}
    result = run_batch([tmp_path / "images"], out=out, config=config, progress=False)
    assert result.ok and {r["name"] for r in result.records} == {"img0", "img1", "img2"}
    rows = summary(out)
    assert all(rows[n]["status"] == "skipped" for n in finished_before)
    assert all(rows[n]["status"] == "done" for n in {"img0", "img1", "img2"} - finished_before)
    for n in finished_before:
        assert len(starts(out, n)) == 1  # finished specimens are not computed twice
    assert set(kept) <= set(starts(out, name)[-1]["resumed_from"])
    assert stamps(out / name / "study.zarr", kept) == kept


@pytest.mark.parametrize("compute", [{"workers": 2}, {"scheduler": "processes", "workers": 2}],
                         ids=["threads", "local-cluster"])
def test_an_interrupted_batch_stops_its_running_specimens_before_it_returns(tmp_path, compute):
    """Ctrl-C reaches the batch's thread only: the specimens running in Dask's threads, or
    on a cluster's workers, are asked to stop, and the batch waits for them before the
    interruption goes on, so none is left computing (or writing) while the process exits,
    or on a running scheduler's workers while the batch is resumed.  Here the interruption
    comes as the small specimen ends, while the large one is still running."""
    import time

    from multimodal_seg.synthetic.files import write_phantom_images

    write_phantom_images(tmp_path / "small", 1, size=128)
    # 3072 px: at 2048 px the large one sometimes reached its last step (no stop point after it)
    # before the small one's record came back, in full CI runs on 2-core machines (stop 56)
    big = write_phantom_images(tmp_path / "big", 1, size=3072)[0].rename(tmp_path / "big" / "large.png")
    out = tmp_path / "out"

    def interrupt(record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_batch([tmp_path / "small", big], out=out, config={**QUICK, "compute": compute},
                  progress=False, on_record=interrupt)
    logged = attempts(out, "large")
    assert [e["event"] for e in logged][-2:] == ["interrupted", "end"], logged
    assert logged[-1]["status"] == "interrupted"
    time.sleep(2)
    assert attempts(out, "large") == logged  # nothing went on after the batch returned
    assert not (out / "large" / "batch.json").exists()
    assert {n: row["status"] for n, row in summary(out).items()} == {"img0": "done", "large": "interrupted"}
    result = run_batch([tmp_path / "small", big], out=out, config=QUICK, progress=False)
    assert [r["status"] for r in result.records] == ["skipped", "done"]


@pytest.mark.slow
def test_interrupted_batch_says_what_is_kept_and_how_to_go_on(tmp_path):
    """Ctrl-C (SIGINT) part way: exit status 130, one line that says the finished steps are
    kept and the same command resumes, no traceback or interpreter noise; the specimens cut
    short are logged as interrupted, not failed (their runs used to die on the thread pools
    shut down under them and log that as their failure); the resumed batch finishes every
    specimen."""
    import signal
    import subprocess
    import sys

    write_images(tmp_path / "images", n=3, size=384)
    config = tmp_path / "quick.yaml"
    config.write_text("encoder: {name: fourier}\ncommunities: {consensus: 2}\n")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "multimodal_seg.cli", "batch", str(tmp_path / "images"), "--out", str(out),
               "-c", str(config), "-q"]
    # Ctrl-C's default action even where this runs in the background, which ignores SIGINT
    process = subprocess.Popen(command, cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        caught, _, _ = _wait_for_kill_point(out, ["img0", "img1", "img2"])
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    said = " ".join((stdout + stderr).split())
    assert process.returncode == 130, said
    assert f"interrupted: finished steps are kept in {out}/; run the same command again to resume" in said
    assert "Traceback" not in said and "never awaited" not in said, said
    for name in ("img0", "img1", "img2"):
        events = [e["event"] for e in attempts(out, name)]
        assert "failed" not in events, (name, attempts(out, name))
        if events and not (out / name / "batch.json").exists():  # started, cut short
            assert events[-2:] == ["interrupted", "end"] and attempts(out, name)[-1]["status"] == "interrupted"
            assert summary(out)[name]["status"] == "interrupted"
    assert (out / caught / "batch.json").exists() or "interrupted" in [e["event"] for e in attempts(out, caught)]
    result = run_batch([tmp_path / "images"], out=out, config=config, progress=False)
    assert result.ok and {r["name"] for r in result.records} == {"img0", "img1", "img2"}


def test_the_scale_guides_batch_example_runs(tmp_path, monkeypatch):
    """docs/scale.md shows a batch from Python; the example must run as written."""
    import re

    guide = (Path(__file__).parents[1] / "docs" / "scale.md").read_text()
    code = re.search(r"```python\n(.*?)```", guide, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "scale.md (batch)", "exec"), namespace)
    assert namespace["result"].ok and (tmp_path / "scale-example" / "runs" / "summary.csv").is_file()


def test_a_list_of_multimodal_specimens(tmp_path):
    """A CSV row per specimen, its modalities as name=path: each gets its joint partition."""
    import hyperspy.api as hs

    from multimodal_seg.synthetic.multimodal import multimodal_phantom

    rows = []
    for seed in (0, 1):
        phantom = multimodal_phantom((16, 16), seed=seed)
        folder = tmp_path / f"s{seed}"
        folder.mkdir()
        haadf = hs.signals.Signal2D(phantom.haadf)
        for axis in haadf.axes_manager.signal_axes:
            axis.scale, axis.units = phantom.image_pixel_size, "nm"
        haadf.save(folder / "haadf.hspy")
        eels = hs.signals.Signal1D(np.asarray(phantom.eels))
        for axis in eels.axes_manager.navigation_axes:
            axis.scale, axis.units = phantom.scan_step, "nm"
        energy = eels.axes_manager.signal_axes[0]
        energy.offset, energy.scale, energy.units = phantom.energy_axis
        eels.save(folder / "eels.hspy")
        rows.append(f"specimen-{seed},haadf=s{seed}/haadf.hspy,eels=s{seed}/eels.hspy")
    (tmp_path / "specimens.csv").write_text("\n".join(rows) + "\n")
    result = run_batch([tmp_path / "specimens.csv"], out=tmp_path / "out", config=QUICK, progress=False)
    assert result.ok, result.records
    for seed in (0, 1):
        row = summary(tmp_path / "out")[f"specimen-{seed}"]
        assert row["modalities"] == "haadf eels"
        scan = zarr.open_group(str(tmp_path / "out" / f"specimen-{seed}" / "labels.zarr"), mode="r")["scan_labels"]
        assert set(scan) == {"haadf", "eels", "joint"} and scan["joint"].shape == (16, 16)


def test_overlapping_runs_in_threads_record_their_own_warnings():
    """Two runs in threads whose recording overlaps (as specimens of a batch on the threaded
    scheduler do): each records the warning raised in its own thread, and when both have
    ended the process's warning machinery is as before (no recorder left behind)."""
    import threading
    import warnings

    from multimodal_seg.provenance import RunWarnings

    before = (warnings.showwarning, list(warnings.filters))
    a_entered, b_entered, a_done = threading.Event(), threading.Event(), threading.Event()
    runs: dict[str, RunWarnings] = {}

    def first() -> None:
        with RunWarnings() as caught:
            runs["a"] = caught
            a_entered.set()
            b_entered.wait(10)
            warnings.warn("from a", UserWarning)
        a_done.set()

    def second() -> None:
        a_entered.wait(10)
        with RunWarnings() as caught:  # enters after a, leaves after a: the order that broke
            runs["b"] = caught
            b_entered.set()
            a_done.wait(10)
            warnings.warn("from b", UserWarning)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert [str(w.message) for w in runs["a"]] == ["from a"]
    assert [str(w.message) for w in runs["b"]] == ["from b"]
    assert (warnings.showwarning, list(warnings.filters)) == before
    with pytest.warns(UserWarning, match="from a"):
        runs["a"].replay()  # raised again for the caller, and not recorded again
    assert len(runs["a"]) == 1


def test_warnings_from_dask_threads_go_to_the_run_that_computed_them():
    """A warning raised in a Dask worker thread (a specimen's chunked read or embedding) goes
    to the run whose computation raised it, not to every run recording at the time: two
    specimens of a threaded batch used to get each other's warnings."""
    import threading
    import warnings

    import dask

    from multimodal_seg.provenance import RunWarnings

    both_open = threading.Barrier(2, timeout=10)
    runs: dict[str, RunWarnings] = {}

    def warn_in_worker(name: str) -> str:
        warnings.warn(f"from {name}'s task", UserWarning)
        return threading.current_thread().name

    def run(name: str) -> None:
        with RunWarnings() as caught:
            runs[name] = caught
            both_open.wait()  # both runs record while either warns
            worker = dask.compute(dask.delayed(warn_in_worker)(name), scheduler="threads", num_workers=2)[0]
            assert worker != threading.current_thread().name  # raised in a thread of Dask's pool
            both_open.wait()

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert [str(w.message) for w in runs["a"]] == ["from a's task"]
    assert [str(w.message) for w in runs["b"]] == ["from b's task"]


def test_warnings_from_the_read_ahead_thread_go_to_the_run_that_reads():
    """Spectrum and 4D embeddings read the next band of scan rows in a thread of their own
    (``iter_row_bands``); what that read warns (a lazy reader decoding its chunks) goes to the
    run that reads, not to every run recording at the time."""
    import threading
    import warnings

    import dask.array as da

    from multimodal_seg.encoders.pooling import iter_row_bands
    from multimodal_seg.provenance import RunWarnings

    both_open = threading.Barrier(2, timeout=10)
    runs: dict[str, RunWarnings] = {}

    def decode(block: np.ndarray, name: str) -> np.ndarray:
        warnings.warn(f"{name}'s reader", UserWarning)
        return block

    def run(name: str) -> None:
        # meta given: Dask does not call decode to find it (a warning outside any run)
        cube = da.zeros((8, 4, 16), chunks=(2, 4, 16)).map_blocks(decode, name, meta=np.empty((0, 0, 0)))
        with RunWarnings() as caught:
            runs[name] = caught
            both_open.wait()
            bands = list(iter_row_bands(cube, band_bytes=4 * 16 * 8 * 2))
            assert len(bands) >= 2  # the later bands are read ahead, in the second thread
            both_open.wait()

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    for name in ("a", "b"):
        said = {str(w.message) for w in runs[name]}
        assert said == {f"{name}'s reader"}, (name, said)


def test_a_specimens_warnings_are_said_once_with_its_name(tmp_path):
    """A warning of one specimen's run reaches the caller once, named by its specimen (it came
    unnamed before: with several specimens, nobody could tell whose it was), and is kept in
    the specimen's batch.json beside its provenance."""
    write_images(tmp_path / "images", n=2, size=96)
    config = {**QUICK, "fusion": {"method": "multiplex"}}  # one image: fusion does nothing, and says so
    with pytest.warns(UserWarning) as caught:
        run_batch([tmp_path / "images"], out=tmp_path / "out", config=config, progress=False)
    fusion = sorted(str(w.message) for w in caught if "fusion method" in str(w.message))
    assert len(fusion) == 2 and fusion[0].startswith("img0: fusion method='multiplex'")
    assert fusion[1].startswith("img1: fusion method='multiplex'")
    kept = json.loads((tmp_path / "out" / "img1" / "batch.json").read_text())["warnings"]
    assert any(w.startswith("fusion method='multiplex'") for w in kept)
    # on the terminal each is on a line of its own: the progress bar is cleared first (it
    # was printed right after the bar's text) and drawn again below
    (tmp_path / "multiplex.yaml").write_text("encoder: {name: fourier}\ncommunities: {consensus: 2}\n"
                                             "fusion: {method: multiplex}\n")
    result = CliRunner().invoke(app, ["batch", str(tmp_path / "images"), "--out", str(tmp_path / "cli"),
                                      "-c", str(tmp_path / "multiplex.yaml")])
    assert result.exit_code == 0, result.output
    said = [m.start() for m in re.finditer("warning: img", result.output)]
    assert len(said) == 2 and all(result.output[i - 1] in "\r\n" for i in said), result.output
