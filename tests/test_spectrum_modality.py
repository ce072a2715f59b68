"""Spectrum-image modality reader (EELS, EDS).

Round trips write real files with HyperSpy's writers into ``tmp_path`` (exspy's
``EELSSpectrum`` is not installed: a ``Signal1D`` with ``signal_type="EELS"`` writes
the same file).  Real instrument files come from ``../shared/data`` and are skipped
where that folder is absent; each is checked unchanged after reading.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dask.array as da
import numpy as np
import pytest

from multimodal_seg.errors import InputError, ParameterError
from multimodal_seg.modalities import (
    SUPPORTED_SPECTRUM_EXTENSIONS,
    ModalityData,
    get_reader,
    read_spectrum_image,
)
from multimodal_seg.modalities.checks import scan_chunks

from .conftest import assert_file_error, assert_reader_error, shared_file, tree_digest  # noqa: E402
CHEVKINITE = "multimodal/bruker_chevkinite_SEM_EDS/30x30_instructively_packed_16bit_compressed.bcf"
P45 = "multimodal/bruker_P45_SEM_BSE_EDS/P45_the_default_job.bcf"
VELOX = "multimodal/velox_Nb_interface_STEM_EDS/fei_SI_SuperX-HAADF_20frames_10x50.emd"
JEOL_ASW = "multimodal/jeol_FeS_TEM_EDS/rawdata.ASW"
JEOL_PTS = "multimodal/jeol_FeS_TEM_EDS/Sample/00_View000/View000_0000006.pts"
PHENOM = "multimodal/phenom_AlCu_SEM_EDS/Elid2Version4.elid"
HAADF_EMD = "images/velox_particles_on_support_HAADF_512.emd"


# --------------------------------------------------------------------------- helpers


real_file = shared_file
digest = tree_digest


def expect_error(source, where_name: str, *needles: str, **kwargs):
    """read_spectrum_image(source) raises (InputError by default) naming where_name, with a fix."""
    return assert_reader_error(read_spectrum_image, source, where_name, *needles, **kwargs)


def expect_file_error(path: Path, *needles: str, **kwargs):
    return assert_file_error(read_spectrum_image, path, *needles, **kwargs)


def spectrum_signal(cube: np.ndarray, *, signal_type: str = "EELS", title: str = "si"):
    """HyperSpy spectrum image with distinct calibrations on y, x and energy."""
    hs = pytest.importorskip("hyperspy.api")
    s = hs.signals.Signal1D(cube)
    s.set_signal_type(signal_type)
    x, y = s.axes_manager.navigation_axes  # hyperspy orders (x, y)
    x.scale, x.offset, x.units = 0.5, 3.0, "nm"
    y.scale, y.offset, y.units = 0.25, -1.0, "nm"
    e = s.axes_manager.signal_axes[0]
    e.scale, e.offset, e.units = 0.5, 100.0, "eV"
    s.metadata.General.title = title
    return s


def axis_tuple(axis):
    return (axis.name, axis.size, axis.scale, axis.offset, axis.units)


def summed_spectrum(m: ModalityData) -> tuple[np.ndarray, np.ndarray]:
    """(energies, counts summed over the scan) of a read spectrum image."""
    counts = m.data.sum(axis=(0, 1), dtype=np.float64).compute()
    e = m.axes[2]
    return e.offset + np.arange(e.size) * e.scale, counts


def peak_energy(m: ModalityData, low: float, high: float) -> float:
    """Energy of the highest channel in [low, high] of the summed spectrum."""
    energies, counts = summed_spectrum(m)
    inside = (energies >= low) & (energies <= high)
    return float(energies[inside][np.argmax(counts[inside])])


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def counts(rng) -> np.ndarray:
    """Poisson counts (8 rows, 6 cols, 48 channels), uint16 like detector data."""
    return rng.poisson(3.0, size=(8, 6, 48)).astype(np.uint16)


# ------------------------------------------------------------------------- round trips


def test_hspy_eels_round_trip(tmp_path, rng):
    cube = rng.random((4, 5, 60)).astype(np.float32) * 1000
    path = tmp_path / "eels.hspy"
    spectrum_signal(cube, title="core loss").save(path)
    before = digest(path)
    m = read_spectrum_image(path, name="eels")
    assert isinstance(m.data, da.Array)
    assert m.data.dtype == np.float32 and m.data.shape == (4, 5, 60)
    assert m.data.chunksize[2] == 60  # whole spectra per chunk
    np.testing.assert_array_equal(m.data.compute(), cube)
    assert [axis_tuple(a) for a in m.axes] == [
        ("y", 4, 0.25, -1.0, "nm"),
        ("x", 5, 0.5, 3.0, "nm"),
        ("energy", 60, 0.5, 100.0, "eV"),
    ]
    assert (m.name, m.kind, m.source) == ("eels", "spectrum", str(path))
    assert m.metadata["signal_type"] == "EELS"
    assert m.metadata["title"] == "core loss"
    assert m.metadata["reader"] == "rsciio.hspy"
    assert m.metadata["calibration"] == "file"
    json.dumps(m.metadata)
    assert digest(path) == before


def test_binning_sums_counts_and_moves_calibration_to_bin_centres(tmp_path, counts):
    path = tmp_path / "eels.hspy"
    spectrum_signal(counts, signal_type="EELS").save(path)  # an axis in eV
    m = read_spectrum_image(path, bin_channels=4, bin_scan=2)
    assert m.data.shape == (4, 3, 12)
    expected = counts.astype(np.int64).reshape(4, 2, 3, 2, 12, 4).sum(axis=(1, 3, 5))
    np.testing.assert_array_equal(m.data.compute(), expected)
    assert m.data.sum().compute() == counts.sum()  # total counts conserved
    y, x, e = m.axes
    assert (y.scale, y.offset) == (0.5, -1.0 + 0.5 * 0.25)
    assert (x.scale, x.offset) == (1.0, 3.0 + 0.5 * 0.5)
    assert (e.scale, e.offset, e.units) == (2.0, 100.0 + 1.5 * 0.5, "eV")
    assert m.metadata["binning"]["dropped"] == {"rows": 0, "cols": 0, "channels": 0}
    json.dumps(m.metadata)


def test_binning_drops_incomplete_blocks(counts):
    m = read_spectrum_image(counts[:7, :5, :47], bin_channels=5, bin_scan=3)
    assert m.data.shape == (2, 1, 9)
    kept = counts[:6, :3, :45].astype(np.int64)
    np.testing.assert_array_equal(
        m.data.compute(), kept.reshape(2, 3, 1, 3, 9, 5).sum(axis=(1, 3, 5))
    )
    assert m.metadata["binning"]["dropped"] == {"rows": 1, "cols": 2, "channels": 2}


def test_uint8_counts_do_not_overflow_when_binned():
    cube = np.full((8, 4, 8), 250, dtype=np.uint8)
    cube[4:] = 1
    m = read_spectrum_image(cube, bin_channels=8, bin_scan=4)
    np.testing.assert_array_equal(m.data.compute().ravel(), [250 * 128, 128])


def test_energy_range_crops_calibrated_channels(tmp_path, counts):
    path = tmp_path / "eels.hspy"
    spectrum_signal(counts, signal_type="EELS").save(path)  # an axis in eV
    # channel i sits at 100 + 0.5 i eV: keep 105.0 .. 110.0 -> channels 10..20
    m = read_spectrum_image(path, energy_range=(104.9, 110.0))
    assert m.data.shape == (8, 6, 11)
    np.testing.assert_array_equal(m.data.compute(), counts[:, :, 10:21])
    assert axis_tuple(m.axes[2]) == ("energy", 11, 0.5, 105.0, "eV")
    assert m.metadata["energy_range"] == [104.9, 110.0]
    # after binning by 2 the bins sit at 100.25 + 1.0 j: keep 105.25 .. 109.25
    m = read_spectrum_image(path, energy_range=(105.0, 110.0), bin_channels=2)
    assert axis_tuple(m.axes[2]) == ("energy", 5, 1.0, 105.25, "eV")
    err = expect_error(
        path, "energy_range", "100", error=ParameterError, energy_range=(1.0, 10.0)
    )
    assert "eV" in str(err)


def test_numpy_and_dask_input(counts):
    kept = counts.copy()
    m = read_spectrum_image(counts, chunks=3)
    assert m.source == "<array>" and m.metadata["reader"] == "numpy"
    assert m.data.dtype == np.float32 and m.data.chunks[0] == (3, 3, 2)
    assert m.data.chunksize == (3, 6, 48)
    np.testing.assert_array_equal(m.data.compute(), counts.astype(np.float32))
    np.testing.assert_array_equal(counts, kept)  # input untouched
    assert [axis_tuple(a) for a in m.axes] == [
        ("y", 8, 1.0, 0.0, "px"),
        ("x", 6, 1.0, 0.0, "px"),
        ("energy", 48, 1.0, 0.0, "px"),
    ]
    assert m.metadata["calibration"] == "none"
    json.dumps(m.metadata)

    m = read_spectrum_image(
        da.from_array(counts, chunks=(5, 5, 10)),
        chunks=(2, 4),
        scan_step=2.0,
        scan_units="nm",
        energy_offset=-0.2,
        energy_scale=0.01,
        energy_units="keV",
    )
    assert m.metadata["reader"] == "dask" and m.metadata["calibration"] == "arguments"
    assert m.data.chunksize == (2, 4, 48)
    assert [axis_tuple(a) for a in m.axes] == [
        ("y", 8, 2.0, 0.0, "nm"),
        ("x", 6, 2.0, 0.0, "nm"),
        ("energy", 48, 0.01, -0.2, "keV"),
    ]
    # calibration keywords describe the unbinned data
    m = read_spectrum_image(
        counts, bin_channels=2, energy_scale=0.01, energy_offset=0.0, energy_units="keV"
    )
    assert axis_tuple(m.axes[2]) == ("energy", 24, 0.02, 0.005, "keV")


def test_default_chunks_hold_whole_spectra():
    cube = da.random.default_rng(0).poisson(1.0, size=(40, 30, 512), chunks=(7, 9, 100))
    m = read_spectrum_image(cube)
    assert m.data.chunksize == (40, 30, 512)  # 2.3 MiB: one chunk
    m = read_spectrum_image(cube, bin_scan=2)
    assert m.data.chunksize == (20, 15, 512)
    # Large cubes: whole rows of whole spectra, about 64 MiB of float32 a chunk.
    assert scan_chunks((1000, 500, 2048), None) == (16, 500, 2048)
    assert scan_chunks((10, 20000, 4096), None) == (1, 4096, 4096)
    assert scan_chunks((10, 20, 30), 4) == (4, 20, 30)
    assert scan_chunks((10, 20, 30), (40, 5)) == (10, 5, 30)


def test_calibration_keywords_override_a_file(tmp_path, counts):
    path = tmp_path / "eds.hspy"
    spectrum_signal(counts, signal_type="EDS_TEM").save(path)
    m = read_spectrum_image(path, energy_units="meV", scan_step=1.5, scan_units="µm")
    assert [axis_tuple(a) for a in m.axes] == [
        ("y", 8, 1.5, 0.0, "µm"),
        ("x", 6, 1.5, 0.0, "µm"),
        ("energy", 48, 0.5, 100.0, "meV"),
    ]
    assert m.metadata["calibration"] == "file, overridden by arguments"


def test_registered():
    assert get_reader("spectrum") is read_spectrum_image


# --------------------------------------------------------------------------- signals


def _fake_velox(tmp_path, monkeypatch, signals) -> Path:
    """An .emd whose rsciio reader returns the given (title, shape, navigate) signals."""
    import rsciio.emd

    rng = np.random.default_rng(1)
    dicts = [
        {
            "data": da.from_array(rng.poisson(2.0, shape).astype(np.uint16)),
            "axes": [
                {"size": n, "scale": 0.1, "offset": 0.0, "units": "nm", "navigate": nav}
                for n, nav in zip(shape, navigate, strict=True)
            ],
            "metadata": {"General": {"title": title}},
        }
        for title, shape, navigate in signals
    ]
    monkeypatch.setattr(rsciio.emd, "file_reader", lambda *a, **k: dicts)
    path = tmp_path / "fake.emd"
    path.write_bytes(b"not read")
    return path


def test_signal_selection(tmp_path, monkeypatch):
    path = _fake_velox(
        tmp_path,
        monkeypatch,
        [
            ("HAADF", (6, 5), (False, False)),
            ("EDS", (6, 5, 40), (True, True, False)),
            ("EELS", (6, 5, 30), (True, True, False)),
        ],
    )
    assert read_spectrum_image(path).metadata["title"] == "EDS"  # first cube
    m = read_spectrum_image(path, signal="eels")
    assert (m.metadata["title"], m.metadata["signal_index"]) == ("EELS", 2)
    assert m.data.shape == (6, 5, 30)
    assert m.metadata["signals_in_file"] == [
        "HAADF [6x5]",
        "EDS [6x5x40]",
        "EELS [6x5x30]",
    ]
    expect_file_error(
        path, "(6, 5)", "2-D image", "image modality", "signal=", signal=0
    )
    expect_file_error(path, "no signal title contains", signal="cathodo")
    expect_file_error(path, "signal=3", signal=3)


def test_file_with_images_only(tmp_path, monkeypatch):
    path = _fake_velox(
        tmp_path,
        monkeypatch,
        [("HAADF", (6, 5), (False, False)), ("DF4", (6, 5), (False, False))],
    )
    expect_file_error(path, "no spectrum image", "HAADF [6x5]", "image modality")


def test_file_with_a_flat_stack_of_patterns(tmp_path, monkeypatch):
    path = _fake_velox(
        tmp_path,
        monkeypatch,
        [
            ("Camera", (12, 8, 8), (True, False, False)),
            ("HAADF", (6, 5), (False, False)),
        ],
    )
    expect_file_error(path, "no spectrum image", "Camera [12x8x8]")


# --------------------------------------------------------------------------- bad input


def test_missing_file_and_directory(tmp_path):
    expect_error(tmp_path / "absent.bcf", "absent.bcf", "not found")
    folder = tmp_path / "maps.bcf"
    folder.mkdir()
    expect_error(folder, "maps.bcf", "directory")


def test_unknown_and_foreign_extensions(tmp_path):
    path = tmp_path / "cube.xyz"
    path.write_bytes(b"\x00" * 64)
    expect_file_error(path, "unsupported", *SUPPORTED_SPECTRUM_EXTENSIONS)
    for name, modality in [("haadf.png", "image"), ("scan.mib", "diffraction")]:
        path = tmp_path / name
        path.write_bytes(b"\x00" * 64)
        expect_file_error(path, "unsupported", f"read by the {modality} modality")


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("garbage.bcf", b"x" * 500),
        ("garbage.emd", b"x" * 500),
        ("garbage.hspy", b"x" * 500),
        ("garbage.dm4", b"x" * 500),
        ("garbage.elid", b"x" * 500),
        ("empty.pts", b""),
    ],
)
def test_corrupt_files(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    expect_file_error(path)  # named, with a fix; which words depends on the reader


def test_corrupt_file_says_cannot_be_read(tmp_path):
    path = tmp_path / "garbage.bcf"
    path.write_bytes(b"x" * 500)
    expect_file_error(path, "cannot be read", "Bruker")


def test_wrong_dimensionality_says_what_it_is(tmp_path, rng):
    hs = pytest.importorskip("hyperspy.api")
    expect_error(rng.random(40), "<array>", "single spectrum", "(40,)")
    expect_error(rng.random((6, 7)), "<array>", "2-D image", "image modality")
    expect_error(rng.random((2, 3, 8, 8)), "<array>", "diffraction modality")

    image = tmp_path / "image.hspy"
    hs.signals.Signal2D(rng.random((16, 16))).save(image)
    expect_file_error(image, "(16, 16)", "2-D image", "image modality")

    stack = tmp_path / "stack.hspy"
    hs.signals.Signal2D(rng.random((3, 16, 16))).save(stack)
    expect_file_error(stack, "stack of 3", "diffraction modality")

    line = tmp_path / "line.hspy"
    hs.signals.Signal1D(rng.random((5, 40))).save(line)
    expect_file_error(line, "line scan", "(1, positions, channels)")

    single = tmp_path / "spectrum.hspy"
    hs.signals.Signal1D(rng.random(40)).save(single)
    expect_file_error(single, "single spectrum")


def test_real_image_file_given_as_spectrum():
    path = real_file(HAADF_EMD)
    expect_file_error(path, "(512, 512)", "2-D image", "image modality")


def test_all_zero_empty_constant_and_complex():
    expect_error(np.zeros((4, 4, 16), np.uint16), "<array>", "all zeros")
    expect_error(np.zeros((0, 4, 16)), "<array>", "empty")
    expect_error(np.full((4, 4, 16), 3.0), "<array>", "constant")
    expect_error(np.ones((2, 2, 4)) * 1j, "<array>", "complex")
    expect_error(np.full((2, 2, 4), "a"), "<array>", "not real numbers")


def test_nan_and_inf_are_counted(tmp_path, rng):
    cube = rng.random((3, 4, 5))
    cube[0, 0, 0] = cube[1, 2, 3] = np.nan
    cube[2, 3, 4] = np.inf
    expect_error(cube, "<array>", "3 of 60 values", "NaN")
    path = tmp_path / "holes.hspy"
    spectrum_signal(cube).save(path)
    expect_file_error(path, "3 of 60 values", "NaN")
    expect_error(cube, "<array>", "after binning", bin_channels=5)


def test_bad_parameters(counts):
    for kwargs in (
        {"bin_channels": 0},
        {"bin_channels": -2},
        {"bin_channels": 1.5},
        {"bin_scan": True},
        {"bin_scan": "2"},
        {"energy_range": (5.0, 1.0)},
        {"energy_range": (1.0, float("nan"))},
        {"energy_range": "0-10"},
        {"chunks": 0},
        {"chunks": (1, 2, 3)},
        {"signal": 1.5},
        {"scan_units": "nm"},
        {"scan_step": -1.0},
        {"energy_units": "eV"},
        {"energy_offset": 1.0},
        {"energy_scale": 0.0},
        {"energy_scale": 0.1, "energy_offset": float("inf")},
    ):
        with pytest.raises(ParameterError, match="fix:"):
            read_spectrum_image(counts, **kwargs)
    with pytest.raises(ParameterError, match="signal"):
        read_spectrum_image(counts, signal=0)
    expect_error(
        counts, "bin_scan", "larger", "6 cols", error=ParameterError, bin_scan=7
    )
    expect_error(counts, "bin_scan", "8 rows", error=ParameterError, bin_scan=9)
    expect_error(
        counts, "bin_channels", "48 channels", error=ParameterError, bin_channels=49
    )
    with pytest.raises(InputError, match="cannot read a spectrum image"):
        read_spectrum_image(42)


# --------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_real_bruker_chevkinite():
    rsciio_bruker = pytest.importorskip("rsciio.bruker")
    path = real_file(CHEVKINITE)
    before = digest(path)
    m = read_spectrum_image(path)
    assert isinstance(m.data, da.Array)
    assert m.data.shape == (30, 30, 2048) and m.data.dtype == np.float32
    reference = rsciio_bruker.file_reader(str(path))[1]["data"]
    np.testing.assert_array_equal(m.data.compute(), reference.astype(np.float32))
    y, x, e = m.axes
    assert (y.units, x.units, e.units) == ("µm", "µm", "keV")
    assert y.scale == pytest.approx(1.6674, abs=1e-4)
    assert e.scale == pytest.approx(0.01, rel=1e-3)
    assert -1.0 < e.offset < 0.0
    assert m.metadata["signal_type"] == "EDS_SEM" and m.metadata["title"] == "EDX"
    assert peak_energy(m, 1.6, 1.9) == pytest.approx(1.740, abs=0.05)  # Si Ka
    assert peak_energy(m, 6.2, 6.6) == pytest.approx(6.404, abs=0.05)  # Fe Ka
    binned = read_spectrum_image(path, bin_channels=4, bin_scan=3)
    assert binned.data.shape == (10, 10, 512)
    assert binned.data.sum(dtype=np.float64).compute() == reference.sum()
    assert binned.axes[0].scale == pytest.approx(3 * y.scale)
    assert binned.axes[2].offset == pytest.approx(e.offset + 1.5 * e.scale)
    json.dumps(m.metadata)
    assert digest(path) == before


@pytest.mark.realdata
def test_real_bruker_p45_picks_the_eds_cube():
    path = real_file(P45)
    before = digest(path)
    m = read_spectrum_image(path, bin_scan=2)
    assert m.data.shape == (37, 50, 2048)
    assert m.metadata["signal_index"] == 2 and m.metadata["title"] == "EDX"
    assert m.metadata["binning"]["dropped"]["rows"] == 1
    assert peak_energy(m, 1.6, 1.9) == pytest.approx(1.740, abs=0.05)  # Si Ka
    expect_file_error(path, "(75, 100)", "2-D image", "image modality", signal="BSE")
    assert digest(path) == before


@pytest.mark.realdata
def test_real_velox_eds():
    pytest.importorskip("sparse")
    path = real_file(VELOX)
    before = digest(path)
    m = read_spectrum_image(path, bin_channels=2)
    assert m.data.shape == (50, 10, 2048)
    assert m.metadata["title"] == "EDS" and m.metadata["signal_index"] == 1
    assert [a.units for a in m.axes] == ["nm", "nm", "keV"]
    assert m.axes[0].scale == pytest.approx(1.234, abs=1e-3)
    assert peak_energy(m, 5.2, 5.6) == pytest.approx(5.415, abs=0.05)  # Cr Ka
    assert peak_energy(m, 7.2, 7.7) == pytest.approx(7.478, abs=0.05)  # Ni Ka
    assert digest(path) == before


@pytest.fixture(scope="module")
def jeol_asw():
    """The JEOL FeS map read once through its .ASW, and its values.

    The first lazy JEOL read in a process compiles rsciio's decoder (a few s).
    """
    path = real_file(JEOL_ASW)
    before = digest(path.parent)
    m = read_spectrum_image(path, bin_channels=4, bin_scan=4)
    return path, before, m, m.data.compute()


@pytest.mark.realdata
def test_real_jeol_asw(jeol_asw):
    path, before, m, cube = jeol_asw
    assert isinstance(m.data, da.Array)
    assert m.data.shape == (128, 128, 1024) and m.data.dtype == np.float32
    assert m.metadata["binning"]["channels_by_reader"] == 4
    assert m.metadata["title"].startswith("EDS") and m.metadata["signal_index"] == 6
    y, x, e = m.axes
    assert (y.units, x.units, e.units) == ("µm", "µm", "keV")
    assert y.scale == pytest.approx(4 * 0.0086914, rel=1e-4)
    assert e.scale == pytest.approx(4 * 0.0099987, rel=1e-4)
    # S Ka and Fe Ka are the strongest peaks above 1 keV of the summed spectrum.
    counts = cube.sum(axis=(0, 1), dtype=np.float64)
    energies = e.offset + np.arange(e.size) * e.scale
    s_ka = (energies > 2.1) & (energies < 2.5)
    fe_ka = (energies > 6.2) & (energies < 6.6)
    assert energies[s_ka][counts[s_ka].argmax()] == pytest.approx(2.307, abs=0.05)
    assert energies[fe_ka][counts[fe_ka].argmax()] == pytest.approx(6.404, abs=0.05)
    weaker = counts[(energies > 1.0) & ~s_ka & ~fe_ka].max()
    assert min(counts[s_ka].max(), counts[fe_ka].max()) > 1.5 * weaker
    assert m.metadata["sweeps"] == {"read": 14, "recorded": 14}  # whole: read without a warning
    assert digest(path.parent) == before


@pytest.mark.realdata
def test_truncated_real_pts_says_how_much_of_the_acquisition_it_holds(tmp_path, jeol_asw):
    """RosettaSciIO reads a .pts cut short as the sweeps it holds whole and says so only in a
    log line below the warning level: half the FeS file gave half its counts without a word.
    Now the read warns with the sweeps read and recorded, and the metadata keep both."""
    source = real_file(JEOL_PTS)
    path = tmp_path / source.name
    path.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with pytest.warns(UserWarning, match=r"holds 6 whole sweeps of the 14 its header records") as caught:
        m = read_spectrum_image(path, bin_channels=4, bin_scan=4)
    assert str(path) in str(caught[0].message) and "copy is truncated or damaged" in str(caught[0].message)
    assert m.metadata["sweeps"] == {"read": 6, "recorded": 14}
    whole = jeol_asw[3].sum(dtype=np.float64)
    assert 0.3 < m.data.sum(dtype=np.float64).compute() / whole < 0.6  # what the sweeps read hold


@pytest.mark.realdata
def test_real_jeol_binning_conserves_counts(jeol_asw):
    rsciio_jeol = pytest.importorskip("rsciio.jeol")
    _, _, _, cube = jeol_asw
    pts = real_file(JEOL_PTS)
    # rsciio's own dense decoder (binning while decoding) is the reference.
    reference = rsciio_jeol.file_reader(
        str(pts), rebin_energy=4, downsample=4, SI_dtype=np.uint16
    )[0]["data"]
    np.testing.assert_array_equal(cube, reference.astype(np.float32))
    total = int(reference.sum())
    assert total > 250_000  # ~1.2 counts per pixel on 512 x 512
    coarse = read_spectrum_image(pts, bin_channels=16, bin_scan=8)
    assert coarse.data.shape == (64, 64, 256)
    assert coarse.data.sum(dtype=np.float64).compute() == total


@pytest.mark.realdata
def test_real_phenom_map():
    path = real_file(PHENOM)
    before = digest(path)
    m = read_spectrum_image(path, signal="map 6")
    assert m.data.shape == (16, 16, 2048) and isinstance(m.data, da.Array)
    assert m.metadata["title"] == "Image 1, Map 6"
    assert "Image 1, Map 3 [16x16x2048]" in m.metadata["signals_in_file"]
    assert [a.units for a in m.axes] == ["µm", "µm", "keV"]
    assert peak_energy(m, 1.3, 1.7) == pytest.approx(1.487, abs=0.05)  # Al Ka
    assert peak_energy(m, 0.8, 1.1) == pytest.approx(0.930, abs=0.05)  # Cu La
    assert digest(path) == before


@pytest.mark.realdata
def test_truncated_real_bcf(tmp_path):
    source = real_file(CHEVKINITE)
    path = tmp_path / source.name
    shutil.copyfile(source, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    expect_file_error(path, "truncated")


@pytest.mark.realdata
def test_truncated_elid_is_refused_instead_of_hanging(tmp_path):
    """rsciio's Phenom reader waits for ever for the rest of a truncated .elid's bzip2 stream
    (a batch hung with it); the stream's end is checked first.  Read in a child process with
    a time limit, so that a regression fails this test instead of hanging the test run.  A
    whole file with bytes after its stream is still read (the check then decompresses it)."""
    import subprocess
    import sys

    source = real_file(PHENOM)
    size = source.stat().st_size
    for cut in (2_000, size // 2, size - 1):
        path = tmp_path / f"cut{cut}.elid"
        path.write_bytes(source.read_bytes()[:cut])
        for reader in ("read_spectrum_image", "read_image"):
            probe = (f"from multimodal_seg.modalities import {reader}\n"
                     f"try:\n    {reader}({str(path)!r})\nexcept Exception as exc:\n    print(exc)")
            try:
                done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
            except subprocess.TimeoutExpired:
                pytest.fail(f"reading {path.name} with {reader} hung")
            assert path.name in done.stdout and "truncated" in done.stdout, done.stdout
            assert f"stops after {cut:,} bytes" in done.stdout, done.stdout
    padded = tmp_path / "padded.elid"
    padded.write_bytes(source.read_bytes() + b"\0" * 7)
    assert read_spectrum_image(padded, signal="map 6").data.shape == (16, 16, 2048)


@pytest.mark.realdata
def test_bcf_with_damaged_hypermap_bytes_is_refused_without_killing_the_process(tmp_path):
    """64 random bytes inside the real P45 file's hypermap made RosettaSciIO's compiled
    decoder kill the process (SIGSEGV or SIGBUS: a batch died with it); the file is now decoded
    in a child process first, and the crash becomes an error that names the file.  Read in a
    child process here too, so that a regression fails this test instead of crashing the test
    run.  The BSE image of the same file, which needs no hypermap, still reads."""
    import subprocess
    import sys

    source = real_file(P45)
    for at in (285_113, 405_349):  # places (and bytes, seeded by the place) that crashed it
        path = tmp_path / f"damaged{at}.bcf"
        data = bytearray(source.read_bytes())
        data[at : at + 64] = np.random.default_rng(at).integers(0, 256, 64, dtype=np.uint8).tobytes()
        path.write_bytes(bytes(data))
        probe = ("from multimodal_seg.modalities import read_spectrum_image, read_image\n"
                 f"try:\n    read_spectrum_image({str(path)!r})\nexcept Exception as exc:\n    print(exc)\n"
                 f"print(read_image({str(path)!r}).data.shape)")
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (at, done.returncode, done.stderr[-2000:])
        said = done.stdout
        assert path.name in said and "decoder crashed on it (SIG" in said and "damaged" in said, said
        assert "(75, 100)" in said, said


@pytest.mark.realdata
def test_bcf_cut_inside_its_hypermap_is_refused_before_decoding(tmp_path):
    """rsciio's compiled Bruker decoder reads past the end of a file cut inside its spectrum
    data and kills the process (a segmentation fault); the container's declared length is
    checked first.  Read in a child process, so that a regression fails this test instead of
    crashing the test run."""
    import subprocess
    import sys

    source = real_file(P45)
    size = source.stat().st_size
    for cut in (200_000, 300_000, 500_000, size - 1):
        path = tmp_path / f"cut{cut}.bcf"
        path.write_bytes(source.read_bytes()[:cut])
        for reader in ("read_spectrum_image", "read_image"):
            probe = (f"from multimodal_seg.modalities import {reader}\n"
                     f"try:\n    {reader}({str(path)!r})\nexcept Exception as exc:\n    print(exc)")
            done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, (cut, reader, done.returncode, done.stderr[-2000:])
            assert path.name in done.stdout and "truncated" in done.stdout, done.stdout
            assert f"{cut:,} bytes of the {size:,}" in done.stdout, done.stdout


def _iron_cube() -> np.ndarray:
    """A 16 x 16 EDS map on 1000 channels of 20 eV: Fe K alpha over a falling continuum in the
    left half, the continuum alone in the right (Poisson counts)."""
    rng = np.random.default_rng(0)
    energy = np.arange(1000) * 0.02
    iron = 30 * np.exp(-energy / 3) + 400 * np.exp(-0.5 * ((energy - 6.404) / 0.06) ** 2)
    cube = rng.poisson(np.broadcast_to(iron, (16, 16, 1000))).astype(np.float32)
    cube[:, 8:] = rng.poisson(30 * np.exp(-energy / 3), (16, 8, 1000))
    return cube


def test_beam_energy_given_to_the_reader_names_the_lines_by_it(tmp_path):
    """``beam_energy`` (keV) is recorded with the modality and the run's line table, and the
    report says where it came from; a value that is no beam energy is refused."""
    import multimodal_seg as mms

    cube = _iron_cube()
    options = {"energy_scale": 0.02, "energy_units": "keV", "beam_energy": 30.0}
    assert read_spectrum_image(cube, **options).metadata["beam_energy_kev"] == 30.0
    seg = mms.segment({"eds:spectrum": (cube, options)}, progress=False)
    assert seg.lines["eds"]["beam_energy"] == 30.0 and seg.lines["eds"]["beam_energy_from"] == "option"
    seg.save(tmp_path / "run")
    page = (tmp_path / "run" / "report.html").read_text()
    assert "a beam of 30 keV (as the reader's beam_energy gives it)" in page and "Fe_Ka" in page
    plain = mms.segment({"eds:spectrum": (cube, {k: v for k, v in options.items() if k != "beam_energy"})},
                        progress=False)
    # without it, the axis' top (19.98 keV) is assumed
    assert plain.lines["eds"]["beam_energy"] == pytest.approx(19.98) and plain.lines["eds"]["beam_energy_from"] == "axis"
    for bad in (0, -5.0, float("nan"), "30 kV", True):
        with pytest.raises(ParameterError, match="beam_energy"):
            read_spectrum_image(cube, beam_energy=bad, **{k: v for k, v in options.items() if k != "beam_energy"})


def test_an_eds_axis_in_ev_is_read_in_kev_and_its_lines_named_as_x_ray_lines(tmp_path):
    """X-ray lines are tabulated in keV and EELS edges in eV, and the axis' units told the two
    apart: an EDS spectrum image calibrated in eV had its iron K alpha peak read against EELS
    edges.  The reader gives EDS in keV and EELS in eV (known from the file's or signal's type,
    else the modality's name) and records the units it read; the run names Fe K alpha."""
    import hyperspy.api as hs

    import multimodal_seg as mms
    from multimodal_seg.hyperspy.convert import to_modality

    cube = _iron_cube()
    options = {"energy_scale": 20.0, "energy_units": "eV", "beam_energy": 30.0}
    read = read_spectrum_image(cube, name="eds", **options)
    assert read.axes[2].units == "keV" and read.axes[2].scale == pytest.approx(0.02)
    assert read.metadata["energy_units_read"] == "eV"
    seg = mms.segment({"eds:spectrum": (cube, options)}, progress=False)
    assert seg.lines["eds"]["units"] == "keV" and "Fe_Ka" in seg.lines["eds"]["features"]
    # EELS in keV is read in eV; a spectrum image of no known kind keeps its units
    assert read_spectrum_image(cube, name="eels", energy_scale=0.001, energy_units="keV").axes[2].units == "eV"
    assert read_spectrum_image(cube, name="si", **options).axes[2].units == "eV"
    # a HyperSpy EDS signal in eV, whatever its name
    signal = hs.signals.Signal1D(cube)
    signal.set_signal_type("EDS_TEM")
    signal.axes_manager[-1].scale, signal.axes_manager[-1].units = 20.0, "eV"
    modality = to_modality(signal, name="map")
    assert modality.axes[2].units == "keV" and modality.axes[2].scale == pytest.approx(0.02)
