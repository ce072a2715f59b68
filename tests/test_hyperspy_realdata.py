"""The HyperSpy extension on real files (../shared/data/multimodal; skipped where absent)."""

from __future__ import annotations

import warnings

import dask.array as da
import hyperspy.api as hs
import numpy as np
import pytest

import multimodal_seg as mms
import multimodal_seg.hyperspy as mh
from multimodal_seg.errors import InputError
from multimodal_seg.metrics import many_to_one_accuracy

from .conftest import file_hash, shared_file

pytestmark = pytest.mark.realdata
OPTIONS = {"consensus": 5, "progress": False}
CHEVKINITE = "multimodal/bruker_chevkinite_SEM_EDS/30x30_instructively_packed_16bit_compressed.bcf"
PHENOM = "multimodal/phenom_AlCu_SEM_EDS/Elid2Version4.elid"


def test_bruker_bse_and_eds_signals_give_the_files_labels_with_their_calibration():
    path = shared_file(CHEVKINITE)
    before = file_hash(path)
    bse, eds = hs.load(path, lazy=True)
    assert type(eds).__name__ == "LazyEDSSEMSpectrum"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the BSE image has the scan's pixels: small chips, warned
        cmap = mh.segment({"bse": bse, "eds": eds}, **OPTIONS)
        seg = mms.segment({"bse": path, "eds": path}, **OPTIONS)
    assert file_hash(path) == before
    np.testing.assert_array_equal(cmap.data, seg.pixel_labels)
    # The map is on the BSE image's own axes: their names, scale and units (µm).
    for mine, theirs in zip(cmap.axes_manager.signal_axes, bse.axes_manager.signal_axes):
        assert (mine.name, mine.scale, mine.offset, mine.units) == \
               (theirs.name, theirs.scale, theirs.offset, theirs.units)
    assert cmap.axes_manager[0].units == "µm"
    # Mean spectra per community: lazy exSpy spectra on the energy axis in keV.
    means = cmap.get_community_signals(eds)
    assert type(means).__name__ == "LazyEDSSEMSpectrum" and isinstance(means.data, da.Array)
    assert means.axes_manager.signal_axes[0].units == "keV"
    means.compute()
    normalised = means.data / means.data.sum(axis=1, keepdims=True)
    assert np.abs(normalised[0] - normalised[1]).sum() > 0.05  # phases differ in composition


@pytest.fixture(scope="module")
def phenom():
    """The Phenom file's signals, as HyperSpy loads them (maps, a line, spots, images)."""
    return hs.load(shared_file(PHENOM))


def test_phenom_map_signal_finds_the_al_cu_boundary_as_the_file_does(phenom):
    path = shared_file(PHENOM)
    signals = phenom
    eds = next(s for s in signals if s.metadata.General.title.endswith("Map 3"))
    cmap = mh.segment(eds, **OPTIONS)
    seg = mms.segment({"eds:spectrum": (path, {"signal": "Map 3"})}, **OPTIONS)
    np.testing.assert_array_equal(cmap.data, seg.pixel_labels)
    # keV: Al K-alpha 1.49; Cu L-alpha 0.93 and K-alpha 8.05: the boundary from the physics.
    aluminium = eds.isig[1.42:1.55].sum(-1).data
    copper = eds.isig[0.88:1.0].sum(-1).data + eds.isig[7.9:8.2].sum(-1).data
    labels = cmap.labels_on(eds)
    assert many_to_one_accuracy(labels, (aluminium > copper).astype(int)) > 0.9


@pytest.mark.parametrize("title,needle", [
    ("Image 1, Line 4", "a line scan of spectra"),
    ("Image 1, Spot 1", "a single spectrum"),
    ("385test - spectrum", "no signal axis"),
])
def test_the_files_other_signals_are_refused_with_a_fix(phenom, title, needle):
    signal = next(s for s in phenom if s.metadata.General.title == title)
    with pytest.raises(InputError) as info:
        mh.segment(signal, **OPTIONS)
    assert needle in str(info.value) and title in str(info.value) and "fix:" in str(info.value)


def test_a_signals_beam_energy_reaches_the_line_names(phenom):
    """The beam energy that decides which X-ray families the spectra must show comes with a
    HyperSpy signal as with its file: the Bruker file's 20 kV (HyperSpy's metadata) and the
    Phenom map's 15 kV (the file's own metadata, which HyperSpy keeps as original_metadata)."""
    from multimodal_seg.hyperspy.convert import to_modality

    _, eds = hs.load(shared_file(CHEVKINITE), lazy=True)
    modality = to_modality(eds, name="eds")
    assert modality.metadata["beam_energy_kev"] == 20.0 and modality.metadata["beam_energy_from"] == "signal"
    phenom_map = next(s for s in phenom if s.metadata.General.title.endswith("Map 3"))
    assert to_modality(phenom_map, name="eds").metadata["beam_energy_kev"] == 15.0


def test_the_elements_exspy_was_given_reach_the_line_names(phenom):
    """The specimen's elements come with a HyperSpy signal: the Bruker file's list (Esprit's,
    which HyperSpy reads into ``Sample.elements``) and those a user gives exSpy's
    ``add_elements``; a signal without any records none."""
    from multimodal_seg.hyperspy.convert import to_modality

    _, eds = hs.load(shared_file(CHEVKINITE), lazy=True)
    modality = to_modality(eds, name="eds")
    assert modality.metadata["elements_from"] == "signal" and {"Si", "Ti", "O"} <= set(modality.metadata["elements"])
    phenom_map = next(s for s in phenom if s.metadata.General.title.endswith("Map 3"))
    assert "elements" not in to_modality(phenom_map, name="eds").metadata
    phenom_map = phenom_map.deepcopy()
    phenom_map.add_elements(["Cu", "Al"])
    modality = to_modality(phenom_map, name="eds")
    assert modality.metadata["elements"] == ["Al", "Cu"] and modality.metadata["elements_from"] == "signal"
