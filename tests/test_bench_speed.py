"""Speed measurements (multimodal_seg.bench.speed): behaviour only, no timing goals.

The FLOP counts are checked against counts derived by hand (a small convnet) or
layer by layer from the shapes torch reports (ResNet50), and the graph benchmark
must recover the clusters it plants, so that its timings are of a working graph.
"""

from __future__ import annotations

import json
import math
import mmap
import statistics
import sys
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from multimodal_seg.bench import speed
from multimodal_seg.bench.speed import (
    encoder_flops_per_chip,
    encoder_throughput,
    fourier_flops_per_chip,
    graph_scaling,
    peak_flops,
    planted_mixture,
)
from multimodal_seg.encoders import get_encoder
from multimodal_seg.encoders.base import Encoder
from multimodal_seg.encoders.fourier import FourierEncoder

LINUX = sys.platform.startswith("linux")


def conv_flops(conv: nn.Conv2d, h_out: int, w_out: int) -> int:
    """2 x multiply-adds of a convolution: 2 * Cin/groups * Cout * kh * kw * Hout * Wout."""
    kh, kw = conv.kernel_size
    return 2 * (conv.in_channels // conv.groups) * conv.out_channels * kh * kw * h_out * w_out


class TinyConvEncoder(Encoder):
    """Two convolutions and global pooling, run like the project's torch encoders."""

    name = "tiny-conv"

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(1, 4, 3)               # 16 -> 14
        self.conv2 = nn.Conv2d(4, 8, 3, stride=2)     # 14 -> 6
        self.network = nn.Sequential(self.conv1, nn.ReLU(), self.conv2,
                                     nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()

    @property
    def dim(self) -> int:
        return 8

    def encode(self, chips: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.network(torch.from_numpy(np.asarray(chips, np.float32)).unsqueeze(1)).numpy()

    def fingerprint(self) -> dict[str, Any]:
        return {"name": self.name}


class MeanEncoder(Encoder):
    """A numpy encoder with no FLOP count: the chip mean."""

    name = "mean"

    @property
    def dim(self) -> int:
        return 1

    def encode(self, chips: np.ndarray) -> np.ndarray:
        return np.asarray(chips, np.float32).reshape(len(chips), -1).mean(axis=1, keepdims=True)

    def fingerprint(self) -> dict[str, Any]:
        return {"name": self.name}


@pytest.fixture(scope="module")
def resnet() -> Encoder:
    return get_encoder("resnet50", weights="random", resize=None)


def test_flop_counter_matches_hand_count_of_a_small_convnet():
    enc = TinyConvEncoder()
    expected = conv_flops(enc.conv1, 14, 14) + conv_flops(enc.conv2, 6, 6)
    assert expected == 2 * 1 * 4 * 9 * 14 * 14 + 2 * 4 * 8 * 9 * 6 * 6
    assert encoder_flops_per_chip(enc, (16, 16)) == expected


def test_resnet50_flops_match_layer_by_layer_count(resnet):
    shapes: list[tuple[nn.Conv2d, tuple[int, ...]]] = []
    convs = [m for m in resnet.network.modules() if isinstance(m, nn.Conv2d)]
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.append((m, tuple(o.shape))))
             for m in convs]
    try:  # the network itself: encode() runs a copy with its batch norms folded (same convolutions)
        with torch.inference_mode():
            resnet.network(resnet.prepare(np.zeros((1, 64, 64), np.float32)))
    finally:
        for h in hooks:
            h.remove()
    assert len(shapes) == 53  # ResNet50: stem + 16 bottlenecks x 3 + 4 downsamples
    expected = sum(conv_flops(m, s[2], s[3]) for m, s in shapes)
    # global average pooling (BinAverage to one bin: average pooling) is not counted
    assert encoder_flops_per_chip(resnet, (64, 64)) == expected
    # torchvision's published 4.09 GMAC at 224 px (its fc layer, 2 MFLOP, is not in the trunk)
    assert encoder_flops_per_chip(resnet, (224, 224)) == pytest.approx(2 * 4.09e9, rel=0.005)


def test_convnet_flops_count_every_position_of_a_chip():
    enc = get_encoder("spectrum-cnn", weights="random")
    one = encoder_flops_per_chip(enc, (1, 1, 64))
    assert one > 0
    assert encoder_flops_per_chip(enc, (2, 3, 64)) == 6 * one


def test_numpy_encoder_flops_analytic_or_none():
    size = 64
    n = size * size
    from multimodal_seg.encoders.fourier import polar_bins

    used = int((polar_bins(size, 12, 12)[0] >= 0).sum())
    expected = 2.5 * n * math.log2(n) + 2 * n + 3 * size * (size // 2 + 1) + used
    assert fourier_flops_per_chip(size) == pytest.approx(expected)
    assert encoder_flops_per_chip(FourierEncoder(), (size, size)) == pytest.approx(expected)
    with pytest.raises(ValueError):
        encoder_flops_per_chip(FourierEncoder(), (size, size + 1))
    assert encoder_flops_per_chip(get_encoder("spectrum-pca"), (1, 1, 64)) is None


def test_peak_flops_measured_and_nominal():
    p32 = peak_flops(size=256, repeats=2)
    json.dumps(p32)
    assert p32["device"] == "cpu" and p32["dtype"] == "float32" and p32["size"] == 256
    assert p32["measured_flops"] > 0
    assert p32["measured_flops"] == pytest.approx(2 * 256**3 / p32["measured_seconds"])
    assert "torch.mm" in p32["measured_method"] and "256x256" in p32["measured_method"]
    assert p32["threads"] == torch.get_num_threads()
    if not LINUX:
        return
    assert p32["nominal_flops"] > 0
    assert p32["nominal_flops"] == pytest.approx(
        p32["cores"] * p32["clock_mhz"] * 1e6 * p32["flops_per_cycle_per_core"])
    assert "FLOP/cycle" in p32["nominal_method"] and "MHz" in p32["nominal_method"]
    assert p32["measured_over_nominal"] == pytest.approx(p32["measured_flops"] / p32["nominal_flops"])
    p64 = peak_flops("float64", size=128, repeats=1)
    assert p64["nominal_flops"] == pytest.approx(p32["nominal_flops"] / 2)
    assert peak_flops("bfloat16", size=64, repeats=1)["nominal_flops"] is None
    with pytest.raises(ValueError):
        peak_flops("int8")


@pytest.mark.parametrize("entry, expected", [
    ({"flags": "sse2 avx avx2 fma avx512f", "vendor_id": "GenuineIntel"}, 64),
    ({"flags": "sse2 avx avx2 fma avx512f", "vendor_id": "AuthenticAMD", "cpu family": "25"}, 32),
    ({"flags": "sse2 avx avx2 fma", "vendor_id": "GenuineIntel"}, 32),
    ({"flags": "sse2 avx avx2 fma", "vendor_id": "AuthenticAMD", "cpu family": "23",
      "model": "1"}, 16),
    ({"flags": "sse2 avx avx2 fma", "vendor_id": "AuthenticAMD", "cpu family": "23",
      "model": "49"}, 32),
    ({"flags": "sse2 avx"}, 16),
    ({"features": "fp asimd"}, 16),
    ({"flags": "sse2"}, 8),
    ({}, 8),
])
def test_nominal_flops_per_cycle_from_simd_flags(entry, expected):
    per_cycle, _, why = speed._flops_per_cycle(entry, "float32")
    assert per_cycle == expected
    assert f"{expected} float32 FLOP/cycle" in why
    assert speed._flops_per_cycle(entry, "float64")[0] == expected // 2


def test_encoder_throughput_fields_are_consistent():
    chips = np.random.default_rng(0).random((6, 32, 32), dtype=np.float32)
    peak = {"measured_flops": 1e10, "nominal_flops": 4e10}
    r = encoder_throughput(FourierEncoder(), chips, repeats=3, peak=peak)
    json.dumps(r)
    assert r["n_chips"] == 6 and r["chip_shape"] == [32, 32] and r["repeats"] == 3
    assert len(r["seconds_all"]) == 3 and r["seconds"] == statistics.median(r["seconds_all"])
    assert r["chips_per_s"] == pytest.approx(6 / r["seconds"])
    assert r["seconds_per_chip"] == pytest.approx(r["seconds"] / 6)
    assert r["flops_per_chip"] == pytest.approx(fourier_flops_per_chip(32))
    assert r["flop_rate"] == pytest.approx(r["flops_per_chip"] * r["chips_per_s"])
    assert r["fraction_of_measured_peak"] == pytest.approx(r["flop_rate"] / 1e10)
    assert r["fraction_of_nominal_peak"] == pytest.approx(r["flop_rate"] / 4e10)
    assert r["encoder"].startswith("fourier(")
    # an encoder without a FLOP count: speed is measured, FLOP rates are None
    plain = encoder_throughput(MeanEncoder(), chips, repeats=1, peak=peak)
    assert plain["flops_per_chip"] is None and plain["flop_rate"] is None
    assert plain["fraction_of_measured_peak"] is None and plain["fraction_of_nominal_peak"] is None
    assert plain["chips_per_s"] == pytest.approx(6 / plain["seconds"])
    with pytest.raises(ValueError):
        encoder_throughput(FourierEncoder(), chips, repeats=0, peak=peak)


def test_the_forward_pass_runs_in_the_batches_the_pipeline_hands_an_encoder():
    """``batch`` chips per ``encode`` call, in order, the same features as one call; the
    runner's batch is the pipeline's (``BATCH_CHIPS``, fewer for chips too large for it)."""
    from multimodal_seg.bench.runner import pipeline_batch
    from multimodal_seg.pipeline.embedding import BATCH_CHIPS

    chips = np.random.default_rng(0).random((7, 32, 32), dtype=np.float32)
    calls = []
    encoder = FourierEncoder()
    encode = encoder.encode
    encoder.encode = lambda batch: calls.append(len(batch)) or encode(batch)
    np.testing.assert_array_equal(speed.encode_in_batches(encoder, chips, 3), encode(chips))
    assert calls == [3, 3, 1]
    calls.clear()
    r = encoder_throughput(encoder, chips, repeats=2, peak={"measured_flops": 1e10}, batch=3)
    assert calls == [3, 3, 1] * 3 and r["batch"] == 3 and r["n_chips"] == 7  # a warm-up and two timed
    calls.clear()
    speed.encode_in_batches(encoder, chips, None)
    assert calls == [7]
    assert pipeline_batch(chips) == BATCH_CHIPS
    assert pipeline_batch(np.zeros((1, 4096, 4096), np.float32)) < BATCH_CHIPS  # 64 MiB a chip


def test_encoder_throughput_torch_encoder(resnet):
    chips = np.random.default_rng(1).random((2, 32, 32), dtype=np.float32)
    r = encoder_throughput(resnet, chips, repeats=1, peak={"measured_flops": 1e11,
                                                            "nominal_flops": None})
    assert r["device"] == str(resnet.device)  # "cpu", or "cuda" where a GPU is (device="auto")
    assert r["flops_per_chip"] == encoder_flops_per_chip(resnet, (32, 32))
    assert r["fraction_of_measured_peak"] == pytest.approx(r["flop_rate"] / 1e11)
    assert r["fraction_of_nominal_peak"] is None
    # the forward pass split into preprocessing and network, the network's share from its own time
    assert r["prepare_seconds"] > 0 and r["network_seconds"] > 0
    assert r["network_fraction_of_measured_peak"] == pytest.approx(
        r["flops_per_chip"] * 2 / r["network_seconds"] / 1e11)


def test_forward_split_times_the_batches_the_encoder_runs():
    # the split prepares exactly the encoder's batches and runs them through its runner
    enc = get_encoder("spectrum-cnn", weights="random", length=32, embedding_dim=8, batch_size=5)
    seen = []
    prepare = enc.prepare
    enc.prepare = lambda items: seen.append(len(items)) or prepare(items)
    chips = np.random.default_rng(0).poisson(20.0, size=(3, 2, 2, 48)).astype(np.float32)
    split = speed.forward_split(enc, chips, repeats=2)
    assert seen == [5, 5, 2] * 3  # 12 spectra in batches of 5, an untimed run and two timed
    assert split["prepare_seconds"] > 0 and split["network_seconds"] > 0
    # numpy encoders have no network to split off
    assert speed.forward_split(FourierEncoder(), np.zeros((2, 16, 16), np.float32)) is None
    assert "network_seconds" not in encoder_throughput(FourierEncoder(), np.zeros((2, 16, 16), np.float32),
                                                       repeats=1, peak={"measured_flops": 1e10})


def test_planted_mixture_is_seeded_and_balanced():
    x, labels = planted_mixture(203, dim=16, n_clusters=5, seed=3)
    assert x.shape == (203, 16) and x.dtype == np.float32
    assert sorted(np.bincount(labels).tolist()) == [40, 40, 41, 41, 41]
    x2, labels2 = planted_mixture(203, dim=16, n_clusters=5, seed=3)
    assert np.array_equal(x, x2) and np.array_equal(labels, labels2)
    assert not np.array_equal(x, planted_mixture(203, dim=16, n_clusters=5, seed=4)[0])


def test_graph_scaling_recovers_planted_clusters():
    rows = graph_scaling([200, 400], dim=64, k=15, seed=0)
    json.dumps(rows)
    assert [r["n_chips"] for r in rows] == [200, 400]
    for r in rows:
        assert r["knn_search"] == "exact" and r["pynndescent_warmup_seconds"] is None
        assert r["dim"] == 64 and r["k"] == 15 and r["n_clusters"] == 5
        assert r["ari"] > 0.9, r
        assert r["n_communities"] == 5
        assert r["n_edges"] >= r["n_chips"] * r["k"] // 2
        assert r["reduce_seconds"] > 0 and r["knn_seconds"] > 0 and r["leiden_seconds"] > 0
        assert r["graph_seconds"] >= r["reduce_seconds"] + r["knn_seconds"]
        for key in ("graph_peak_rss_delta_mib", "leiden_peak_rss_delta_mib"):
            assert r[key] is None or r[key] >= 0


def test_graph_scaling_labels_the_approximate_search(monkeypatch):
    # pynndescent's first call compiles for over a minute: record the exact_max the
    # graph stage is given, and search exactly
    from multimodal_seg.graphs import knn as graph

    real, calls = graph.knn_graph, []

    def knn(features, *, k, seed, exact_max):
        calls.append((len(features), exact_max))
        return real(features, k=k, seed=seed, exact_max=len(features))

    monkeypatch.setattr(graph, "knn_graph", knn)
    rows = graph_scaling([150, 250], exact_max=200, measure_rss=False)
    assert [r["knn_search"] for r in rows] == ["exact", "pynndescent"]
    assert rows[0]["pynndescent_warmup_seconds"] is None
    assert rows[1]["pynndescent_warmup_seconds"] > 0
    # warm-up (exact, 300 points), compile warm-up (approximate), then one call per n
    assert calls == [(300, 300), (300, 0), (150, 200), (250, 200)]
    assert all(r["ari"] > 0.9 for r in rows)
    assert rows[0]["knn_recall"] == 1.0 and rows[1]["knn_recall"] == 1.0  # searched exactly here


def test_knn_recall_counts_the_exact_neighbours_a_graph_holds():
    import scipy.sparse as sp

    from multimodal_seg.bench.speed import knn_recall, planted_mixture
    from multimodal_seg.graphs.knn import knn_graph

    x, _ = planted_mixture(500, dim=16, n_clusters=3, seed=0)
    exact = knn_graph(x, k=10, seed=0)
    assert knn_recall(exact, x, k=10, sample=200) == 1.0
    # drop about half of the edges: about half the neighbours are missing
    rng = np.random.default_rng(0)
    pruned = exact.tocoo()
    keep = rng.random(pruned.nnz) < 0.5
    half = sp.csr_matrix((pruned.data[keep], (pruned.row[keep], pruned.col[keep])), shape=exact.shape)
    assert 0.35 < knn_recall(half, x, k=10, sample=200) < 0.65


@pytest.mark.skipif(not LINUX, reason="peak RSS from /proc (Linux)")
def test_peak_rss_reset_and_rise():
    before = speed.current_rss_mib()
    assert before is not None and before > 0
    if not speed.reset_peak_rss():
        pytest.skip("/proc/self/clear_refs is not writable here")
    # Measured after the reset: in a long test session memory freed before it would
    # otherwise count against the rise.
    baseline = speed.current_rss_mib()
    assert speed.peak_rss_mib() == pytest.approx(baseline, abs=8)
    # A fresh anonymous mapping: malloc could hand back heap pages that are already
    # resident (CI once saw no rise at all from np.ones), the kernel cannot.
    size = 64 * 2**20
    with mmap.mmap(-1, size) as block:
        view = np.frombuffer(block, dtype=np.uint8)
        view[:] = 1  # touch every page
        assert int(view[:: 4096].sum()) == size // 4096
        del view
    assert speed.peak_rss_mib() - baseline > 48


def _child_writes(mib: int, hold: float) -> None:
    """A forked child that writes ``mib`` MiB of its own pages and holds them ``hold`` s."""
    import time

    block = np.ones(mib * 2**20, dtype=np.uint8)
    time.sleep(hold)
    del block


@pytest.mark.skipif(not LINUX, reason="private memory from /proc/<pid>/smaps_rollup (Linux)")
def test_the_private_memory_of_a_forked_child_is_counted_not_the_pages_it_shares():
    import multiprocessing

    shared = np.ones(200 * 2**20, dtype=np.uint8)  # resident here, shared with the child
    with speed.ChildrenMemory(interval=0.02) as children:
        child = multiprocessing.get_context("fork").Process(target=_child_writes, args=(64, 1.0))
        child.start()
        child.join()
    assert child.exitcode == 0 and children.samples > 0
    # the 64 MiB it wrote, not the 200 MiB it shares
    assert 48 < children.peak_mib < 150
    del shared


def test_an_encoder_is_measured_against_the_peak_of_its_own_device():
    # a GPU encoder against the CPU's peak read 1539 % "of measured peak" on an H200 machine
    from multimodal_seg.bench.speed import peak_for

    class OnCPU:
        device = "cpu"

    class OnMeta:
        device = "meta"  # neither a CPU nor a CUDA GPU: no peak, fractions None

    cpu_peak = {"measured_flops": 1.0, "device": "cpu"}
    peaks = {"cpu": cpu_peak}
    assert peak_for(OnCPU(), peaks) is cpu_peak and peak_for(object(), peaks) is cpu_peak
    assert peak_for(OnMeta(), peaks) == {} and set(peaks) == {"cpu", "meta"}


def test_compilation_across_processes_says_why_it_cannot_run(tmp_path):
    with pytest.raises(ValueError, match="compile=True"):
        speed.compilation_across_processes("spectrum-cnn", {"weights": "random"}, (4, 2, 2, 48))
    (tmp_path / "left-over").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        speed.compilation_across_processes("spectrum-cnn", {"compile": True}, (4, 2, 2, 48), cache_dir=tmp_path)
    # the fresh process's own error comes back with its last lines
    with pytest.raises(RuntimeError, match="(?s)cold-cache process failed.*no_such_option"):
        speed.compilation_across_processes("spectrum-cnn", {"compile": True, "no_such_option": 1}, (4, 2, 2, 48))
