"""LeidenClustering: the graph and community step as a scikit-learn estimator, in HyperSpy."""

from __future__ import annotations

import hyperspy.api as hs
import numpy as np
import pytest
from sklearn.base import clone

import multimodal_seg as mms
from multimodal_seg import stages
from multimodal_seg.config import CommunityConfig, GraphConfig
from multimodal_seg.errors import InputError, ParameterError
from multimodal_seg.hyperspy import LeidenClustering
from multimodal_seg.metrics import adjusted_rand
from multimodal_seg.synthetic.multimodal import multimodal_phantom

SCAN = (32, 32)


@pytest.fixture(scope="module")
def phantom():
    return multimodal_phantom(SCAN, seed=0, pattern_size=16, n_channels=400)


def _chemistry(phantom) -> np.ndarray:
    """The truth EELS can see: the two grains of phase A share one spectrum."""
    return np.where(phantom.truth == 1, 0, phantom.truth)


def test_a_scikit_learn_estimator_with_the_pipelines_defaults():
    est = LeidenClustering()
    params = est.get_params()
    assert params["k"] == GraphConfig().k and params["n_pcs"] == GraphConfig().n_pcs
    assert params["resolution"] == CommunityConfig().resolution
    assert params["consensus"] == CommunityConfig().consensus and params["seed"] == 0
    copy = clone(est.set_params(resolution=0.5, k=10))
    assert copy.get_params()["resolution"] == 0.5 and copy.get_params()["k"] == 10
    assert not hasattr(copy, "labels_")


def test_finds_planted_groups_without_being_told_how_many():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=4.0, size=(4, 20))
    truth = np.repeat(np.arange(4), [120, 90, 60, 30])
    x = centres[truth] + rng.normal(size=(truth.size, 20))
    est = LeidenClustering(consensus=5, seed=1)
    labels = est.fit_predict(x)
    assert labels is est.labels_ and labels.shape == truth.shape
    assert adjusted_rand(labels, truth) == 1.0 and est.n_clusters_ == 4
    assert np.bincount(labels).tolist() == [120, 90, 60, 30]  # 0 is the largest
    assert est.graph_.shape == (truth.size, truth.size) and 0 < est.modularity_ < 1
    assert est.run_counts_ == {4: 5}  # every run ended with the 4 groups
    np.testing.assert_array_equal(LeidenClustering(consensus=5, seed=1).fit(x).labels_, labels)
    assert LeidenClustering(consensus=0).fit(x).run_counts_ is None  # one run: no consensus


def test_agrees_with_segment_on_the_same_features(phantom):
    options = {"k": 12, "n_pcs": 20, "seed": 2}
    study = mms.Study.open()
    stages.add_modalities(study, {"eels": phantom.modalities()["eels"]})
    stages.lay_chips(study)
    stages.embed(study, seed=options["seed"], progress=False)
    stages.build_graphs(study, **options)
    stages.find_communities(study, resolution=0.8, consensus=5, seed=options["seed"])
    stages.fuse(study)
    seg = stages.collect(study)
    standardise = study.attrs_of("embeddings/eels").get("standardise", True)
    est = LeidenClustering(**options, standardise=standardise, resolution=0.8, consensus=5,
                           grid_shape=seg.chip_labels.shape)
    np.testing.assert_array_equal(est.fit(seg.embeddings).labels_, seg.chip_labels.ravel())
    # The same through HyperSpy: the chip features as a signal, clustered by cluster_analysis.
    rows, cols = seg.chip_labels.shape
    features = hs.signals.Signal1D(seg.embeddings.reshape(rows, cols, -1))
    features.cluster_analysis("signal", preprocessing=None, algorithm=clone(est))
    found = features.learning_results.cluster_labels.argmax(axis=0)
    assert features.learning_results.number_of_clusters == seg.n_communities
    assert adjusted_rand(found, seg.chip_labels.ravel()) == 1.0


def test_hyperspy_decomposition_workflow_finds_the_chemistry(phantom):
    eels = hs.signals.Signal1D(np.asarray(phantom.eels))
    eels.set_signal_type("EELS")
    # Thickness scales every count: spectra per total counts compare chemistry alone.
    normalised = eels / eels.sum(-1).data[..., None]
    normalised.decomposition(normalize_poissonian_noise=True, output_dimension=16, print_info=False)
    # Enough components that one phase is one round cloud, not a curve a kNN graph cuts into
    # pieces (docs/hyperspy.md: with the 4 significant ones Leiden over-splits).
    normalised.cluster_analysis("decomposition", number_of_components=16, algorithm=LeidenClustering())
    labels = normalised.learning_results.cluster_labels.argmax(axis=0).reshape(SCAN)
    assert normalised.learning_results.number_of_clusters == 3
    assert adjusted_rand(labels, _chemistry(phantom)) > 0.9


@pytest.mark.parametrize("x,needle", [
    (np.ones(10), "shape (10,)"),
    (np.ones((1, 4)), "n_samples >= 2"),
    (np.ones((5, 3), complex), "complex"),
    (np.array([[0.0, 1], [np.nan, 2], [3, 4]]), "NaN or infinite"),
    (np.array([["a", "b"], ["c", "d"]]), "not numbers"),
])
def test_bad_features_are_refused(x, needle):
    with pytest.raises(InputError, match="LeidenClustering.fit") as info:
        LeidenClustering().fit(x)
    assert needle in str(info.value) and "fix:" in str(info.value)


@pytest.mark.parametrize("params,needle", [
    ({"k": 0}, "'k'"), ({"resolution": -1.0}, "'resolution'"), ({"method": "kmeans"}, "'method'"),
    ({"merge": 2.0}, "'merge'"),
])
def test_bad_options_are_refused(params, needle):
    x = np.random.default_rng(0).normal(size=(30, 5))
    with pytest.raises(ParameterError, match="LeidenClustering") as info:
        LeidenClustering(**params).fit(x)
    assert needle in str(info.value)


def test_a_grid_that_does_not_hold_the_samples_is_refused():
    x = np.random.default_rng(0).normal(size=(30, 5))
    for bad in [(4, 4), (30,), "5x6", (5, None)]:
        with pytest.raises(InputError, match="grid_shape") as info:
            LeidenClustering(grid_shape=bad).fit(x)
        assert "30 samples" in str(info.value) and "navigation_shape" in str(info.value)
