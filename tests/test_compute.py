"""The compute section, the schedulers it opens, and embedding tasks that do not change results."""

from __future__ import annotations

import shutil
from pathlib import Path

import dask
import numpy as np
import pytest

from multimodal_seg.config import ComputeConfig, load_config
from multimodal_seg.compute.schedulers import jobqueue_cluster, open_scheduler
from multimodal_seg.compute.tasks import current_client, run_tasks, scheduler_threads
from multimodal_seg.encoders.pooling import row_bands
from multimodal_seg.errors import ParameterError
from multimodal_seg.pipeline.embedding import chip_spans

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("section, message", [
    ({"scheduler": "address"}, "'address' is given exactly when"),
    ({"address": "tcp://h:8786"}, "'address' is given exactly when"),
    ({"scheduler": "processes", "cluster": {"cores": 4}}, "applies to scheduler slurm or pbs"),
    ({"threads_per_worker": 2}, "'threads_per_worker' applies to processes"),
    ({"scheduler": "address", "address": "tcp://h:1", "workers": 2}, "cannot be set for a running scheduler"),
    ({"scheduler": "mpi"}, "compute.scheduler"),
    ({"workers": 0}, "compute.workers"),
])
def test_compute_section_is_validated(section, message):
    with pytest.raises(ParameterError, match=message) as info:
        load_config({"compute": section})
    assert "fix:" in str(info.value)


def test_threads_scheduler_sets_threads_and_task_size():
    with open_scheduler(ComputeConfig(workers=3, chunk_mib=7)) as client:
        assert client is None and current_client() is None
        assert scheduler_threads() == 3
        assert dask.config.get("array.chunk-size") == "7MiB"
    assert dask.config.get("array.chunk-size") != "7MiB"  # restored


def test_slurm_example_config_makes_a_job_per_worker():
    pytest.importorskip("dask_jobqueue")
    config = load_config(CONFIGS / "hpc-slurm.yaml").compute
    cluster = jobqueue_cluster(config)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH --cpus-per-task=4" in script and "--nthreads 4" in script
    assert "export OMP_NUM_THREADS=4" in script and "#SBATCH -p normal" in script
    if shutil.which("sbatch") is None:
        with pytest.raises(ParameterError, match="sbatch, which is not on this machine"):
            with open_scheduler(config):
                pass


def test_run_tasks_reports_each_result_and_keeps_order():
    seen = {}
    tasks = [dask.delayed(lambda x: x * x, pure=False)(i) for i in range(6)]
    assert run_tasks(tasks, on_result=seen.__setitem__) == [0, 1, 4, 9, 16, 25]
    assert seen == {i: i * i for i in range(6)}
    with pytest.raises(ZeroDivisionError):
        run_tasks([dask.delayed(lambda: 1 / 0, pure=False)()])


def test_one_task_at_a_time_runs_in_this_thread():
    # torch called from a pool thread that stays alive gets an OpenMP team of its own, and
    # torch then ran 1.1-1.5 times slower in every thread: one-at-a-time tasks run here
    import threading

    here, seen = threading.get_ident(), {}
    tasks = [dask.delayed(lambda i: (i, threading.get_ident()), pure=False)(i) for i in range(4)]
    results = run_tasks(tasks, on_result=seen.__setitem__, local_threads=1)
    assert [i for i, _ in results] == [0, 1, 2, 3] and {t for _, t in results} == {here}
    assert sorted(seen) == [0, 1, 2, 3]
    with dask.config.set(scheduler="threads", num_workers=2):  # several at once: the pool's threads
        assert {t for _, t in run_tasks(tasks, local_threads=2)} != {here}


def test_a_torch_encoder_runs_its_network_in_the_calling_thread(small_phantom, monkeypatch):
    import threading

    import multimodal_seg.encoders.runtime as runtime
    from multimodal_seg import segment

    runtime.clear_networks()
    callers = []
    original = runtime.inference_copy

    def recorded(network):
        copy = original(network)
        copy.register_forward_pre_hook(lambda module, args: callers.append(threading.get_ident()))
        return copy

    monkeypatch.setattr(runtime, "inference_copy", recorded)
    try:
        segment({"image": small_phantom.image}, encoder="image-cnn", encoder_options={"weights": "random"},
                chip_size=32, stride=16, seed=0, progress=False)
    finally:
        runtime.clear_networks()  # no recording copy left for other tests
    assert callers and set(callers) == {threading.get_ident()}


def test_spans_are_whole_batches_bounded_by_memory_and_spread_over_threads():
    with dask.config.set({"array.chunk-size": "1MiB"}):
        spans = chip_spans(1000, batch_chips=64, chip_bytes=4096, tasks=4)  # 64 chips = 256 KiB
        assert spans[0] == (0, 256) and spans[-1] == (768, 1000)  # 4 batches by the task count
        spans = chip_spans(10_000, batch_chips=64, chip_bytes=4096, tasks=4)
        assert {b - a for a, b in spans[:-1]} == {256}  # 1 MiB: 4 batches by memory
        assert chip_spans(10, batch_chips=64, chip_bytes=2**30, tasks=4) == [(0, 10)]  # at least one batch
        # chips of an encoder that does not depend on its batches are shared evenly
        assert chip_spans(625, batch_chips=256, chip_bytes=4096, tasks=4, whole_batches=False) == [
            (0, 157), (157, 314), (314, 471), (471, 625)]
        assert {b - a for a, b in chip_spans(10_000, batch_chips=64, chip_bytes=4096, tasks=4,
                                             whole_batches=False)[:-1]} == {256}  # still bounded by memory
    bands = row_bands((100, 10, 32, 32), band_bytes=10 * 32 * 32 * 4 * 7, tasks=4)
    assert bands[0] == (0, 7) and bands[-1][1] == 100 and all(b - a <= 7 for a, b in bands)
    assert row_bands((8, 10, 4), band_bytes=2**30, tasks=4) == [(0, 2), (2, 4), (4, 6), (6, 8)]


def test_bands_are_whole_chunks_so_no_chunk_is_read_twice():
    row = 10 * 32 * 32 * 4
    # chunks of 2 rows, room for 7 rows: bands of 3 whole chunks, the last one short
    bands = row_bands((100, 10, 32, 32), band_bytes=7 * row, row_chunks=(2,) * 50)
    assert bands[0] == (0, 6) and bands[-1] == (96, 100)
    assert all(a % 2 == 0 and b - a <= 7 for a, b in bands) and len(bands) == 17
    assert [b for _, b in bands[:-1]] == [a for a, _ in bands[1:]]  # contiguous, complete
    # uneven chunks (Dask allows them) stay whole too
    assert row_bands((10, 4, 4), band_bytes=5 * 4 * 4 * 4, row_chunks=(3, 1, 4, 2)) == [(0, 4), (4, 8), (8, 10)]
    # a chunk taller than a band cannot stay whole in memory: even bands as without chunks
    assert row_bands((100, 10, 32, 32), band_bytes=7 * row, row_chunks=(10,) * 10) == row_bands(
        (100, 10, 32, 32), band_bytes=7 * row)


def test_embeddings_do_not_depend_on_the_task_size(small_phantom):
    from multimodal_seg.chips.shared import shared_grid
    from multimodal_seg.encoders import get_encoder
    from multimodal_seg.modalities.sources import read_modalities
    from multimodal_seg.pipeline.embedding import encode_chips, modality_intensity

    modality = read_modalities({"image": small_phantom.image})["image"]
    grid = shared_grid({"image": modality}, chip_size=32, stride=16)
    encoder = get_encoder("fourier")
    intensity = modality_intensity(modality)
    batches = []
    encode = encoder.encode

    def counted(chips):
        batches.append(len(chips))
        return encode(chips)

    encoder.encode = counted
    results, largest = [], []
    for chunk, threads in (("64KiB", 1), ("128MiB", 2)):  # one batch per task on one thread; few tasks on two
        batches.clear()
        with dask.config.set({"array.chunk-size": chunk}, scheduler="threads", num_workers=threads):
            results.append(encode_chips(modality, grid.per_modality["image"], encoder, intensity=intensity,
                                        batch_chips=32, progress=False))
        largest.append(max(batches))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    # a batch holds no more than a task's share of memory: 64 KiB is 16 chips of 32 x 32 float32
    assert largest == [16, 32]
