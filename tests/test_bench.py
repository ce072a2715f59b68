"""``mmseg bench``: every part runs on small phantoms and writes a report that says what it measured."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from multimodal_seg.bench import runner
from multimodal_seg.bench.quality import score
from multimodal_seg.chips.grid import ChipGrid
from multimodal_seg.cli import app
from multimodal_seg.bench.quality import CHIP_CEILING
from multimodal_seg.bench.report import speed_section
from multimodal_seg.errors import InputError, ParameterError

from .conftest import DATA


@pytest.fixture
def small_sizes(monkeypatch):
    """Shrink every part's work (full and quick) so the whole run takes well under a minute."""
    small = {"phantom_seeds": ([0], [0]), "labelled_images": (1, 1), "stability_seeds": ([0, 1], [0, 1]),
             "stability_images": (1, 1), "multimodal_seeds": ([0], [0]), "multimodal_scan": (32, 32),
             "graph_chips": ([300], [300]), "speed_image": (256, 256), "speed_scan": (16, 16),
             "family_draws": (1, 1), "family_fresh": (0, 0), "chip_scale_draws": ([], []),
             "chip_scale_images": (1, 1), "chip_factors": ((1.0,), (1.0,))}
    monkeypatch.setattr(runner, "SIZES", small)


def test_bench_runs_the_quality_stability_consistency_and_speed_parts(tmp_path, small_sizes):
    """(The families and chip-scale parts are tested in test_bench_families.py.)"""
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["bench", "--out", str(out), "--quick", "--parts",
                                      "quality,stability,consistency,speed",
                                      "--methods", "mmseg-default,slic-kmeans,felzenszwalb-kmeans"])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert set(results["part_seconds"]) == {"quality", "stability", "consistency", "speed"}
    phantom = results["quality"]["summary"]["phantom"]
    assert set(phantom) == {"mmseg-default", "slic-kmeans", "felzenszwalb-kmeans", CHIP_CEILING}
    # The truth seen at chip level bounds what chips painted back can score; it is no peer.
    ceiling = phantom[CHIP_CEILING]["pixel"]["ari"]["mean"]
    assert ceiling > 0.9 and phantom[CHIP_CEILING]["chip"]["ari"]["mean"] > 0.95
    # A partition of the chips scores at most the ceiling at chip level; painted back, the
    # default's boundary refinement (half a stride) may pass the chip-grid painting.
    assert phantom["mmseg-default"]["chip"]["ari"]["mean"] <= phantom[CHIP_CEILING]["chip"]["ari"]["mean"]
    # The project's default finds the phantom's regions; a fair peer is far from chance.
    assert phantom["mmseg-default"]["pixel"]["ari"]["mean"] > 0.8
    assert phantom["slic-kmeans"]["pixel"]["ari"]["mean"] > 0.2
    stab = results["stability"][0]
    assert stab["seeds"]["min"] > 0.8 and 0 < stab["noise_ari"] <= 1 and 0 < stab["shift_ari"] <= 1
    # each seed's count and its decision's margin: the phantom's regions are clearly apart
    assert len(stab["seeds"]["n_communities"]) == len(stab["seeds"]["margins"]) == 2
    assert all(m["alpha"] == 0.01 and m["closest_kept"] < 0.01 for m in stab["seeds"]["margins"])
    # ... and every consensus run ended with the count kept: no close call
    assert stab["seeds"]["close_calls"] == [False, False]
    assert all(counts == {str(n): sum(counts.values())}
               for counts, n in zip(stab["seeds"]["run_counts"], stab["seeds"]["n_communities"]))
    report = (out / "report.md").read_text()
    assert "closest kept apart, p" in report and "without, 1 (goal met on 1)" in report
    cons = results["consistency"]["phantom"][0]
    assert cons["consistency"]["names"][-1] == "joint" and cons["truth_scores"]["joint"]["ari"] > 0.5
    assert 0 < cons["peer_scores"]["hyperspy-kmeans (eels)"]["ari"] <= 1
    assert all(r.get("skipped") for r in results["consistency"]["real"])  # no data folder given
    speed = results["speed"]
    assert speed["peak"]["measured_flops"] > 0
    assert {r["encoder"] for r in speed["encoders"]} == {"fourier", "resnet50"}
    assert all("error" not in r and r["segment_seconds"] > 0 for r in speed["encoders"])
    # each share of peak is against the higher of the peaks measured just before and after
    for row in speed["encoders"]:
        forward = row["forward"]
        assert len(forward["peaks_around"]) == 2 and forward["peak_measured_flops"] == max(forward["peaks_around"])
        assert forward["fraction_of_measured_peak"] == pytest.approx(forward["flop_rate"] / max(forward["peaks_around"]))
    # refinement embeds boundary chips again with the lightweight encoder only (ResNet50: off),
    # and the overhead over every forward pass counts them
    image_rows = {r["encoder"]: r for r in speed["encoders"]}
    assert image_rows["fourier"]["n_encoded"] > image_rows["fourier"]["n_chips"]
    assert image_rows["resnet50"]["n_encoded"] == image_rows["resnet50"]["n_chips"]
    assert image_rows["fourier"]["overhead_all"] < image_rows["fourier"]["overhead"]
    # the overhead is also timed in pairs: each segment() run over the forward pass just before it
    for row in image_rows.values():
        ratios = [t / f for t, f in zip(row["segment_seconds_all"], row["paired_forward_seconds_all"])]
        assert len(ratios) == 1 and row["segment_over_forward"] == pytest.approx(ratios)
        assert row["overhead_paired"] == pytest.approx(ratios[0] - 1) == row["overhead_paired_range"][0]
        # where the time went: every step of the run, none longer than the run
        assert {"embed", "graphs", "communities", "place"} <= set(row["step_seconds"])
        assert sum(row["step_seconds"].values()) <= row["segment_seconds_all"][0]
    spectral = {r["encoder"]: r for r in speed["modality_encoders"]}
    assert set(spectral) == {"spectrum-pca", "spectrum-cnn", "diffraction-profiles", "diffraction-cnn"}
    assert all("error" not in r and r["forward"]["chips_per_s"] > 0 for r in spectral.values())
    # Encoders that pool positions (every spectrum and diffraction encoder, the convnets too)
    # are timed on every scan position once; the image encoders on the chips.
    for pooled in ("spectrum-pca", "diffraction-profiles", "diffraction-cnn", "spectrum-cnn"):
        assert spectral[pooled]["n_forward"] == 16 * 16 and spectral[pooled]["forward_on"] == "positions"
        # a pooled encoder refines from the positions it has encoded: nothing more to encode
        assert spectral[pooled]["n_encoded"] == 16 * 16
    assert spectral["diffraction-cnn"]["forward"]["flops_per_chip"] > 0  # counted for convnets
    # the torch encoders' forward passes are split into preprocessing and network
    for row in (spectral["diffraction-cnn"], spectral["spectrum-cnn"], image_rows["resnet50"]):
        assert row["forward"]["network_seconds"] > 0 and row["forward"]["network_fraction_of_measured_peak"] > 0
    assert "network_seconds" not in image_rows["fourier"]["forward"]
    assert speed["graph"]["rows"][0]["n_chips"] == 300
    # every encoder is measured against the peak of its own device: on a GPU machine the
    # convnets run on CUDA and their GPU's peak is measured and reported beside the CPU's
    import torch

    on_gpu = torch.cuda.is_available()
    assert bool(speed["device_peaks"]) == on_gpu
    assert all(r["forward"]["device"].startswith("cuda") == (on_gpu and r["encoder"] == "resnet50")
               for r in speed["encoders"])
    report = (out / "report.md").read_text()
    assert ("rate of cuda" in report) == on_gpu
    for heading in ("## Quality", "## Stability", "## Cross-modal consistency", "## Speed", "diffraction-cnn",
                    "default beats every peer", "Machine:", "Reproduce:", "Where `segment()` spends its time",
                    "Where a torch encoder's forward pass goes", "| diffraction-cnn (diffraction) |"):
        assert heading in report, heading
    assert (out / "quality.png").stat().st_size > 0 and (out / "graph_scaling.png").stat().st_size > 0
    assert (out / "speed_steps.png").stat().st_size > 0 and "![speed_steps.png]" in report
    # the steps in the order segment() runs them, also from results.json read back (keys sorted)
    header = next(line for line in speed_section(results["speed"]) if line.startswith("| encoder | plan"))
    assert header.startswith("| encoder | plan | modalities | chips | embed | graphs | communities |")


@pytest.mark.slow
def test_full_speed_runs_time_compiled_networks_and_their_cache_across_processes(small_sizes, monkeypatch):
    # a small image convnet stands in for ResNet50, whose compilation takes minutes
    small = {"name": "image-cnn", "weights": "random", "options": {"size": 32, "batch_size": 8}}
    monkeypatch.setattr(runner, "SPEED_IMAGE_ENCODERS",
                        ((small, "chip"), ({**small, "options": {**small["options"], "compile": True}}, "chip")))
    monkeypatch.setattr(runner, "SPEED_MODALITY_ENCODERS", ())
    monkeypatch.setattr(runner, "PAIRS", 1)
    assert [r["compiled"] for r in runner.run_speed(True)["encoders"]] == [False]  # quick: eager only
    out = runner.run_speed(False)
    eager, compiled = out["encoders"]
    assert (eager["compiled"], compiled["compiled"]) == (False, True)
    assert "error" not in compiled and compiled["segment_seconds"] > 0 and compiled["n_chips"] == eager["n_chips"]
    # the same arithmetic per chip: a compiled batch's padding is not counted
    assert compiled["forward"]["flops_per_chip"] == pytest.approx(eager["forward"]["flops_per_chip"], rel=1e-6)
    processes = compiled["compile_processes"]
    cold, warm = processes["cold"], processes["warm"]
    assert cold["fallback"] is None and warm["fallback"] is None
    assert processes["chips_shape"][0] == 8  # one batch
    # the first process compiles (cache misses, no hits); the second loads what it left
    assert cold["cache"]["fxgraph_cache_miss"] + cold["cache"]["autograd_cache_miss"] > 0
    assert cold["cache"]["fxgraph_cache_hit"] + cold["cache"]["autograd_cache_hit"] == 0
    assert warm["cache"]["fxgraph_cache_hit"] + warm["cache"]["autograd_cache_hit"] > 0
    section = "\n".join(speed_section(out))
    assert "| image-cnn, compiled |" in section and "Compilation across processes" in section


@pytest.mark.realdata
def test_bench_scores_the_labelled_sets(tmp_path, small_sizes):
    if not (DATA / "labelled/nasa_pmm/EBC").is_dir():
        pytest.skip("labelled data absent")
    results = runner.run_bench(DATA, tmp_path, quick=True, parts=["quality"],
                               method_names=["mmseg-default", "slic-kmeans"])
    assert results["skipped_sets"] == []
    for dataset in ("ebc", "super"):
        entry = results["quality"]["summary"][dataset]["mmseg-default"]["pixel"]
        # Many-to-one above the majority baseline: the communities carry class information.
        assert entry["many_to_one"]["mean"] > entry["majority_baseline"]["mean"]


def test_chip_level_scores_use_chip_majorities():
    truth = np.zeros((64, 64), dtype=int)
    truth[:, 32:] = 1
    pred = truth.copy()
    pred[:, 30:32] = 1  # a boundary two pixels off: wrong pixels, but no chip changes majority
    scores = score(pred, truth, 2, ChipGrid(truth.shape, 16, 16))
    assert scores["pixel"]["ari"] < 1.0 and scores["chip"]["ari"] == pytest.approx(1.0)


def test_the_stability_part_reads_the_phantom_and_as_many_of_each_set_as_asked(tmp_path):
    from multimodal_seg.bench.datasets import LabelledImage

    blank = np.zeros((8, 8), np.float32)
    items = [LabelledImage(dataset, f"{dataset}{k}", blank, blank.astype(np.int64), 2)
             for dataset, n in (("phantom", 3), ("ebc", 5), ("super", 2)) for k in range(n)]
    names = [i.name for i in runner.stability_items(items, 3)]
    assert names == ["phantom0", "ebc0", "ebc1", "ebc2", "super0", "super1"]
    with pytest.raises(ParameterError, match="stability part") as info:
        runner.run_bench(None, tmp_path, parts=["speed"], stability_images=5)
    assert info.value.where == "stability_images"
    with pytest.raises(ParameterError, match="positive integer"):
        runner.run_bench(None, tmp_path, parts=["stability"], stability_images=0)
    assert not (tmp_path / "results.json").exists()


def test_bench_bad_arguments(tmp_path):
    with pytest.raises(InputError, match="not a folder"):
        runner.run_bench(tmp_path / "missing", tmp_path / "out")
    with pytest.raises(ParameterError, match="unknown benchmark parts"):
        runner.run_bench(None, tmp_path / "out", parts=["speeed"])
    with pytest.raises(ParameterError, match="unknown methods"):
        runner.run_bench(None, tmp_path / "out", method_names=["kmeans"])
    result = CliRunner().invoke(app, ["bench", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "not a folder" in result.output
