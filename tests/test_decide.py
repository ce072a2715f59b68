"""The data-driven number of communities (graphs.decide): noise splits and gradients
dissolve, two populations stay apart, and every merge is recorded."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import multimodal_seg as mms
from multimodal_seg.metrics import adjusted_rand
from multimodal_seg.errors import ParameterError
from multimodal_seg.graphs.communities import partition_graph
from multimodal_seg.graphs.decide import (
    discriminant_axis,
    effective_size,
    even_quantiles,
    evenly_spread,
    MIN_TEST_CHIPS,
    decide_communities,
    decision_margin,
    format_pvalue,
    describe_decision,
    merge_indistinct,
    merge_untold,
    spaced_chips,
    unimodality_pvalue,
)
from multimodal_seg.graphs.knn import knn_graph


def _split(features: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Two communities cut across the cloud at its median along ``axis`` (what modularity
    does to a large homogeneous region)."""
    along = features @ axis
    return (along > np.median(along)).astype(int)


def test_a_noise_split_of_one_population_is_merged():
    rng = np.random.default_rng(0)
    cloud = rng.normal(size=(600, 10))  # one homogeneous region: one Gaussian cloud of chips
    labels = _split(cloud, np.eye(10)[0])
    decision = merge_indistinct({"image": cloud}, labels, knn_graph(cloud, k=15, seed=0))
    assert decision.labels.max() == 0
    assert decision.n_before == 2 and decision.to_dict()["n_after"] == 1
    (merge,) = decision.merges
    assert merge["reason"] == "one population (dip test)" and merge["p"] > 0.01
    assert sorted(merge["sizes"]) == [300, 300]


def test_a_slow_gradient_cut_in_two_is_merged():
    # Chips along a ramp (thickness or intensity gradient): a plateau, not two modes.
    rng = np.random.default_rng(1)
    ramp = np.column_stack([rng.uniform(-3, 3, 800), rng.normal(scale=0.3, size=(800, 5))])
    labels = _split(ramp, np.eye(6)[0])
    decision = merge_indistinct({"image": ramp}, labels, knn_graph(ramp, k=15, seed=0))
    assert decision.labels.max() == 0


# The test's power (rejection rate over 10 seeds, 10-D Gaussian clouds, 600 chips beside
# the small one): 3 sd apart, 0.0 / 0.0 / 0.0 / 0.8 for 20 / 60 / 150 / 600 chips; 4 sd,
# 0.3 / 0.9 / 1.0 / 1.0; 5 sd, 0.8 / 1.0 / 1.0 / 1.0; 6 sd, 0.9 / 1.0 / 1.0 / 1.0.  A small
# region is kept only when it is far from its neighbour (docs/design.md, "How many communities").
@pytest.mark.parametrize("n_small,distance", [(20, 5.0), (20, 7.0), (60, 5.0), (150, 4.0)])
def test_two_populations_stay_apart_even_when_one_is_rare(n_small, distance):
    rng = np.random.default_rng(2)
    shift = np.zeros(10)
    shift[3] = distance
    chips = np.concatenate([rng.normal(size=(600, 10)), rng.normal(size=(n_small, 10)) + shift])
    truth = np.r_[np.zeros(600, int), np.ones(n_small, int)]
    graph = knn_graph(chips, k=15, seed=0)
    decision = merge_indistinct({"image": chips}, truth, graph)
    assert decision.labels.max() == 1 and not decision.merges
    assert adjusted_rand(decision.labels, truth) == 1.0
    assert unimodality_pvalue(chips[truth == 0], chips[truth == 1]) < 0.01



def test_the_larger_side_is_represented_by_its_quantiles_and_spread_chips():
    values = np.random.default_rng(0).permutation(100).astype(float)
    np.testing.assert_array_equal(even_quantiles(values, 10), np.arange(5, 100, 10))
    np.testing.assert_array_equal(even_quantiles(values, 100), np.arange(100))  # all, sorted
    np.testing.assert_array_equal(evenly_spread(np.arange(10), 4), [0, 3, 6, 9])
    np.testing.assert_array_equal(evenly_spread(np.arange(3), 4), [0, 1, 2])
    assert effective_size(50, 50) == 100 and effective_size(50, 10**9) == pytest.approx(200)


def test_the_test_is_a_function_of_the_chips_alone_not_of_their_order_or_a_seed():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(500, 6)), rng.normal(size=(40, 6)) + np.r_[3.0, np.zeros(5)]
    p = unimodality_pvalue(a, b)
    assert unimodality_pvalue(a[rng.permutation(500)], b[rng.permutation(40)]) == pytest.approx(p, rel=1e-9)


def test_the_balanced_union_rejects_one_population_at_about_its_level():
    # Uniform (the dip test's least favourable null) on both sides, one side 10 times larger:
    # at the effective size the level holds; judged as 2 n chips it would almost never reject.
    rng = np.random.default_rng(5)
    p = np.array([unimodality_pvalue(rng.uniform(size=(600, 1)), rng.uniform(size=(60, 1))) for _ in range(400)])
    assert 0.02 <= np.mean(p < 0.05) <= 0.10


def test_a_difference_one_modality_sees_keeps_the_pair_apart():
    # Two regions the image cannot tell apart and the spectra can: fusion must keep them.
    rng = np.random.default_rng(4)
    truth = np.repeat([0, 1], 300)
    image = rng.normal(size=(600, 8))
    spectra = rng.normal(size=(600, 8))
    spectra[truth == 1, 0] += 4.0
    graph = knn_graph(np.hstack([image, spectra]), k=15, seed=0)
    alone = merge_indistinct({"image": image}, truth, graph)
    both = merge_indistinct({"image": image, "eels": spectra}, truth, graph)
    assert alone.labels.max() == 0  # the image alone sees one population
    assert both.labels.max() == 1 and adjusted_rand(both.labels, truth) == 1.0


def test_joint_communities_no_modality_tells_apart_are_merged():
    # Two regions the spectra tell apart and the image does not (as above), and a joint
    # partition that also cuts each along two modes of the image which the image's own
    # partition did not keep apart (the `noisy` family's draw 22: a noisy image under an
    # intensity gradient, whose joint partition split the matrix along the ramp).
    rng = np.random.default_rng(4)
    truth = np.repeat([0, 1], 300)
    high = rng.random(600) < 0.5
    image = rng.normal(size=(600, 8))
    image[:, 1] += np.where(high, 3.0, -3.0)
    spectra = rng.normal(size=(600, 8))
    spectra[truth == 1, 0] += 4.0
    joint = 2 * truth + high
    graph = knn_graph(np.hstack([image, spectra]), k=15, seed=0)
    features = {"image": image, "eels": spectra}
    # the dip tests alone keep the image's modes apart
    assert decide_communities(features, joint, graph).labels.max() == 3
    # the image's own partition is one community: the halves of each region differ in nothing
    # either modality shows alone, and only the regions the spectra tell apart stay
    own = {"image": np.zeros(600, int), "eels": truth}
    decision = decide_communities(features, joint, graph, own_partitions=own)
    untold = [m for m in decision.merges if m["reason"] == "no modality's own partition tells them apart"]
    assert len(untold) == 2 and all(m["p"] is None for m in untold)
    assert adjusted_rand(decision.labels, truth) == 1.0
    # the line for people says which rule merged them, not only the dip test's margin
    assert describe_decision(decision.to_dict()).endswith("; also merged: 2 told apart by no modality alone")
    # where the image's own partition tells its modes apart, the four communities stay: each
    # pair is told apart by one modality or the other (complementary modalities)
    told = {"image": high.astype(int), "eels": truth}
    assert decide_communities(features, joint, graph, own_partitions=told).labels.max() == 3
    merged, records = merge_untold(joint, told)
    assert not records and adjusted_rand(merged, joint) == 1.0


def test_communities_too_small_to_test_join_their_most_connected_neighbour():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(200, 6))
    b = rng.normal(size=(200, 6)) + np.r_[6.0, np.zeros(5)]
    stray = a[:MIN_TEST_CHIPS - 1] + 0.01  # a few chips inside a's cloud, a community of their own
    chips = np.concatenate([a, b, stray])
    labels = np.r_[np.zeros(200, int), np.ones(200, int), np.full(len(stray), 2)]
    decision = merge_indistinct({"image": chips}, labels, knn_graph(chips, k=10, seed=0))
    assert decision.labels.max() == 1
    assert decision.merges[0]["reason"] == "too small to test" and decision.merges[0]["p"] is None
    assert (decision.labels[-len(stray):] == decision.labels[0]).all()  # joined a, where they sit


def test_the_decision_records_its_margin_the_p_values_either_side_of_alpha():
    # Three clouds: two halves of one population (a noise split) and a distinct one beside them.
    rng = np.random.default_rng(6)
    one = rng.normal(size=(400, 8))
    other = rng.normal(size=(200, 8)) + np.r_[5.0, np.zeros(7)]
    chips = np.concatenate([one, other])
    labels = np.r_[_split(one, np.eye(8)[1]), np.full(200, 2)]
    decision = merge_indistinct({"image": chips}, labels, knn_graph(chips, k=15, seed=0))
    assert decision.labels.max() == 1
    margin = decision_margin(decision.to_dict())
    (merge,) = decision.merges
    assert margin["alpha"] == 0.01 and margin["last_merged"] == merge["p"] > 0.01
    kept = decision.to_dict()["closest_kept"]
    assert kept["p"] == margin["closest_kept"] < 0.01
    assert sorted(kept["sizes"]) == [200, 400]
    # nothing left to keep apart, nothing merged by the test: no margin on that side
    alone = merge_indistinct({"image": one}, _split(one, np.eye(8)[1]), knn_graph(one, k=15, seed=0))
    alone = decision_margin(alone.to_dict())
    assert alone["closest_kept"] is None and alone["last_merged"] > 0.01
    apart = merge_indistinct({"image": chips}, np.r_[np.zeros(400, int), np.ones(200, int)],
                             knn_graph(chips, k=15, seed=0))
    apart = decision_margin(apart.to_dict())
    assert apart["last_merged"] is None and apart["closest_kept"] < 0.01
    # a record written before the closest pair was kept
    assert decision_margin({"alpha": 0.01, "merges": []})["closest_kept"] is None
    # one line for people; a p-value below the record's six decimals is not shown as 0
    line = describe_decision({**decision.to_dict(), "closest_kept": {"p": 0.0}})
    assert line == (f"Leiden found 3; merged by the dip test at alpha 0.01 (last pair merged "
                    f"p = {merge['p']:.3g}, closest pair kept apart p < 1e-06)")



def test_a_p_value_below_the_records_decimals_reads_as_a_bound_not_zero():
    assert format_pvalue(0.0) == format_pvalue(4e-7, digits=2) == "< 1e-06"
    assert format_pvalue(0.004683, digits=2) == "0.0047"
    assert format_pvalue(0.0415, relation=True) == "= 0.0415"
    assert format_pvalue(1e-6) == "1e-06"


def test_spaced_chips_lie_on_every_step_th_row_and_column_of_each_frame():
    keep = spaced_chips((2, 5, 7), 3).reshape(2, 5, 7)
    expected = np.zeros((5, 7), bool)
    expected[np.ix_([0, 3], [0, 3, 6])] = True
    assert (keep == expected).all()  # both frames alike
    assert spaced_chips((4, 4), 1).all()


def test_only_spaced_chips_count_and_too_few_of_them_cannot_keep_a_community_apart():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(200, 6))
    b = rng.normal(size=(40, 6)) + np.r_[8.0, np.zeros(5)]  # clearly another population
    chips = np.concatenate([a, b])
    labels = np.r_[np.zeros(200, int), np.ones(40, int)]
    graph = knn_graph(chips, k=10, seed=0)
    assert merge_indistinct({"image": chips}, labels, graph).labels.max() == 1  # all tested: apart
    tested = np.ones(240, bool)
    tested[200 + MIN_TEST_CHIPS - 1:] = False  # b keeps too few tested chips to be told apart
    decision = merge_indistinct({"image": chips}, labels, graph, tested=tested)
    assert decision.labels.max() == 0
    (merge,) = decision.merges
    assert merge["reason"] == "too small to test" and sorted(merge["sizes"]) == [40, 200]
    tested[200:] = True  # enough of b again: apart
    assert merge_indistinct({"image": chips}, labels, graph, tested=tested).labels.max() == 1


def test_the_decision_is_reproducible_and_ordered_by_size():
    rng = np.random.default_rng(6)
    chips = np.concatenate([rng.normal(size=(300, 6)), rng.normal(size=(100, 6)) + 5.0])
    labels = np.r_[_split(chips[:300], np.eye(6)[1]) + 1, np.zeros(100, int)]  # 3 communities, 2 of them noise
    graph = knn_graph(chips, k=15, seed=0)
    first = merge_indistinct({"x": chips}, labels, graph)
    again = merge_indistinct({"x": chips}, labels, graph)
    np.testing.assert_array_equal(first.labels, again.labels)
    assert first.merges == again.merges
    assert np.bincount(first.labels).tolist() == [300, 100]


def test_partition_graph_decides_and_refuses_what_it_cannot_do():
    rng = np.random.default_rng(7)
    chips = np.concatenate([rng.normal(size=(500, 6)), rng.normal(size=(500, 6)) + np.r_[5.0, np.zeros(5)]])
    truth = np.repeat([0, 1], 500)
    graph = knn_graph(chips, k=15, seed=0)
    # Resolution 3 over-splits both clouds (27 pieces, a few of them mixed); the decision
    # brings them back to two, each piece going to the cloud most of its chips are in.
    plain = partition_graph(graph, resolution=3.0, seed=0)
    decided = partition_graph(graph, resolution=3.0, seed=0, decide="dip", features={"x": chips})
    assert plain.n_communities > 10
    majority = np.array([np.bincount(truth[plain.labels == c]).argmax() for c in range(plain.n_communities)])
    assert decided.n_communities == 2
    assert adjusted_rand(decided.labels, majority[plain.labels]) == 1.0
    assert decided.decision["n_before"] == plain.n_communities and decided.params["decide"] == "dip"
    assert plain.decision is None
    none = partition_graph(graph, resolution=3.0, seed=0, decide="none")
    np.testing.assert_array_equal(none.labels, plain.labels)
    with pytest.raises(ParameterError, match="features"):
        partition_graph(graph, decide="dip")
    with pytest.raises(ParameterError, match="unknown decision"):
        partition_graph(graph, decide="gap", features={"x": chips})
    with pytest.raises(ParameterError, match="significance level"):
        partition_graph(graph, decide="dip", alpha=1.5, features={"x": chips})


def test_segment_records_what_was_merged_and_decide_none_keeps_leidens(small_phantom, tmp_path):
    kw = dict(pixel_size=small_phantom.pixel_size, units=small_phantom.units, progress=False)
    decided = mms.segment(small_phantom.image, out=tmp_path / "run", **kw)
    kept = mms.segment(small_phantom.image, decide="none", **kw)
    record = decided.provenance["partitions"]["image"]["decision"]
    assert record["method"] == "dip-test" and record["n_after"] == decided.n_communities
    assert record["n_before"] == kept.n_communities == record["n_after"] + len(record["merges"])
    assert kept.provenance["partitions"]["image"]["decision"] is None
    # the pair that came closest to merging was kept apart below alpha
    assert record["closest_kept"]["p"] < record["alpha"]
    # The phantom has 4 regions: the decision finds 4, Leiden alone one more.
    assert decided.n_communities == 4 and decided.agreement(small_phantom.truth)["ari"] > 0.8
    with pytest.raises(ParameterError, match="decide"):
        mms.segment(small_phantom.image, decide="gap", **kw)


def test_seams_of_mixed_chips_without_an_interior_are_dissolved():
    # Two regions side by side on a 12 x 12 chip grid, and a seam one chip wide between
    # them whose chips are mixtures: a community of its own the dip test keeps apart.
    from multimodal_seg.graphs.decide import dissolve_rims, interior_chips

    rng = np.random.default_rng(8)
    grid = (12, 12)
    truth = np.zeros(grid, int)
    truth[:, 6:] = 1
    labels = truth.copy()
    labels[:, 6] = 2  # the seam
    left, right = np.r_[4.0, 0, 0, 0], np.r_[-4.0, 0, 0, 0]
    chips = np.where((truth == 0).ravel()[:, None], left, right) + rng.normal(scale=0.5, size=(144, 4))
    chips[labels.ravel() == 2] = 0.5 * (left + right) + rng.normal(scale=0.5, size=(12, 4))
    graph = knn_graph(chips, k=8, seed=0)
    assert not interior_chips(labels)[labels == 2].any() and interior_chips(labels)[labels == 0].any()
    dissolved, records = dissolve_rims(labels.ravel(), graph, grid)
    assert dissolved.max() == 1 and len(records) == 1 and records[0]["sizes"] == [12]
    assert adjusted_rand(dissolved, truth.ravel()) > 0.7  # seam chips went to one side or the other
    # A region three chips thick has interior chips and stays (two are still all edge).
    thick = truth.copy()
    thick[:, 6:9] = 2
    kept, none = dissolve_rims(thick.ravel(), graph, grid)
    assert kept.max() == 2 and none == []
    with pytest.raises(ValueError, match="chip grid"):
        dissolve_rims(labels.ravel(), graph, (5, 5))


def test_on_a_dense_grid_a_seam_is_measured_in_half_chips():
    # Chips every third of a chip straddle a boundary over three grid steps: a seam three
    # steps wide has interior chips at one step of reach, none at half a chip (2 steps).
    from multimodal_seg.graphs.decide import dissolve_rims, interior_chips

    grid = (15, 15)
    labels = np.zeros(grid, int)
    labels[:, 9:] = 1
    labels[:, 6:9] = 2  # the seam of chips that straddle the boundary
    assert interior_chips(labels)[labels == 2].any()
    assert not interior_chips(labels, 2)[labels == 2].any() and interior_chips(labels, 2)[labels == 1].any()
    graph = _grid_graph(*grid)
    kept, none = dissolve_rims(labels.ravel(), graph, grid)
    assert kept.max() == 2 and none == []
    dissolved, records = dissolve_rims(labels.ravel(), graph, grid, reach=2)
    assert dissolved.max() == 1 and records[0]["sizes"] == [45]
    # a region five steps wide (2.5 chips) keeps its interior at that reach
    wide = labels.copy()
    wide[:, 4:9] = 2
    assert dissolve_rims(wide.ravel(), graph, grid, reach=2)[1] == []


def test_frames_of_one_grid_have_interiors_of_their_own():
    # A series: two frames of a 6 x 6 grid, stacked.  Community 2 is a seam one chip wide in
    # frame 0 and a thick region in frame 1 (a growing phase): it has an interior, so it stays.
    # Frames are not neighbours: a chip is not interior because the frame before agrees.
    from multimodal_seg.graphs.decide import dissolve_rims, interior_chips

    frames = np.zeros((2, 6, 6), int)
    frames[:, :, 3:] = 1
    frames[0, :, 3] = 2
    frames[1, :, 2:5] = 2
    inside = interior_chips(frames)
    assert not inside[0][frames[0] == 2].any() and inside[1][frames[1] == 2].any()
    np.testing.assert_array_equal(inside[0], interior_chips(frames[0]))
    graph = _grid_graph(12, 6)  # frames one above the other (the graph only says where dissolved chips go)
    kept, records = dissolve_rims(frames.ravel(), graph, (2, 6, 6))
    assert records == [] and kept.max() == 2
    # Only the seam frame: community 2 is dissolved.
    dissolved, records = dissolve_rims(frames[0].ravel(), _grid_graph(6, 6), (6, 6))
    assert len(records) == 1 and dissolved.max() == 1


def _grid_graph(rows: int, cols: int) -> sp.csr_matrix:
    """4-neighbour adjacency of a chip grid, row-major, unit weights."""
    index = np.arange(rows * cols).reshape(rows, cols)
    pairs = np.concatenate([np.column_stack([index[:, :-1].ravel(), index[:, 1:].ravel()]),
                            np.column_stack([index[:-1].ravel(), index[1:].ravel()])])
    upper = sp.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(rows * cols,) * 2)
    return (upper + upper.T).tocsr()


@pytest.mark.parametrize("gap", [0.0, 6.0])
def test_halves_parted_by_a_seam_are_tested_again_once_it_is_dissolved(gap):
    # One region under a ramp (gap 0), or two regions (gap 6 sd), cut at the middle by a
    # seam two chips wide whose chips are a population of their own (mixed chips).  The
    # halves share no edge while the seam lies between them, so only once the seam is
    # dissolved can the dip test see that the ramp's halves are one population.
    rows, cols = 16, 32
    rng = np.random.default_rng(3)
    column = np.tile(np.arange(cols), rows)
    features = np.column_stack([column / cols * 3 + gap * (column >= cols // 2), rng.normal(scale=0.2, size=(rows * cols, 4))])
    seam = np.isin(column, [cols // 2 - 1, cols // 2])
    features[seam, 1] += 10.0
    labels = np.where(seam, 2, (column >= cols // 2).astype(int))
    graph = _grid_graph(rows, cols)
    # a single pass would stop here: the seam dissolved, the halves apart
    merged = merge_indistinct({"image": features}, labels, graph)
    assert merged.labels.max() == 2 and not merged.merges
    decision = decide_communities({"image": features}, labels, graph, grid_shape=(rows, cols))
    reasons = [m["reason"].split(" (")[0] for m in decision.merges]
    if gap == 0:
        assert decision.labels.max() == 0
        assert reasons == ["no interior chip", "one population"]
    else:
        assert decision.labels.max() == 1 and reasons == ["no interior chip"]
        assert adjusted_rand(decision.labels, (column >= cols // 2).astype(int)) == 1.0


# ---------------------------------------------------------------- mixtures of two neighbours


def _layered(middle, *, rows=30, cols=40, width=4, dim=8, seed=0):
    """Chips of a grid: region A (left), a band of ``width`` columns, region B (right).
    ``middle(w, rng)`` gives the band's features at mixing fraction ``w`` (0 at A's edge,
    1 at B's), ``(rows, dim)``.  Returns labels (A 0, band 1, B 2), features, grid shape."""
    rng = np.random.default_rng(seed)
    mean_a, mean_b = np.zeros(dim), np.r_[6.0, np.zeros(dim - 1)]
    left = (cols - width) // 2
    labels = np.zeros((rows, cols), dtype=np.int64)
    labels[:, left:left + width] = 1
    labels[:, left + width:] = 2
    x = np.empty((rows, cols, dim))
    x[:, :left] = mean_a + rng.normal(0, 0.5, (rows, left, dim))
    x[:, left + width:] = mean_b + rng.normal(0, 0.5, (rows, cols - left - width, dim))
    for k in range(width):
        x[:, left + k] = middle((k + 0.5) / width, rng, mean_a, mean_b)
    return labels, {"m": x.reshape(rows * cols, dim)}, (rows, cols), left


def test_a_seam_of_mixed_chips_between_two_regions_is_dissolved_into_them():
    from multimodal_seg.graphs.decide import dissolve_mixtures

    def mixed(w, rng, a, b):  # a probe over both: the mixing fraction runs across the seam
        return (1 - w) * a + w * b + rng.normal(0, 0.5, (30, a.size))

    labels, features, grid, left = _layered(mixed)
    out, records = dissolve_mixtures(features, labels.ravel(), grid)
    out = out.reshape(grid)
    assert len(records) == 1 and "mixture" in records[0]["reason"] and records[0]["p"] < 0.01
    assert np.unique(out).size == 2
    # each seam chip joins the side its mixing fraction is nearer (noise moves a few of the
    # chips at 3/8 and 5/8 across the middle)
    assert (out[:, left:left + 2] == out[0, 0]).mean() > 0.9
    assert (out[:, left + 2:left + 4] == out[0, -1]).mean() > 0.9


def test_a_layer_between_two_regions_that_is_a_population_of_its_own_is_kept():
    from multimodal_seg.graphs.decide import dissolve_mixtures

    def intermediate(w, rng, a, b):  # one composition halfway between, as noisy as its neighbours
        return (a + b) / 2 + rng.normal(0, 0.5, (30, a.size))

    def other(w, rng, a, b):  # a third material, off the line between them
        return (a + b) / 2 + np.r_[0.0, 5.0, np.zeros(a.size - 2)] + rng.normal(0, 0.5, (30, a.size))

    for middle in (intermediate, other):
        labels, features, grid, _ = _layered(middle)
        out, records = dissolve_mixtures(features, labels.ravel(), grid)
        assert records == [] and np.unique(out).size == 3


def test_seams_of_a_4d_stem_phantom_are_dissolved_and_recorded():
    # the thickness family: a probe wider than the scan step makes seams of mixed patterns
    # 2-3 positions wide along every boundary; before this rule each draw had 7-8
    # communities for its 4 regions
    from multimodal_seg.bench.methods import run_project
    from multimodal_seg.synthetic.families import draw

    specimen = draw("thickness", 3)
    seg, _ = run_project(specimen.modalities, seed=0)
    merges = seg.provenance["partitions"]["diffraction"]["decision"]["merges"]
    assert any("mixture of its neighbours" in m["reason"] for m in merges)
    assert seg.n_communities <= 5
    assert adjusted_rand(specimen.truth, seg.scan_labels["diffraction"]) >= 0.85


def test_seams_are_dissolved_in_every_frame_of_a_series():
    # a series' chips are frame after frame on one grid: communities touch within a frame only
    from multimodal_seg.graphs.decide import dissolve_mixtures

    def mixed(w, rng, a, b):
        return (1 - w) * a + w * b + rng.normal(0, 0.5, (30, a.size))

    frames = [_layered(mixed, seed=seed) for seed in (0, 1)]
    labels = np.stack([f[0] for f in frames])
    features = {"m": np.concatenate([f[1]["m"] for f in frames])}
    out, records = dissolve_mixtures(features, labels.ravel(), (2, 30, 40))
    assert len(records) == 1 and np.unique(out).size == 2


def test_seams_found_as_mixtures_set_how_thin_a_community_can_be_resolved():
    # A | seam of A-B mixtures (4 columns) | B | T (4 columns, a population of its own) | C.
    # The mixture seam shows that mixing reaches 2 grid steps deep in these data, so T, no
    # deeper, is below what they resolve and is dissolved as a seam too; without the mixture
    # seam (mixing not shown to reach that deep) the same T is kept.
    rng = np.random.default_rng(0)
    rows, dim = 30, 8
    mean = {"A": np.zeros(dim), "B": np.r_[6.0, np.zeros(dim - 1)], "C": np.r_[0.0, 6.0, np.zeros(dim - 2)],
            "T": np.r_[3.0, 3.0, 5.0, np.zeros(dim - 3)]}

    def specimen(with_seam: bool):
        parts = [("A", 16), ("S", 4 if with_seam else 0), ("B", 16), ("T", 4), ("C", 16)]
        labels, columns = [], []
        for k, (name, width) in enumerate(parts):
            for j in range(width):
                if name == "S":  # mixing fractions 0.35 ... 0.65 across the seam (a wide probe)
                    w = 0.3 + 0.4 * (j + 0.5) / width
                    centre = (1 - w) * mean["A"] + w * mean["B"]
                else:
                    centre = mean[name]
                columns.append(centre + rng.normal(0, 0.5, (rows, dim)))
                labels.append(k)
        x = np.stack(columns, axis=1)  # (rows, cols, dim)
        grid = (rows, x.shape[1])
        return np.tile(np.asarray(labels), (rows, 1)).ravel(), x.reshape(-1, dim), grid

    for with_seam in (True, False):
        labels, x, grid = specimen(with_seam)
        graph = knn_graph(x, k=10)
        result = decide_communities({"m": x}, labels, graph, grid_shape=grid)
        reasons = [m["reason"] for m in result.merges]
        kept = np.unique(result.labels).size
        if with_seam:
            assert any("mixture" in r for r in reasons) and any("interior" in r for r in reasons)
            assert kept == 3  # A, B, C
        else:
            assert not any("mixture" in r for r in reasons)
            assert kept == 4  # A, B, T, C


def _ring_under_a_ramp(jump: float, *, seed: int = 0, n: int = 40):
    """A grid of chips: a ring region around a core of another material, under a slow ramp
    across the columns (a thickness wedge), cut in two down the middle (labels 0 and 1; the
    core is 2).  The ring's two sides sit at two heights of the ramp, so its chips have two
    modes along it although the ring is one material.  ``jump`` is added to the right side
    (0: one material; > 0: two materials whose edge lies where the cut is)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((n, n), dtype=int)
    labels[:, n // 2:] = 1
    core = np.zeros((n, n), dtype=bool)
    core[5:n - 5, n // 4:3 * n // 4] = True
    labels[core] = 2
    along = np.tile(np.linspace(-3.0, 3.0, n), (n, 1)) + jump * (labels == 1)
    features = np.column_stack([along.ravel(), rng.normal(0, 0.3, (n * n, 3))])
    features[:, 0] += rng.normal(0, 0.3, n * n)
    features[core.ravel(), 1] += 10.0
    return labels.ravel(), {"m": features}, (n, n)


def test_a_ring_cut_along_its_ramp_is_one_region_again():
    from multimodal_seg.graphs.decide import (jump_share, merge_continuous, neighbour_pairs, step_ratio,
                                              unimodality_pvalue)

    labels, features, grid = _ring_under_a_ramp(0.0)
    f = features["m"]
    # the dip test sees the ring's two sides as two populations (two heights of the ramp)
    assert unimodality_pvalue(f[labels == 0], f[labels == 1]) < 0.01
    out, records = merge_continuous(features, labels, grid, seed=0)
    (record,) = records
    assert sorted(record["sizes"]) == [500, 500] and np.unique(out).size == 2  # the core stays
    assert "continuous across their boundary" in record["reason"] and record["step_ratio"] <= 2.0
    # the statistics themselves: steps across about those of noise straddling a cut, and the
    # trend through both sides explains their difference
    ramp = f[:, 0]
    bound = step_ratio(ramp, labels, neighbour_pairs(grid), 0, 1, np.random.default_rng(0), level=0.01)
    rows, cols = np.unravel_index(np.arange(labels.size), grid)
    assert 0.5 < bound < 2.0 and jump_share(ramp, labels, rows, cols, 0, 1) < 0.2


@pytest.mark.parametrize("jump", [1.5, 3.0])
def test_two_materials_under_one_ramp_stay_apart(jump):
    # the same ring with an edge where the cut is: the features jump across it (a jump of
    # 1.5 is a quarter of the ramp's range and 5 times the noise)
    from multimodal_seg.graphs.decide import merge_continuous

    labels, features, grid = _ring_under_a_ramp(jump)
    out, records = merge_continuous(features, labels, grid, seed=0)
    assert records == [] and np.unique(out).size == 3


def test_a_short_contact_is_no_evidence_of_continuity():
    # one field under a ramp across the columns, cut into two blocks that touch along 3 chips
    # only: too few steps across to judge, so the rule does not merge them
    from multimodal_seg.graphs.decide import MIN_TEST_CHIPS, merge_continuous, neighbour_pairs, step_ratio

    def field(labels):
        rng = np.random.default_rng(0)
        ramp = np.tile(np.linspace(-3.0, 3.0, 20), (20, 1)).ravel()
        features = np.column_stack([ramp, rng.normal(0, 0.3, (400, 3))])
        features[:, 0] += rng.normal(0, 0.3, 400)
        features[labels.ravel() == 2, 1] += 20.0  # the rest is another material: it merges with neither
        return {"m": features}

    labels = np.full((20, 20), 2)
    labels[:10, :10] = 0
    labels[7:17, 10:] = 1
    ends = labels.ravel()[neighbour_pairs((20, 20))]
    assert int((np.sort(ends, axis=1) == [0, 1]).all(axis=1).sum()) == 3 < MIN_TEST_CHIPS
    features = field(labels)
    out, records = merge_continuous(features, labels.ravel(), (20, 20), seed=0)
    assert records == [] and np.unique(out).size == 3
    assert step_ratio(features["m"][:, 0], labels.ravel(), neighbour_pairs((20, 20)), 0, 1,
                      np.random.default_rng(0), level=0.01) is None


def test_a_weak_edge_between_two_flat_regions_is_no_ramp():
    # two flat materials whose difference is about the noise: locally the boundary steps
    # little more than noise does, but nothing trends through either side, so the whole
    # difference is the edge and they stay apart
    from multimodal_seg.graphs.decide import jump_share, merge_continuous

    rng = np.random.default_rng(0)
    labels = np.zeros((30, 40), dtype=int)
    labels[:, 20:] = 1
    features = rng.normal(0, 1.0, (1200, 4))
    features[labels.ravel() == 1, 0] += 1.0
    out, records = merge_continuous({"m": features}, labels.ravel(), (30, 40), seed=0)
    assert records == [] and np.unique(out).size == 2
    rows, cols = np.unravel_index(np.arange(1200), (30, 40))
    assert jump_share(features[:, 0], labels.ravel(), rows, cols, 0, 1) > 0.8


def test_a_gradient_phantom_cut_along_its_ramp_is_one_region_again():
    # gradient-family draw 5 (a tuning draw): its outer region, under a ramp of 0.48 of the
    # mean thickness, was cut in two along it (4 communities for 3 regions, ARI 0.55)
    from multimodal_seg.bench.methods import run_project
    from multimodal_seg.synthetic.families import draw

    specimen = draw("gradient", 5)
    seg, _ = run_project(specimen.modalities, seed=0)
    merges = seg.provenance["partitions"]["haadf"]["decision"]["merges"]
    assert any("continuous across their boundary" in m["reason"] for m in merges)
    assert seg.n_communities == 3
    assert adjusted_rand(specimen.truth, seg.pixel_labels) >= 0.9


def test_the_discriminant_axis_is_scikit_learns_shrinkage_lda():
    # written out from its parts for speed; it must stay the estimator's axis
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    rng = np.random.default_rng(3)
    for n_a, n_b, d in [(80, 50, 30), (12, 200, 8), (5, 6, 20)]:
        a = rng.normal(size=(n_a, d)) * rng.uniform(0.1, 3, d)
        b = rng.normal(size=(n_b, d)) * rng.uniform(0.1, 3, d) + rng.normal(0, 0.5, d)
        a[:, 0] = b[:, 0] = 1.0  # a constant feature
        lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")
        coef = lda.fit(np.concatenate([a, b]), np.r_[np.zeros(n_a), np.ones(n_b)]).coef_.ravel()
        np.testing.assert_allclose(discriminant_axis(a, b), coef / np.linalg.norm(coef), atol=1e-10)
    # too few chips to estimate a covariance: the mean difference
    axis = discriminant_axis(np.zeros((2, 3)), np.array([[0.0, 3.0, 4.0]]))
    np.testing.assert_allclose(axis, [0.0, -0.6, -0.8])


def test_a_memo_shared_by_decisions_changes_no_decision_and_estimates_each_covariance_once(monkeypatch):
    import multimodal_seg.graphs.decide as decide

    labels, features, grid = _ring_under_a_ramp(0.0)
    graph = _grid_graph(*grid)
    alone = decide.decide_communities(features, labels, graph, grid_shape=grid)
    estimated, original = [], decide.shrunk_covariance

    def counted(x: np.ndarray) -> np.ndarray:
        estimated.append(len(x))
        return original(x)

    monkeypatch.setattr(decide, "shrunk_covariance", counted)
    memo = decide.Memo()
    first = decide.decide_communities(features, labels, graph, grid_shape=grid, memo=memo)
    after_first = len(estimated)
    second = decide.decide_communities(features, labels, graph, grid_shape=grid, memo=memo)
    for shared in (first, second):
        np.testing.assert_array_equal(shared.labels, alone.labels)
        assert shared.merges == alone.merges
    assert after_first == len(memo.covariances) > 0  # each distinct set of chips once ...
    assert len(estimated) == after_first  # ... and none again for a decision already made
    assert memo.pvalues and set(memo.means) == set(memo.covariances)  # each set's mean beside its covariance


def test_the_pooled_covariance_is_solved_directly_where_well_conditioned_else_by_least_squares():
    """The direct solve gives least squares' answer where the covariance is well conditioned,
    and a near-singular one (fewer chips than features, no shrinkage) goes to least squares,
    whose minimum-norm answer a direct solve would not give."""
    import scipy.linalg

    from multimodal_seg.graphs.decide import solve_covariance

    rng = np.random.default_rng(3)
    difference = rng.normal(size=30)
    chips = rng.normal(size=(200, 30)) * rng.uniform(0.5, 2.0, size=30)
    conditioned = np.cov(chips.T) + 0.1 * np.eye(30)
    np.testing.assert_allclose(solve_covariance(conditioned, difference),
                               scipy.linalg.lstsq(conditioned, difference)[0], rtol=1e-10, atol=1e-12)
    singular = np.cov(rng.normal(size=(3, 30)).T)  # rank 2
    least = scipy.linalg.lstsq(singular, difference)[0]
    np.testing.assert_array_equal(solve_covariance(singular, difference), least)
    assert np.abs(np.linalg.solve(singular + 1e-12 * np.eye(30), difference)).max() > 1e3 * np.abs(least).max()


def test_a_memo_needs_the_keys_it_finds_covariances_by():
    """Without keys a memo could not tell two chip sets apart: asking for one is an error,
    not a memo silently left unused."""
    from multimodal_seg.graphs.decide import Memo

    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(40, 5)), rng.normal(1.0, 1.0, size=(30, 5))
    with pytest.raises(ValueError, match="keys"):
        discriminant_axis(a, b, memo=Memo())
    memo = Memo()
    keyed = discriminant_axis(a, b, memo=memo, keys=(("m", b"a"), ("m", b"b")))
    np.testing.assert_allclose(keyed, discriminant_axis(a, b), atol=1e-12)
    assert set(memo.covariances) == {("m", b"a"), ("m", b"b")}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_ledoit_wolf_covariance_is_scikit_learns_to_the_last_bit(dtype):
    """Written out without scikit-learn's input checks, the estimate is its estimate bit for
    bit: many chips and few, more features than chips, a constant feature, one feature,
    repeated chips (no spread left to shrink)."""
    from sklearn.covariance import ledoit_wolf

    from multimodal_seg.graphs.decide import ledoit_wolf_covariance

    rng = np.random.default_rng(5)
    cases = []
    for n, d in [(3, 30), (5, 2), (200, 30), (50, 1), (1000, 12), (300, 60)]:
        x = rng.normal(size=(n, d)) * rng.uniform(0.1, 10.0, size=d)
        constant = x.copy()
        constant[:, 0] = 2.0
        cases += [x, constant, np.repeat(x[:2], n // 2 + 1, axis=0)[:n]]
    for x in cases:
        x = x.astype(dtype)
        expected = ledoit_wolf(x)[0]
        got = ledoit_wolf_covariance(x)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
