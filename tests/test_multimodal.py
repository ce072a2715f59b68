"""Several modalities of one specimen: shared grid, fusion, consistency, errors."""

from __future__ import annotations

import json

import dask.array as da
import numpy as np
import pytest

import multimodal_seg as mms
from multimodal_seg.encoders import register_encoder
from multimodal_seg.encoders.base import Encoder
from multimodal_seg.errors import InputError, ParameterError
from multimodal_seg.metrics import adjusted_rand
from multimodal_seg.modalities.base import Axis, ModalityData
from multimodal_seg.synthetic.phantoms import haadf_phantom
from multimodal_seg.chips.shared import shared_grid

STEP = 8  # image pixels per scan position


class MeanSpectrumEncoder(Encoder):
    """Test encoder: a chip's mean spectrum, normalised and binned to 16 values."""

    name = "test-mean-spectrum"
    kind = "spectrum"
    dim = 16

    def encode(self, chips):
        mean = chips.mean(axis=(1, 2))
        mean = mean / mean.sum(axis=1, keepdims=True)
        return mean.reshape(len(mean), 16, -1).sum(axis=2).astype(np.float32)

    def fingerprint(self):
        return {"name": self.name}


register_encoder(MeanSpectrumEncoder.name, MeanSpectrumEncoder, replace=True)
CONFIG = {"modality_encoders": {"eels": MeanSpectrumEncoder.name}}


def _axes(n, step, offset=0.0, units="nm"):
    return [Axis("y", n[0], step, offset, units), Axis("x", n[1], step, offset, units)]


@pytest.fixture(scope="module")
def specimen():
    """A HAADF phantom and an EELS-like cube on a coarser scan of the same area.

    Chemistry: the two grains of phase A share one spectrum (an edge at channel 20),
    phase B has an edge at channel 40, the amorphous region has no edge and a
    brighter background, so EELS alone cannot tell the grains apart.
    """
    phantom = haadf_phantom((256, 256), seed=1)
    truth = phantom.truth[STEP // 2 :: STEP, STEP // 2 :: STEP]
    energy = np.arange(64)
    background = 1000 * (energy + 10.0) ** -1.0
    spectra = np.stack([background * (1 + 0.8 * (energy > 20) * (k < 2) + 0.8 * (energy > 40) * (k == 2)
                                      + 0.3 * (k == 3)) for k in range(4)])
    cube = np.random.default_rng(0).poisson(50 * spectra[truth]).astype(np.float32)
    scale = phantom.pixel_size
    image = ModalityData("haadf", "image", da.from_array(phantom.image), _axes((256, 256), scale),
                         "<phantom>")
    eels = ModalityData("eels", "spectrum", da.from_array(cube, chunks=(8, 32, 64)),
                        [*_axes(truth.shape, scale * STEP), Axis("energy", 64, 1.0, 280.0, "eV")], "<si>")
    return phantom, truth, image, eels


def test_shared_grid_maps_chips_by_calibration(specimen):
    _, _, image, eels = specimen
    grid = shared_grid({"haadf": image, "eels": eels}, chip_size=4, stride=2)
    assert grid.reference == "eels"
    assert grid.per_modality["haadf"].size == 4 * STEP
    np.testing.assert_array_equal(grid.per_modality["haadf"].origins, grid.per_modality["eels"].origins * STEP)


def test_joint_segmentation_beats_chemistry_alone(specimen, tmp_path):
    phantom, truth, image, eels = specimen
    seg = mms.segment({"haadf": image, "eels": eels}, config=CONFIG, fusion="concat", progress=False,
                      out=tmp_path / "mm")
    on_scan = seg.grid.chip_labels_to_pixels
    joint = adjusted_rand(on_scan(seg.chip_labels), truth)
    chemistry = adjusted_rand(on_scan(seg.modality_labels["eels"]), truth)
    assert joint > 0.8
    assert joint > chemistry + 0.1  # chemistry cannot tell the two grains apart
    assert seg.pixel_labels.shape == phantom.image.shape  # painted on the finest image
    assert adjusted_rand(seg.pixel_labels, phantom.truth) > 0.75
    names = seg.consistency["names"]
    ari = np.asarray(seg.consistency["ari"])
    assert names == ["haadf", "eels", "joint"]
    np.testing.assert_allclose(ari, ari.T)
    np.testing.assert_allclose(np.diag(ari), 1.0)
    # The community holding most of phase B has the edge at channel 40, not 20.
    assert seg.n_communities >= 3
    phase_b = np.bincount(on_scan(seg.chip_labels)[truth == 2]).argmax()
    mean = seg.signals["eels"][phase_b]
    assert mean[42] / mean[38] > 1.4 and mean[22] / mean[18] < 1.2
    for name in ("consistency.json", "consistency.png", "community_signals.png", "modalities.png"):
        assert (tmp_path / "mm" / name).exists(), name
    saved = json.loads((tmp_path / "mm" / "consistency.json").read_text())
    assert len(saved["disagreement"]) == seg.grid.n_chips


def test_multiplex_fusion_runs_and_is_reproducible(specimen):
    _, truth, image, eels = specimen
    a = mms.segment({"haadf": image, "eels": eels}, config=CONFIG, fusion="multiplex", progress=False)
    b = mms.segment({"haadf": image, "eels": eels}, config=CONFIG, fusion="multiplex", progress=False)
    np.testing.assert_array_equal(a.chip_labels, b.chip_labels)
    assert a.provenance["fusion"] == "multiplex"
    assert adjusted_rand(a.grid.chip_labels_to_pixels(a.chip_labels), truth) > 0.5


def test_refinement_refines_every_partition_with_a_fitted_encoder(specimen, tmp_path):
    # spectrum-pca learns its basis from the data (Encoder.fit): the boundary chips must be
    # embedded in the same basis as the partitioned ones, also when a resumed run skips
    # the embedding stage (and so never fitted this run's encoder).
    # Positions are not placed by their spectra here (place_positions=False): that step would
    # put the coarse and the refined maps' boundaries in the same places, and this is
    # refinement's test (tests/test_placement.py is the other's).
    _, truth, image, eels = specimen
    coarse = mms.segment({"haadf": image, "eels": eels}, refine=1, place_positions=False, progress=False)
    fine = mms.segment({"haadf": image, "eels": eels}, place_positions=False, progress=False)  # refine="auto": 2
    np.testing.assert_array_equal(fine.chip_labels, coarse.chip_labels)
    assert list(fine.scan_labels) == ["joint", "haadf", "eels"]
    for name, labels in fine.scan_labels.items():
        assert labels.shape == truth.shape
        assert set(np.unique(labels)) <= set(np.unique(coarse.scan_labels[name]))  # no new community
    gains = {name: adjusted_rand(fine.scan_labels[name], truth) - adjusted_rand(coarse.scan_labels[name], truth)
             for name in fine.scan_labels}
    # Measured: joint +0.012, eels +0.011, haadf -0.001. Before boundary chips were placed by
    # their nearest community mean (graphs/reassign) the coarse partitions were worse and
    # refinement gained more (haadf +0.021, eels +0.030, joint +0.008); the refined joint
    # partition, the result, must still gain.
    assert gains["joint"] > 0 and sum(gains.values()) > 0, gains
    assert set(fine.provenance["refined"]["boundary_chips"]) == {"joint", "haadf", "eels"}
    assert coarse.provenance["refined"] is None
    mms.segment({"haadf": image, "eels": eels}, refine=1, place_positions=False, progress=False, out=tmp_path / "run")
    resumed = mms.segment({"haadf": image, "eels": eels}, refine=2, place_positions=False, progress=False,
                          out=tmp_path / "run")
    for name, labels in fine.scan_labels.items():
        np.testing.assert_array_equal(resumed.scan_labels[name], labels)


def test_image_at_the_scan_pixel_size_gets_a_warning(specimen):
    # A survey image with the scan's own pixels cannot see texture in any chip, so the scan's
    # counts decide the chips (one position each): 1 px image chips, no texture to embed.
    phantom, truth, image, eels = specimen
    coarse = ModalityData("bse", "image", da.from_array(phantom.image[::STEP, ::STEP].copy()),
                          eels.axes[:2], "<survey>")
    with pytest.warns(UserWarning, match=r"'bse' \(<survey>\) gets chips of 1 px"):
        mms.segment({"bse": coarse, "eels": eels}, config=CONFIG, progress=False)


def test_extents_that_do_not_overlap(specimen):
    _, _, image, eels = specimen
    far = ModalityData("eels", "spectrum", eels.data,
                       [*_axes(eels.data.shape[:2], eels.axes[0].scale, offset=100.0), eels.axes[2]], "<far>")
    with pytest.raises(InputError, match="no common region"):
        mms.segment({"haadf": image, "eels": far}, config=CONFIG, progress=False)


def test_partial_overlap_warns_and_uses_the_common_region(specimen):
    _, _, image, eels = specimen
    shifted = ModalityData("eels", "spectrum", eels.data,
                           [*_axes(eels.data.shape[:2], eels.axes[0].scale, offset=2.56), eels.axes[2]],
                           "<shifted>")
    with pytest.warns(UserWarning, match="beyond the region"):
        seg = mms.segment({"haadf": image, "eels": shifted}, config=CONFIG, progress=False)
    assert seg.pixel_labels.shape == (256 - 64, 256 - 64)  # 2.56 nm = 64 image px cut


def test_uncalibrated_modality_cannot_be_placed(specimen):
    _, _, image, eels = specimen
    raw = ModalityData("eels", "spectrum", eels.data,
                       [Axis("y", 32), Axis("x", 32), eels.axes[2]], "<raw>")
    with pytest.raises(InputError, match="uncalibrated"):
        mms.segment({"haadf": image, "eels": raw}, config=CONFIG, progress=False)


def test_unknown_modality_name_and_wrong_encoder_kind(specimen):
    _, _, image, eels = specimen
    with pytest.raises(ParameterError, match="'name:kind'|name it after"):
        mms.segment({"haadf": image, "mystery": eels}, progress=False)
    with pytest.raises(ParameterError, match="embeds image data"):
        mms.segment({"haadf": image, "eels": eels}, config={"modality_encoders": {"eels": "fourier"}},
                    progress=False)


@pytest.mark.parametrize("values, problem", [
    (lambda cube: cube * (1 + 1j), "complex"),
    (lambda cube: cube > 10, "of type bool"),
    (lambda cube: cube.astype("U8"), "of type <U8"),
])
def test_modality_values_must_be_real_numbers(specimen, values, problem):
    _, _, image, eels = specimen
    bad = ModalityData("eels", "spectrum", da.from_array(values(np.asarray(eels.data))), eels.axes, "<bad>")
    with pytest.raises(InputError, match=problem) as info:
        mms.segment({"haadf": image, "eels": bad}, config=CONFIG, progress=False)
    assert "eels (<bad>)" in str(info.value) and "real" in str(info.value)


def test_modality_of_the_wrong_kind_or_shape(specimen):
    _, _, image, eels = specimen
    with pytest.raises(InputError, match="is spectrum data, but 'haadf' names an image"):
        mms.segment({"haadf": eels, "eels": eels}, config=CONFIG, progress=False)
    flat = ModalityData("eels", "spectrum", eels.data[0], eels.axes[1:], "<flat>")
    with pytest.raises(InputError, match="has 2 dimensions"):
        mms.segment({"haadf": image, "eels": flat}, config=CONFIG, progress=False)


@pytest.mark.parametrize("fusion", ["concat", "multiplex"])
def test_a_modality_that_finds_no_structure_is_left_out_of_the_joint_partition(fusion):
    # Blind EELS: every region has the same composition, so the EELS chips are one
    # population (one community); the HAADF image sees three regions.  The joint partition
    # is then the image's, not the image's blurred by a noise modality.
    from multimodal_seg.synthetic.families import draw

    specimen = draw("blind_eels", 10)
    seg = mms.segment(specimen.modalities, fusion=fusion, progress=False, consensus=5)
    joint = seg.provenance["partitions"]["joint"]
    assert seg.provenance["partitions"]["eels"]["n_communities"] == 1
    assert joint["left_out"] == ["eels"]
    assert adjusted_rand(seg.scan_labels["joint"], seg.scan_labels["haadf"]) == pytest.approx(1.0)
    assert seg.provenance["partitions"]["haadf"]["n_communities"] == joint["n_communities"] > 1
    # skip_structureless=False keeps it (the option acts)
    kept = mms.segment(specimen.modalities, fusion=fusion, progress=False, consensus=5,
                       config={"fusion": {"method": fusion, "skip_structureless": False}})
    assert kept.provenance["partitions"]["joint"]["left_out"] == []
    # the noise modality is in the joint graph (here the labels come out the same, since
    # boundary chips go to the nearest community mean and the EELS block is mostly noise)
    assert (kept.graph != seg.graph).nnz > 0


def test_a_run_of_one_spectrum_image_names_its_map_and_says_there_is_no_joint_one():
    """With one modality the run's map is that modality's own partition; asking for "joint"
    says so instead of a bare KeyError."""
    from multimodal_seg.synthetic.multimodal import multimodal_phantom

    eels = multimodal_phantom((24, 24), seed=0, pattern_size=16).modalities()["eels"]
    seg = mms.segment({"eels": eels}, progress=False, consensus=3)
    assert set(seg.scan_labels) == {"eels"} and seg.scan_labels["eels"].shape == (24, 24)
    with pytest.raises(KeyError, match="no partition 'joint' in this run .*with one, the run's map is that "
                                       "modality's own.*it has: 'eels'"):
        seg.scan_labels["joint"]
    assert seg.scan_labels.get("joint") is None  # .get and `in` are a dict's


def test_an_encoder_of_the_wrong_kind_is_refused_and_one_with_nothing_to_embed_is_said_unused():
    """An image given a spectrum encoder is refused in the user's terms, before any work; the
    image encoder asked for where there is no image is said to be unused."""
    from multimodal_seg.synthetic.multimodal import multimodal_phantom

    phantom = multimodal_phantom((16, 16), seed=0, pattern_size=16)
    with pytest.raises(ParameterError, match="encoder 'spectrum-pca' embeds spectrum data, but 'image' is an image") as caught:
        mms.segment(phantom.haadf, encoder="spectrum-pca", progress=False)
    assert "fourier" in caught.value.fix and "resnet50" in caught.value.fix
    eels = phantom.modalities()["eels"]
    # said, and recorded, not refused: one batch config serves specimens with and without an image
    with pytest.warns(UserWarning, match="'resnet50' is the image encoder, and no modality here is an image"):
        seg = mms.segment({"eels": eels}, encoder="resnet50", progress=False, consensus=3)
    assert any("is the image encoder" in w for w in seg.provenance["warnings"])


def test_fusion_settings_in_a_run_of_one_modality_are_said_unused():
    """Multiplex fusion asked for with one modality changes nothing: the run
    says so, and records it, rather than ignoring them silently (not refused: one batch config
    serves specimens with one modality and with several)."""
    import warnings

    from multimodal_seg.synthetic.multimodal import multimodal_phantom

    haadf = multimodal_phantom((16, 16), seed=0, pattern_size=16).haadf
    with pytest.warns(UserWarning, match=r"fusion method='multiplex' is for several "
                                         r"modalities, and this run has one \(image\): not used") as caught:
        seg = mms.segment(haadf, fusion="multiplex",
                          chip_size=8, stride=4, progress=False, consensus=3)
    assert len([w for w in caught if "fusion" in str(w.message)]) == 1
    assert any("fusion method='multiplex'" in w for w in seg.provenance["warnings"])
    with warnings.catch_warnings():  # the default, given explicitly, asks for nothing
        warnings.filterwarnings("error", message="fusion")
        mms.segment(haadf, fusion="concat", chip_size=8, stride=4, progress=False, consensus=3)
