"""Position-pooling encoders: each scan position encoded once gives the chip-by-chip result."""

from __future__ import annotations

import dask
import numpy as np
import pytest

from multimodal_seg.chips.grid import ChipGrid, iter_chips
from multimodal_seg.analysis.descriptors import chip_statistics
from multimodal_seg.encoders import get_encoder
from multimodal_seg.synthetic.multimodal import multimodal_phantom
from multimodal_seg.encoders.pooling import position_map


@pytest.fixture(scope="module")
def scan():
    """The phantom's 4D-STEM cube: Bragg discs, rings, descan, Poisson noise."""
    return np.asarray(multimodal_phantom((16, 16), pattern_size=32, seed=2).diffraction, dtype=np.float32)


@pytest.mark.parametrize("size, stride", [(4, 2), (3, 1), (4, 4)])
def test_pooled_embeddings_equal_chip_by_chip_encoding(scan, size, stride):
    encoder = get_encoder("diffraction-profiles")
    grid = ChipGrid(scan.shape[:2], size, stride)
    chips = np.concatenate([c for _, c in iter_chips(scan, grid.origins, size)])
    with dask.config.set({"array.chunk-size": 5 * 16 * 32 * 32 * 4}):  # 5-row bands, one task each
        embeddings, stats = position_map(scan, encoder).pool(grid.origins, size, encoder)
    np.testing.assert_allclose(embeddings, encoder.encode(chips), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats, chip_statistics(chips), rtol=1e-4)


def test_only_pooling_encoders_take_the_per_position_path():
    assert get_encoder("diffraction-profiles").pools_positions
    # the convnets over spectra and patterns embed a chip as its positions' mean too
    assert get_encoder("diffraction-cnn", weights="random").pools_positions
    assert get_encoder("spectrum-cnn", weights="random").pools_positions
    # the PCA encoder pools its scores' moments (a chip's spread from means of squares)
    assert get_encoder("spectrum-pca").pools_positions
    # the image encoders see chips whole
    assert not get_encoder("fourier").pools_positions
    assert not get_encoder("image-cnn", weights="random").pools_positions


def test_position_spans_cover_the_scan_in_whole_batches():
    from multimodal_seg.encoders.pooling import position_spans, row_bands

    shape = (37, 23, 8)  # 851 positions of 8 channels: 736 bytes a row as float32
    for batch in (1, 16, 100, 5000):
        for band_bytes in (1, 3 * 736, 10**9):
            spans = position_spans(shape, band_bytes=band_bytes, tasks=4, batch=batch)
            assert spans[0][0] == 0 and spans[-1][1] == 37 * 23
            assert all(a < b for a, b in spans)
            assert all(b == c for (_, b), (c, _) in zip(spans, spans[1:]))  # contiguous
            assert all(a % batch == 0 for a, _ in spans)  # every task starts a batch
    # one position per batch: the spans are the bands of rows
    bands = row_bands(shape, band_bytes=3 * 736, tasks=4)
    assert position_spans(shape, band_bytes=3 * 736, tasks=4) == [(a * 23, b * 23) for a, b in bands]


@pytest.mark.parametrize("name", ["diffraction-cnn", "spectrum-cnn"])
def test_convnet_position_maps_do_not_depend_on_how_the_work_is_shared(name):
    # a torch network may round differently in another batch: the map is made of the same
    # batches of the scan whatever the bands, so it is the same to the bit; and it pools
    # to the chip-by-chip embeddings
    phantom = multimodal_phantom((13, 11), pattern_size=32, seed=2)
    data = np.asarray(phantom.diffraction if name == "diffraction-cnn" else phantom.eels, dtype=np.float32)
    encoder = get_encoder(name, weights="random", batch_size=16)
    row = 11 * int(np.prod(data.shape[2:])) * 4
    maps = []
    for rows, workers in ((1, 2), (4, 1), (100, 2)):
        with dask.config.set({"array.chunk-size": rows * row, "num_workers": workers}):
            maps.append(position_map(data, encoder))
    for other in maps[1:]:
        np.testing.assert_array_equal(other.features, maps[0].features)
    grid = ChipGrid(data.shape[:2], 4, 2)
    chips = np.concatenate([c for _, c in iter_chips(data, grid.origins, 4)])
    embeddings, _ = maps[0].pool(grid.origins, 4, encoder)
    np.testing.assert_allclose(embeddings, encoder.encode(chips), rtol=1e-4, atol=1e-5)


def test_community_mean_signals_average_every_chips_positions(scan):
    from multimodal_seg.analysis.descriptors import community_mean_signals

    grid = ChipGrid(scan.shape[:2], 4, 2)
    labels = (grid.origins[:, 1] >= 6).astype(int)  # two communities: left and right chips
    labels[0] = -1  # an unlabelled chip is left out
    with dask.config.set({"array.chunk-size": 3 * 16 * 32 * 32 * 4}):  # 3-row bands
        means = community_mean_signals(scan, grid, labels)
    chips = np.concatenate([c for _, c in iter_chips(scan, grid.origins, 4)])
    for community in (0, 1):
        expected = chips[labels == community].reshape(-1, *scan.shape[2:]).mean(axis=0)
        np.testing.assert_allclose(means[community], expected, rtol=1e-5)


def test_the_scan_picture_is_the_total_counts_kept_by_the_embed_stage(scan):
    # a 4D-STEM scan alone is painted on its total counts per position: with a pooling
    # encoder they come from the study's per-position sums (the scan is not read for them),
    # otherwise they are summed once; either way in memory, so figures read nothing
    import dask.array as da

    from multimodal_seg import stages
    from multimodal_seg.modalities.base import Axis, ModalityData
    from multimodal_seg.pipeline.study import Study

    axes = [Axis("y", 16, 1.0, 0.0, "nm"), Axis("x", 16, 1.0, 0.0, "nm"),
            Axis("qy", 32, 0.1, 0.0, "1/nm"), Axis("qx", 32, 0.1, 0.0, "1/nm")]
    data = da.from_array(scan, chunks=(4, 16, 32, 32))
    study = Study.open(None)
    stages.add_modalities(study, {"diffraction": ModalityData("diffraction", "diffraction", data, axes, "<array>", {})})
    stages.lay_chips(study, chip_size=4)
    stages.embed(study, progress=False)
    stages.build_graphs(study)
    stages.find_communities(study)
    kept = study.positions("diffraction", fingerprint=study.fingerprint_of("embeddings/diffraction"))
    np.testing.assert_allclose(kept.moments[..., 0], scan.sum(axis=(2, 3)), rtol=1e-6)
    seg = stages.collect(study)
    assert isinstance(seg.image, np.ndarray)
    np.testing.assert_allclose(seg.image, scan.sum(axis=(2, 3)), rtol=1e-6)
    del study.group["positions/diffraction"]
    again = stages.collect(study)
    assert isinstance(again.image, np.ndarray)
    np.testing.assert_allclose(again.image, scan.sum(axis=(2, 3)), rtol=1e-6)


@pytest.mark.parametrize("normalise", ["total", "edges"])
def test_spectrum_pca_pooled_from_moments_equals_chip_by_chip(normalise):
    """spectrum-pca's chips pooled from per-position moments give its chip-by-chip embeddings
    (the scores' means and spreads, and the log counts) to float32 precision, one-position
    chips included (spread 0), with any bands."""
    phantom = multimodal_phantom((16, 16), pattern_size=16, seed=3)
    data = np.asarray(phantom.eels, dtype=np.float32)
    encoder = get_encoder("spectrum-pca", normalise=normalise)
    encoder.set_signal_axes(phantom.modalities()["eels"].axes[2:])
    encoder.fit(data[None])
    for size, stride in ((4, 2), (1, 1), (5, 3)):
        grid = ChipGrid(data.shape[:2], size, stride)
        chips = np.concatenate([c for _, c in iter_chips(data, grid.origins, size)])
        with dask.config.set({"array.chunk-size": 3 * 16 * data.shape[2] * 4}):  # 3-row bands
            embeddings, stats = position_map(data, encoder).pool(grid.origins, size, encoder)
        chip_by_chip = encoder.encode(chips)
        np.testing.assert_allclose(embeddings, chip_by_chip, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(stats, chip_statistics(chips), rtol=1e-4)
        k = encoder.n_components
        spread = chip_by_chip[:, k : 2 * k]
        if size == 1:
            assert np.abs(embeddings[:, k : 2 * k]).max() < 1e-5 and not spread.any()
        else:  # the spread is the scores' std over the chip's spectra, computed directly
            scores = encoder.position_features(chips.reshape(-1, data.shape[2]))[:, :k]
            np.testing.assert_allclose(spread, scores.reshape(len(chips), size * size, k).std(axis=1),
                                       rtol=1e-4, atol=1e-5)
