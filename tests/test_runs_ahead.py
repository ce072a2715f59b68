"""Consensus runs drawn ahead by a helper process (multimodal_seg.graphs.ahead): the same
runs in the same order as a plain loop, the helper really used where it may be, stopped when
the consensus stops, and a helper that dies leaves this process to finish the runs."""

from __future__ import annotations

import multiprocessing
import os
import time

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from multimodal_seg.graphs.ahead import helper_possible, runs_ahead
from multimodal_seg.graphs.communities import earliest_stop, partition_graph, stop_boundary
from multimodal_seg.graphs.knn import knn_graph, reduce_features

needs_helper = pytest.mark.skipif(not helper_possible(), reason="no helper here: needs fork and two CPUs")


def _helper_ends(timeout: float = 10.0) -> bool:
    """Whether every helper process has ended within ``timeout`` s (leaving a block does not
    wait for the helper: it finishes the run it is making first)."""
    end = time.monotonic() + timeout
    while multiprocessing.active_children():
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


def _overlapping_blobs(seed: int = 10) -> np.ndarray:
    """Five overlapping Gaussian blobs: Leiden's runs differ from seed to seed here."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(5, 6))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    return np.concatenate([c + 0.45 * rng.normal(size=(80, 6)) for c in centres]).astype(np.float32)


def _leiden(graph):
    """One seeded Leiden run on ``graph`` (a pure function of the seed)."""
    return lambda seed: partition_graph(graph, seed=seed).labels


def _made_where(seed: int) -> np.ndarray:
    """The seed and the process that made its run."""
    return np.array([seed, os.getpid()])


@needs_helper
def test_the_helper_makes_runs_and_hands_them_out_in_seed_order():
    seeds = list(range(40))
    with runs_ahead(_made_where, seeds) as runs:
        made = np.array(list(runs))
    np.testing.assert_array_equal(made[:, 0], seeds)
    # every second run is the helper's, the others this process's
    assert (made[1::2, 1] != os.getpid()).all() and (made[::2, 1] == os.getpid()).all()
    assert _helper_ends(), "the helper outlived its block"


def test_without_a_helper_every_run_is_made_here():
    with runs_ahead(_made_where, list(range(10)), helper=False) as runs:
        made = np.array(list(runs))
    np.testing.assert_array_equal(made[:, 0], range(10))
    assert (made[:, 1] == os.getpid()).all()


@needs_helper
def test_leiden_runs_drawn_ahead_are_those_of_a_plain_loop():
    graph = knn_graph(_overlapping_blobs(), k=15)
    seeds = np.random.SeedSequence(3).generate_state(24).tolist()
    plain = [_leiden(graph)(s) for s in seeds]
    with runs_ahead(_leiden(graph), seeds) as runs:
        ahead = list(runs)
    assert len({r.tobytes() for r in plain}) > 1, "the runs should differ from seed to seed here"
    for a, b in zip(plain, ahead, strict=True):
        np.testing.assert_array_equal(a, b)


@needs_helper
def test_leaving_early_stops_the_helper_and_blas_gets_its_threads_back():
    before = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    with runs_ahead(_made_where, list(range(100))) as runs:
        first = [next(runs) for _ in range(3)]
        during = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    assert [r[0] for r in first] == [0, 1, 2]
    assert _helper_ends()
    # while the helper works, BLAS here leaves it a core
    assert all(n <= max(1, len(os.sched_getaffinity(0)) - 1) for n in during)
    assert [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"] == before


@needs_helper
def test_no_helper_starts_for_the_runs_made_alone():
    # a consensus that stops after its earliest possible stop pays nothing for a helper
    with runs_ahead(_made_where, list(range(30)), alone=9) as runs:
        first = [next(runs) for _ in range(9)]
        assert not multiprocessing.active_children()
        rest = list(runs)
    made = np.array(first + rest)
    np.testing.assert_array_equal(made[:, 0], range(30))
    assert (made[:9, 1] == os.getpid()).all()
    # then every second run is the helper's
    assert (made[10::2, 1] != os.getpid()).all() and (made[9::2, 1] == os.getpid()).all()
    assert _helper_ends()


def test_the_earliest_stop_is_the_first_look_the_sign_test_can_stop_at():
    for planned in (2, 5, 10, 30, 120):
        bound = stop_boundary(planned)
        first = earliest_stop(planned)
        assert all(bound[m - 1] > m for m in range(1, first))
        # a stop at `first`, or none possible at all (2 runs cannot show a majority at level 0.01)
        assert bound[first - 1] <= first or (first == planned and (bound > np.arange(1, planned + 1)).all())
    assert earliest_stop(2) == 2
    assert earliest_stop(30) == 9  # "9 runs if all agree" (stop_boundary's docstring)


def _dies_in_the_helper(parent: int):
    def run(seed: int) -> np.ndarray:
        if os.getpid() != parent and seed == 3:
            os._exit(1)  # the helper is killed part way
        return np.array([seed, os.getpid()])
    return run


@needs_helper
def test_a_helper_that_dies_leaves_this_process_to_make_the_rest():
    seeds = list(range(30))
    with runs_ahead(_dies_in_the_helper(os.getpid()), seeds) as runs:
        made = np.array(list(runs))
    np.testing.assert_array_equal(made[:, 0], seeds)
    # seed 3 went to the helper, which died on it: it and every later run were made here
    assert (made[3:, 1] == os.getpid()).all()
    assert _helper_ends()


@needs_helper
def test_a_decided_consensus_is_the_same_with_and_without_the_helper():
    # a close call (runs end with different numbers of communities): many runs, each decided
    x = _overlapping_blobs()
    features = {"chips": reduce_features(x, n_pcs=6)}
    graph = knn_graph(features["chips"], k=15)
    for seed in (0, 3):
        plain = partition_graph(graph, seed=seed, consensus=20, decide="dip", features=features, helper=False)
        ahead = partition_graph(graph, seed=seed, consensus=20, decide="dip", features=features)
        assert plain.runs > earliest_stop(20), "the helper starts only after the runs made alone"
        np.testing.assert_array_equal(plain.labels, ahead.labels)
        assert (plain.runs, plain.run_counts, plain.close_call) == (ahead.runs, ahead.run_counts, ahead.close_call)
        assert plain.decision == ahead.decision


def test_a_consensus_in_another_thread_makes_every_run_there():
    # a batch's specimens run on Dask's threads, which already share the cores
    import threading

    made = []

    def draw():
        with runs_ahead(_made_where, list(range(12))) as runs:
            made.extend(runs)

    thread = threading.Thread(target=draw)
    thread.start()
    thread.join()
    made = np.array(made)
    np.testing.assert_array_equal(made[:, 0], range(12))
    assert (made[:, 1] == os.getpid()).all()
    assert _helper_ends()


def test_a_cgroup_quota_of_one_cpu_leaves_no_core_for_a_helper(monkeypatch):
    # `docker --cpus=1` on a many-core host: the affinity lists every core, the quota allows one
    import multimodal_seg.compute.cpus as cpus

    monkeypatch.setattr(cpus, "cpu_affinity", lambda: {0, 1, 2, 3})
    monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda: 1.0)
    assert cpus.usable_cpus() == 1
    assert not helper_possible()
    with runs_ahead(_made_where, list(range(12))) as runs:
        assert (np.array(list(runs))[:, 1] == os.getpid()).all()
    monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda: 1.5)  # one and a half CPUs: two busy at once
    assert cpus.usable_cpus() == 2
    monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda: None)
    assert cpus.usable_cpus() == 4
