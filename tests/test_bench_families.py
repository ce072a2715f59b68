"""The families and chip-scale parts of ``mmseg bench`` and the peers not told the number of
classes: GraphEM (multimodal_seg.bench.graphem) and HyperSpy's gap estimate.

Floors were set from measurements (seed 0) with a wide margin; each is noted beside it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from multimodal_seg.bench import families, graphem, methods, peers, report, runner
from multimodal_seg.bench.chip_scale import chip_sizes, chip_sweep
from multimodal_seg.bench.datasets import LabelledImage
from multimodal_seg.cli import app
from multimodal_seg.errors import ParameterError
from multimodal_seg.metrics import adjusted_rand
from multimodal_seg.synthetic.families import Draw
from multimodal_seg.synthetic.multimodal import multimodal_phantom
from multimodal_seg.synthetic.phantoms import haadf_phantom

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def haadf():
    return haadf_phantom((192, 192), seed=0)


@pytest.fixture(scope="module")
def two_modalities():
    """HAADF + EELS of the multimodal phantom (16 x 16 scan), as a phantom-family draw."""
    ph = multimodal_phantom((16, 16), seed=0)
    mods = ph.modalities()
    return Draw("test", 0, {"haadf": mods["haadf"], "eels": mods["eels"]}, np.asarray(ph.truth))


# --------------------------------------------------------------------------- GraphEM


def planted(n_per: int = 40, k: int = 3, dim: int = 12, noise: float = 0.3, seed: int = 0):
    """``k`` clusters of unit-norm directions plus noise: features and their labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim))
    labels = np.repeat(np.arange(k), n_per)
    return centres[labels] + noise * rng.normal(size=(k * n_per, dim)), labels


def test_graphem_threshold_graph_recovers_planted_clusters():
    features, truth = planted()
    sim = graphem.cosine_similarity(features)
    assert sim.shape == (120, 120) and sim.dtype == np.float32
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-5)
    # Within a cluster similarities are ~0.9, between clusters spread around 0: a cutoff
    # between the two keeps exactly the planted clusters.
    labels = graphem.threshold_louvain(sim, 0.6, seed=0)
    assert adjusted_rand(labels, truth) == pytest.approx(1.0)
    assert labels.dtype == np.int32 and np.all(np.diff(np.bincount(labels)) <= 0)  # 0 the largest
    np.testing.assert_array_equal(labels, graphem.threshold_louvain(sim, 0.6, seed=0))
    # The cutoff decides everything: everyone joined is one community; nobody joined, one each.
    assert np.unique(graphem.threshold_louvain(sim, -0.99)).size == 1
    assert np.unique(graphem.threshold_louvain(sim, 1.0)).size == 120


def test_graphem_fused_similarity_finds_what_no_single_modality_sees():
    """Two 'modalities' each split the chips in two, crosswise: only their averaged
    similarity (GraphEM's pair fusion) separates all four groups."""
    rng = np.random.default_rng(1)
    rows, cols = np.repeat([0, 0, 1, 1], 30), np.repeat([0, 1, 0, 1], 30)
    a = np.eye(2)[rows] + 0.15 * rng.normal(size=(120, 2))
    b = np.eye(2)[cols] + 0.15 * rng.normal(size=(120, 2))
    truth = 2 * rows + cols
    sims = {n: graphem.cosine_similarity(f) for n, f in (("a", a), ("b", b))}
    assert adjusted_rand(graphem.threshold_louvain(sims["a"], 0.7), truth) < 0.6
    fused = graphem.threshold_louvain((sims["a"] + sims["b"]) / 2, 0.7)
    assert adjusted_rand(fused, truth) > 0.95
    assert graphem.modality_sets(["a", "b", "c"]) == [("a",), ("b",), ("c",), ("a", "b"), ("a", "c"), ("b", "c"),
                                                      ("a", "b", "c")]


def test_graphem_on_the_project_embeddings_of_a_phantom(haadf):
    seg, study = methods.run_project(haadf.image, seed=0)
    parts = graphem.sweep(study, cutoffs=(0.3, 0.5, 0.99), seed=0)
    assert [(p.features, p.name, p.cutoff) for p in parts] == [
        (f, "image", c) for f in graphem.FEATURES for c in (0.3, 0.5, 0.99)]
    grid = study.grid().grid
    for p in parts:
        assert p.chip_labels.shape == (grid.n_chips,) and p.scan_labels.shape == haadf.truth.shape
    score = {(p.features, p.cutoff): adjusted_rand(p.scan_labels, haadf.truth) for p in parts}
    # The project's features reduced as its graph sees them: a cutoff of 0.3-0.5 finds the
    # phantom's regions (measured ARI 0.81 and 0.78); 0.99 leaves nearly every chip alone.
    assert max(score["reduced", 0.3], score["reduced", 0.5]) > 0.6, score
    assert score["reduced", 0.99] < 0.2, score
    # Raw (non-negative) features: all similarities near 1, so 0.3 joins every pair.
    assert next(p for p in parts if (p.features, p.cutoff) == ("raw", 0.3)).n_communities == 1


def test_graphem_bad_input():
    with pytest.raises(ParameterError) as info:
        graphem.cosine_similarity(np.ones(5))
    assert info.value.where == "features"
    with pytest.raises(ParameterError, match="cutoff"):
        graphem.threshold_louvain(np.eye(3), 1.5)
    with pytest.raises(ParameterError, match="square"):
        graphem.threshold_louvain(np.ones((3, 4)), 0.5)
    with pytest.raises(ParameterError, match="features"):
        graphem.study_features(None, features="pca")


def test_graphem_refuses_a_dense_matrix_too_large(monkeypatch):
    monkeypatch.setattr(graphem, "MAX_CHIPS", 10)
    with pytest.raises(ParameterError, match="GiB") as info:
        graphem.cosine_similarity(np.ones((11, 3)))
    assert "at most 10 chips" in info.value.fix


def test_run_project_is_segment(haadf):
    from multimodal_seg import segment

    seg, study = methods.run_project(haadf.image, seed=3)
    np.testing.assert_array_equal(seg.pixel_labels, segment(haadf.image, seed=3, progress=False).pixel_labels)
    assert study.modality_names() == ["image"]


# --------------------------------------------------------------------------- HyperSpy gap


def test_hyperspy_gap_finds_the_number_of_compositions():
    rng = np.random.default_rng(0)
    truth = np.zeros((16, 16), int)
    truth[:, 6:] = 1
    truth[10:, :] = 2
    spectra = np.array([[50, 10, 10, 5], [10, 50, 10, 5], [10, 10, 50, 5]], float)
    si = rng.poisson(spectra[truth]).astype(np.float32)
    labels = peers.hyperspy_kmeans_spectrum(si, None, seed=0)
    assert np.unique(labels).size == 3 and adjusted_rand(labels, truth) == pytest.approx(1.0)


def test_hyperspy_gap_on_the_phantoms(two_modalities, haadf):
    eels = np.asarray(two_modalities.modalities["eels"].data)
    labels = peers.hyperspy_kmeans_spectrum(eels, None, seed=0)
    # Chemistry sees 3 of the 4 regions (the two phase-A grains share a spectrum):
    # measured k = 3 on the 32 x 32 scan; HyperSpy's rule answers 2 .. max_clusters - 1.
    assert 2 <= np.unique(labels).size <= 5
    assert adjusted_rand(labels, two_modalities.truth) > 0.4
    result = peers.hyperspy_kmeans_image(haadf.image, None, chip=32, seed=0, max_clusters=6)
    assert 2 <= result.n_clusters <= 5 and np.unique(result.chip_labels).size == result.n_clusters
    told = peers.hyperspy_kmeans_image(haadf.image, 4, chip=32, seed=0)
    assert told.n_clusters == 4


def test_hyperspy_gap_options():
    small = np.random.default_rng(0).poisson(20, (6, 6, 16)).astype(np.float32)
    with pytest.raises(ParameterError) as info:
        peers.hyperspy_kmeans_spectrum(small, 3, max_clusters=8)
    assert info.value.where == "max_clusters" and "n_clusters=None" in info.value.fix
    with pytest.raises(ParameterError, match=">= 3"):
        peers.hyperspy_kmeans_spectrum(small, None, max_clusters=2)
    with pytest.warns(UserWarning, match="too few to estimate"):
        labels = peers.hyperspy_kmeans_spectrum(small[:1, :3], None)
    np.testing.assert_array_equal(labels, [[0, 1, 2]])


# --------------------------------------------------------------------------- quality part


def test_quality_scores_every_graphem_cutoff_and_the_gap_peer(haadf):
    item = LabelledImage("phantom", "haadf-192", haadf.image.astype(np.float32), haadf.truth.astype(np.int64), 4)
    records = runner.run_quality([item], ["hyperspy-gap", "graphem"])
    assert all("error" not in r for r in records)
    swept = [r for r in records if r.get("variant_of") == "graphem"]
    assert {r["method"] for r in swept} == {methods.graphem_variant(f, c) for f in graphem.FEATURES
                                            for c in graphem.CUTOFFS}
    gap = next(r for r in records if r["method"] == "hyperspy-gap")
    assert 2 <= gap["detail"]["estimated_k"] < peers.MAX_CLUSTERS
    summary = runner.quality.summarise(records)["phantom"]
    collapsed, sweeps = report.collapse_sweeps(summary)
    assert set(sweeps) == {"graphem-raw", "graphem-reduced"} and len(sweeps["graphem-raw"]) == len(graphem.CUTOFFS)
    best = {n: e for n, e in collapsed.items() if " best c=" in n}
    worst = {n: e for n, e in collapsed.items() if " worst c=" in n}
    assert len(best) == len(worst) == 2
    for feat in ("raw", "reduced"):
        b = next(e for n, e in best.items() if n.startswith(f"graphem-{feat} "))
        w = next(e for n, e in worst.items() if n.startswith(f"graphem-{feat} "))
        assert b["pixel"]["ari"]["mean"] == max(sweeps[f"graphem-{feat}"].values())
        assert w["pixel"]["ari"]["mean"] == min(sweeps[f"graphem-{feat}"].values())


# --------------------------------------------------------------------------- families part


def test_split_seeds_keep_tuning_and_held_out_apart():
    assert families.split_seeds(30) == {"tune": list(range(10)), "held_out": list(range(10, 30))}
    assert families.split_seeds(20) == {"tune": list(range(10)), "held_out": list(range(10, 20))}
    assert families.split_seeds(2) == {"tune": [0], "held_out": [10]}
    assert families.split_seeds(1) == {"tune": [0], "held_out": []}
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ParameterError) as info:
            families.split_seeds(bad)
        assert info.value.where == "draws"
    with pytest.raises(ParameterError, match="unknown phantom families"):
        families.check_families(["layout"])


def test_fresh_seeds_are_new_each_run_outside_the_other_splits_and_replayable():
    seeds, entropy = families.fresh_seeds(10)
    again, other_entropy = families.fresh_seeds(10)
    assert len(set(seeds)) == 10 and seeds == sorted(seeds)
    assert entropy != other_entropy and set(seeds).isdisjoint(again)  # odds of a shared seed by chance: 5e-8
    assert all(families.FRESH_FIRST <= s < 2**31 for s in seeds + again)
    assert max(families.split_seeds(families.FRESH_FIRST - families.TUNING_SEEDS)["held_out"]) < families.FRESH_FIRST
    assert families.fresh_seeds(10, entropy) == (seeds, entropy)  # the recorded entropy draws them again
    assert families.fresh_seeds(0)[0] == []
    for bad, where in ((-1, "fresh"), (2.5, "fresh"), (True, "fresh")):
        with pytest.raises(ParameterError) as info:
            families.fresh_seeds(bad)
        assert info.value.where == where
    with pytest.raises(ParameterError) as info:
        families.fresh_seeds(3, -5)
    assert info.value.where == "fresh_entropy"
    with pytest.raises(ParameterError) as info:
        families.split_seeds(families.FRESH_FIRST)  # held-out seeds would run into the fresh ones
    assert info.value.where == "draws"


def test_the_thickness_family_is_a_4dstem_scan_under_a_random_wedge():
    from multimodal_seg.synthetic.families import FAMILIES, draw

    assert FAMILIES[-1] == "thickness"  # appended: the other families' draws keep their seeds
    a, b = draw("thickness", 4), draw("thickness", 4)
    assert a.params == b.params and list(a.modalities) == ["diffraction"]
    np.testing.assert_array_equal(np.asarray(a.modalities["diffraction"].data),
                                  np.asarray(b.modalities["diffraction"].data))
    params = [draw("thickness", s).params for s in range(6)]
    assert all(0 <= p["thickness_wedge"] < 0.6 and p["pattern_size"] in (32, 48, 64) for p in params)
    assert len({round(p["thickness_wedge"], 3) for p in params}) == 6
    scan = a.modalities["diffraction"].data
    assert scan.shape == (48, 48, a.params["pattern_size"], a.params["pattern_size"])
    assert a.truth.shape == (48, 48) and set(np.unique(a.truth)) == {0, 1, 2, 3}


def test_a_two_modality_draw_scores_joint_modalities_and_peers(two_modalities):
    record = families.run_draw(two_modalities, seed=0, cutoffs=(0.3, 0.9))
    truth = two_modalities.truth
    assert record["n_true"] == np.unique(truth).size
    parts = record["project"]["partitions"]
    assert set(parts) == {"joint", "haadf", "eels"}
    for score in parts.values():
        assert -0.5 < score["ari"] <= 1 and score["n"] >= 1
    # Measured: joint 0.31 on this 16 x 16 scan (0.65 with Leiden's communities as found: with
    # ~60 chips a community, the dip test merges two regions); the flag says what the numbers say.
    assert parts["joint"]["ari"] > 0.2
    best_single = max(parts["haadf"]["ari"], parts["eels"]["ari"])
    assert record["project"]["joint_at_least_best_single"] == (parts["joint"]["ari"] >= best_single - families.TIE)
    assert set(record["graphem"]) == set(graphem.FEATURES)
    assert set(record["graphem"]["reduced"]) == {"haadf", "eels", "haadf+eels"}
    assert set(record["graphem"]["reduced"]["haadf+eels"]) == {"0.3", "0.9"}
    assert set(record["peers"]) == {"hyperspy-gap (eels)", "hyperspy-kmeans (eels)"}
    assert record["peers"]["hyperspy-kmeans (eels)"]["n"] <= record["n_true"]


def test_a_draw_without_peers_scores_the_project_alone(two_modalities):
    alone = families.run_draw(two_modalities, seed=0, with_peers=False)
    full = families.run_draw(two_modalities, seed=0, cutoffs=(0.5,))
    assert alone["graphem"] == {} and alone["peers"] == {} and alone["graphem_seconds"] is None
    assert full["peers"] and full["graphem"]
    # the project's own partitions are the same whether or not the peers run after them
    strip = lambda record: {k: v for k, v in record["project"].items() if k != "seconds"}  # noqa: E731
    assert strip(alone) == strip(full)
    assert alone["n_true"] == full["n_true"]


def test_families_part_without_peers_reports_the_project_alone(tmp_path):
    out = tmp_path / "fam"
    result = CliRunner().invoke(app, ["bench", "--out", str(out), "--quick", "--parts", "families",
                                      "--families", "blind_eels", "--draws", "1", "--no-peers"])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    fam = results["families"]
    assert results["family_peers"] is False and fam["with_peers"] is False
    assert [(d["family"], d["seed"], d["split"]) for d in fam["draws"]] == [("blind_eels", 0, "tune")]
    draw = fam["draws"][0]
    assert draw["peers"] == {} and draw["graphem"] == {}
    entry = fam["summary"]["blind_eels"]["tune"]
    # the project's joint partition and its modalities' own, and no peer
    assert set(entry["methods"]) == {"mmseg joint", "mmseg haadf", "mmseg eels"}
    assert entry["graphem"] == {} and entry["graphem_seconds"] is None
    assert entry["joint_at_least_best_single"] == float(draw["project"]["joint_at_least_best_single"])
    parts = draw["project"]["partitions"]
    assert entry["joint_shortfall"] == max(0.0, max(parts["haadf"]["ari"], parts["eels"]["ari"]) - parts["joint"]["ari"])
    text = (out / "report.md").read_text()
    assert "**Peers not run** (`--no-peers`)" in text and "| blind_eels | 1 tuning |" in text
    assert "GraphEM's cutoff" not in text and "graphem-" not in text and "hyperspy-" not in text
    assert "--parts families --families blind_eels --draws 1 --no-peers`" in text


def test_summary_says_how_far_the_joint_trails_the_best_single_modality():
    def drawn(seed, joint, haadf, eels):
        partitions = {"joint": {"ari": joint, "n": 3}, "haadf": {"ari": haadf, "n": 3}, "eels": {"ari": eels, "n": 3}}
        return {"family": "noisy", "seed": seed, "split": "tune", "n_true": 3, "graphem": {}, "graphem_seconds": None,
                "peers": {}, "project": {"seconds": 1.0, "partitions": partitions,
                                         "joint_at_least_best_single": joint >= max(haadf, eels)}}
    result = {"families": ["noisy"], "draws": [drawn(0, 0.99, 0.97, 1.0), drawn(1, 0.95, 0.98, 0.5),
                                               drawn(2, 0.9, 0.8, 0.7)]}
    entry = families.summarise(result)["noisy"]["tune"]
    assert entry["joint_at_least_best_single"] == pytest.approx(1 / 3)
    assert entry["joint_shortfall"] == pytest.approx(0.03)  # draw 0 trails its EELS by 0.01, draw 1 its HAADF by 0.03
    alone = {"families": ["noisy"], "draws": [drawn(2, 0.9, 0.8, 0.7)]}
    assert families.summarise(alone)["noisy"]["tune"]["joint_shortfall"] == 0.0  # the joint is best: no shortfall
    trailing = {"families": ["noisy"], "draws": [drawn(0, 0.99, 0.97, 1.0)], "seeds": {"tune": [0], "held_out": []},
                "goals": families.GOALS, "segment_seed": 0, "cutoffs": [0.5]}
    row = "\n".join(report.families_section(trailing | {"summary": families.summarise(trailing)}))
    assert "| 0% (trails by ≤ 0.010) |" in row


@pytest.mark.slow
def test_families_part_writes_its_report(tmp_path, monkeypatch):
    # Two GraphEM cutoffs and two image peers (all of them are tested above): a quicker run.
    monkeypatch.setattr(graphem, "CUTOFFS", (0.5, 0.9))
    monkeypatch.setattr(families, "IMAGE_PEERS", ("hyperspy-gap", "felzenszwalb-kmeans"))
    out = tmp_path / "fam"
    result = CliRunner().invoke(app, ["bench", "--out", str(out), "--quick", "--parts", "families",
                                      "--families", "layouts", "--fresh", "1"])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    fam = results["families"]
    fresh = fam["seeds"]["fresh"]
    assert fam["seeds"] == {"tune": [0], "held_out": [10], "fresh": fresh}  # --quick: two draws; one fresh
    assert families.fresh_seeds(1, fam["fresh_entropy"])[0] == fresh
    assert [(d["family"], d["seed"], d["split"]) for d in fam["draws"]] == [
        ("layouts", 0, "tune"), ("layouts", 10, "held_out"), ("layouts", fresh[0], "fresh")]
    assert all("error" not in d for d in fam["draws"])
    assert fam["cutoffs"] == [0.5, 0.9]
    entry = fam["summary"]["layouts"]
    for split in ("tune", "held_out", "fresh"):
        e = entry[split]
        assert e["n_draws"] == 1 and e["joint_at_least_best_single"] is None  # one image: no fusion
        assert set(e["methods"]) == {"mmseg joint", *families.IMAGE_PEERS}
        joint = e["methods"]["mmseg joint"]["ari"]
        assert e["goals"]["mean_ari"] == (joint["mean"] >= families.GOALS["mean_ari"])
        assert e["goals"]["worst_ari"] == (joint["worst"] >= families.GOALS["worst_ari"])
    # GraphEM's cutoff is chosen on the tuning draw and scored on the held-out and fresh ones.
    tuned = entry["graphem_tuned"]["reduced"]
    assert tuned["c"] == entry["tune"]["graphem"]["reduced"]["haadf"]["best_c"]
    for split in ("held_out", "fresh"):
        assert tuned[split] == entry[split]["graphem"]["reduced"]["haadf"]["by_cutoff"][tuned["c"]]
    text = (out / "report.md").read_text()
    for needle in ("## Phantom families", "### Goals (issue 9)", "held-out draws", "tuning draws", "fresh draws",
                   f"entropy {fam['fresh_entropy']}", "| layouts | 1 fresh |",
                   "GraphEM's cutoff", "(told k)",
                   f"--parts families --families layouts --fresh 1 --fresh-entropy {fam['fresh_entropy']}"):
        assert needle in text, needle
    assert "reached" in text and "--methods" not in text and "Methods:" not in text  # no quality part run
    assert (out / "families.png").stat().st_size > 0


def test_families_options_need_the_families_part(tmp_path):
    with pytest.raises(ParameterError, match="families part") as info:
        runner.run_bench(None, tmp_path, parts=["speed"], draws=3)
    assert info.value.where == "draws"
    with pytest.raises(ParameterError, match="fresh, fresh_entropy apply to the families part") as info:
        runner.run_bench(None, tmp_path, parts=["speed"], fresh=3, fresh_entropy=7)
    assert info.value.where == "fresh"
    with pytest.raises(ParameterError) as info:
        runner.run_bench(None, tmp_path, parts=["families"], fresh=-1)
    assert info.value.where == "fresh"
    with pytest.raises(ParameterError, match="no fresh draws") as info:  # --quick draws none by default
        runner.run_bench(None, tmp_path, parts=["families"], quick=True, fresh_entropy=7)
    assert info.value.where == "fresh_entropy"
    with pytest.raises(ParameterError, match=r"family_peers=False \(--no-peers\) apply to the families part") as info:
        runner.run_bench(None, tmp_path, parts=["speed"], family_peers=False)
    assert info.value.where == "family_peers"
    with pytest.raises(ParameterError, match="unknown phantom families"):
        runner.run_bench(None, tmp_path, parts=["families"], family_names=["grains"])
    assert not (tmp_path / "results.json").exists()


# --------------------------------------------------------------------------- chip scale


def test_chip_sizes_span_half_to_twice():
    assert chip_sizes(32, (0.5, 0.71, 1.0, 1.41, 2.0), 512) == [16, 23, 32, 45, 64]
    assert chip_sizes(12, (0.5, 2.0), 20) == [8, 12, 20]  # at least MIN_CHIP, at most the image
    with pytest.raises(ParameterError):
        chip_sizes(32, (0, 1), 64)


def test_chip_scale_part_reports_ari_against_chip_size(haadf, tmp_path, monkeypatch):
    monkeypatch.setitem(runner.SIZES, "chip_scale_draws", ([], []))  # no 512 px family draws here
    monkeypatch.setitem(runner.SIZES, "chip_factors", ((0.5, 2.0), (0.5, 2.0)))
    item = LabelledImage("super", "haadf-192", haadf.image.astype(np.float32), haadf.truth.astype(np.int64), 4)
    (row,) = runner.run_chip_scale([item], quick=False)
    assert row["group"] == "super" and "error" not in row
    assert row["auto_chip"] == 32  # 192 px: the automatic size (at least 32 px)
    assert [r["chip"] for r in row["rows"]] == [16, 32, 64]
    assert [r["factor"] for r in row["rows"]] == [0.5, 1.0, 2.0]
    aris = [r["ari"] for r in row["rows"]]
    assert row["swing"] == pytest.approx(max(aris) - min(aris))
    direct = chip_sweep(haadf.image, haadf.truth, factors=(1.0,))
    assert direct["rows"][0]["ari"] == pytest.approx(aris[1])  # the automatic size is the default run
    text = "\n".join(report.chip_scale_section([row]))
    assert "## ARI against chip size" in text and "32*" in text
    assert report.chip_scale_figure({"chip_scale": [row]}, tmp_path) == "chip_scale.png"
