"""Diffraction (4D-STEM) modality reader and the pattern helpers.

Round trips write real files into ``tmp_path``: HyperSpy ``.hspy``, an EMPAD
``.xml`` + ``.raw`` pair, and EMD 1.0 files written by ``emdfile`` (the file layer py4DSTEM
saves through) and, with h5py, in the layout of a py4DSTEM ``DataCube`` (py4DSTEM itself
pins numpy < 2 and is not installed with the tests).  Real
detector files come from ``../shared/data`` and are skipped where it is absent.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dask.array as da
import h5py
import numpy as np
import pytest

from multimodal_seg.errors import InputError, ParameterError
from multimodal_seg.modalities import (
    SUPPORTED_DIFFRACTION_EXTENSIONS,
    centre_of_mass,
    centre_patterns,
    get_reader,
    read_diffraction,
    scale_patterns,
)

from .conftest import assert_file_error, assert_reader_error, shared_file, tree_digest  # noqa: E402
MERLIN = "fourd/merlin_4x2/001_4x2_6bit.mib"
EBSD = "fourd/kikuchipy_ni_ebsd_3x3/patterns.h5"
VELOX_EDS = (
    "multimodal/velox_Nb_interface_STEM_EDS/fei_SI_SuperX-HAADF_20frames_10x50.emd"
)
HAADF_EMD = "images/velox_particles_on_support_HAADF_512.emd"
BCF = "multimodal/bruker_chevkinite_SEM_EDS/30x30_instructively_packed_16bit_compressed.bcf"


# --------------------------------------------------------------------------- helpers


real_file = shared_file
digest = tree_digest


def expect_error(source, where_name: str, *needles: str, **kwargs):
    """read_diffraction(source) raises (InputError by default) naming where_name, with a fix."""
    return assert_reader_error(read_diffraction, source, where_name, *needles, **kwargs)


def expect_file_error(path: Path, *needles: str, **kwargs):
    return assert_file_error(read_diffraction, path, *needles, **kwargs)


def axis_tuple(axis):
    return (axis.name, axis.size, axis.scale, axis.offset, axis.units)


def scan_signal(cube: np.ndarray):
    """HyperSpy Signal2D scan with calibrated navigation and detector axes."""
    hs = pytest.importorskip("hyperspy.api")
    s = hs.signals.Signal2D(cube)
    nx, ny = s.axes_manager.navigation_axes  # hyperspy orders (x, y)
    nx.scale, nx.units = 2.0, "nm"
    ny.scale, ny.offset, ny.units = 1.5, 4.0, "nm"
    for ax in s.axes_manager.signal_axes:
        ax.scale, ax.offset, ax.units = 0.05, -0.4, "1/nm"
    s.metadata.General.title = "scan"
    return s


def write_py4dstem(path: Path, cube: np.ndarray, *, virtual_image: bool = True) -> None:
    """An EMD 1.0 file in the layout emdfile 0.0.16 (py4DSTEM 0.14) writes.

    Root attributes, a Root group, an Array group ``datacube`` holding ``data`` and
    linear dims stored as ``[start, step]``; optionally a 2-D virtual image saved
    as a child node (py4DSTEM saves virtual images, dp_mean etc. that way).
    """
    with h5py.File(path, "w") as f:
        f.attrs.update(
            {
                "UUID": "00000000-0000-0000-0000-000000000000",
                "authoring_program": "emdfile",
                "authoring_user": "",
                "emd_group_type": "file",
                "version_major": 1,
                "version_minor": 0,
            }
        )
        root = f.create_group("experiment")
        root.attrs.update({"emd_group_type": "root", "python_class": "Root"})
        node = root.create_group("datacube")
        node.attrs.update({"emd_group_type": "array", "python_class": "DataCube"})
        node.create_dataset("data", data=cube).attrs["units"] = "pixel intensity"
        dims = [
            ("Rx", "nm", 2.0),
            ("Ry", "nm", 2.0),
            ("Qx", "A^-1", 0.1),
            ("Qy", "A^-1", 0.1),
        ]
        for i, (name, units, step) in enumerate(dims):
            dim = node.create_dataset(f"dim{i}", data=np.array([0.0, step]))
            dim.attrs.update({"name": name, "units": units})
        if virtual_image:
            child = node.create_group("virtual_bf")
            child.attrs.update({"emd_group_type": "array", "python_class": "RealSlice"})
            child.create_dataset("data", data=cube.sum(axis=(2, 3)).astype(np.float32))
            for i, name in enumerate(("Rx", "Ry")):
                dim = child.create_dataset(f"dim{i}", data=np.array([0.0, 2.0]))
                dim.attrs.update({"name": name, "units": "nm"})


def gaussian_disc(shape, centre, sigma=2.5, peak=100.0) -> np.ndarray:
    yy, xx = np.indices(shape, dtype=np.float64)
    r2 = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2
    return peak * np.exp(-r2 / (2 * sigma**2))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def scan(rng) -> np.ndarray:
    """Poisson counts, 5 x 4 scan of 16 x 18 patterns, uint16."""
    return rng.poisson(2.0, size=(5, 4, 16, 18)).astype(np.uint16)


# ------------------------------------------------------------------------- round trips


def test_hspy_round_trip(tmp_path, scan):
    path = tmp_path / "scan.hspy"
    scan_signal(scan).save(path)
    before = digest(path)
    m = read_diffraction(path, name="4dstem")
    assert isinstance(m.data, da.Array)
    assert m.data.dtype == np.float32 and m.data.shape == (5, 4, 16, 18)
    assert m.data.chunksize[2:] == (16, 18)  # whole patterns per chunk
    np.testing.assert_array_equal(m.data.compute(), scan)
    assert [axis_tuple(a) for a in m.axes] == [
        ("y", 5, 1.5, 4.0, "nm"),
        ("x", 4, 2.0, 0.0, "nm"),
        ("qy", 16, 0.05, -0.4, "1/nm"),
        ("qx", 18, 0.05, -0.4, "1/nm"),
    ]
    assert (m.name, m.kind, m.source) == ("4dstem", "diffraction", str(path))
    assert m.metadata["reader"] == "rsciio.hspy" and m.metadata["calibration"] == "file"
    json.dumps(m.metadata)
    assert digest(path) == before


def test_binning_sums_scan_blocks_and_detector_pixels(tmp_path, scan):
    path = tmp_path / "scan.hspy"
    scan_signal(scan).save(path)
    m = read_diffraction(path, bin_scan=2, bin_detector=3)
    assert m.data.shape == (2, 2, 5, 6)
    kept = scan[:4, :4, :15, :18].astype(np.int64)
    expected = kept.reshape(2, 2, 2, 2, 5, 3, 6, 3).sum(axis=(1, 3, 5, 7))
    np.testing.assert_array_equal(m.data.compute(), expected)
    y, x, qy, _ = m.axes
    assert (y.scale, y.offset) == (3.0, 4.75)
    assert (x.scale, x.offset) == (4.0, 1.0)
    assert (qy.scale, qy.offset) == pytest.approx((0.15, -0.35))
    assert m.metadata["binning"]["dropped"] == {"y": 1, "x": 0, "qy": 1, "qx": 0}
    m = read_diffraction(scan, bin_scan=1, bin_detector=2)
    assert m.data.sum().compute() == scan.sum()  # divisible: every count kept


def test_numpy_and_dask_input(scan):
    kept = scan.copy()
    m = read_diffraction(scan, chunks=2)
    assert m.source == "<array>" and m.metadata["reader"] == "numpy"
    assert m.data.chunks[0] == (2, 2, 1) and m.data.chunksize == (2, 4, 16, 18)
    np.testing.assert_array_equal(m.data.compute(), scan.astype(np.float32))
    np.testing.assert_array_equal(scan, kept)
    assert [axis_tuple(a) for a in m.axes] == [
        ("y", 5, 1.0, 0.0, "px"),
        ("x", 4, 1.0, 0.0, "px"),
        ("qy", 16, 1.0, 0.0, "px"),
        ("qx", 18, 1.0, 0.0, "px"),
    ]
    m = read_diffraction(
        da.from_array(scan, chunks=(1, 1, 8, 8)),
        chunks=(2, 3),
        scan_step=0.7,
        scan_units="nm",
        q_scale=0.02,
        q_units="1/Å",
    )
    assert m.metadata["reader"] == "dask" and m.data.chunksize == (2, 3, 16, 18)
    assert [axis_tuple(a)[2:] for a in m.axes] == [(0.7, 0.0, "nm")] * 2 + [
        (0.02, 0.0, "1/Å")
    ] * 2
    json.dumps(m.metadata)


def test_flat_stack_needs_scan_shape(tmp_path, scan):
    hs = pytest.importorskip("hyperspy.api")
    stack = scan.reshape(20, 16, 18)
    path = tmp_path / "stack.hspy"
    hs.signals.Signal2D(stack).save(path)
    expect_file_error(path, "stack of 20", "scan_shape=(rows, cols)")
    m = read_diffraction(path, scan_shape=(5, 4))
    np.testing.assert_array_equal(m.data.compute(), scan)
    assert m.metadata["scan_shape"] == "argument"
    assert [a.name for a in m.axes] == ["y", "x", "qy", "qx"]
    m = read_diffraction(stack, scan_shape=(4, 5), scan_step=1.0, scan_units="nm")
    np.testing.assert_array_equal(m.data.compute(), stack.reshape(4, 5, 16, 18))
    assert m.axes[0].units == "nm"
    expect_error(
        stack, "scan_shape", "20 patterns", error=ParameterError, scan_shape=(3, 3)
    )
    expect_error(stack, "<array>", "3-D", "scan_shape")  # an array stack, no flags


def test_py4dstem_emd1_file(tmp_path, scan):
    for name in ("datacube.h5", "datacube.emd"):
        path = tmp_path / name
        write_py4dstem(path, scan)
        before = digest(path)
        m = read_diffraction(path)
        np.testing.assert_array_equal(m.data.compute(), scan)
        y, x, qy, _ = m.axes
        assert (y.scale, y.units, x.scale) == (2.0, "nm", 2.0)
        assert qy.scale == pytest.approx(0.1) and "Å" in qy.units
        assert m.metadata["title"] == "datacube"
        assert m.metadata["signals_in_file"] == [
            "datacube [5x4x16x18]",
            "virtual_bf [5x4]",
        ]
        expect_file_error(path, "2-D image", "image modality", signal="virtual")
        assert digest(path) == before


def test_file_written_by_emdfile_itself(tmp_path, scan):
    """The writer py4DSTEM saves through (emdfile), not an imitation of its layout."""
    emdfile = pytest.importorskip("emdfile")
    cube = emdfile.Array(data=scan, name="datacube", units="counts",
                         dims=[[0, 2.0], [0, 2.0], [0, 0.1], [0, 0.1]],
                         dim_names=["Rx", "Ry", "Qx", "Qy"], dim_units=["nm", "nm", "A^-1", "A^-1"])
    root = emdfile.Root(name="experiment")
    root.tree(cube)
    cube.tree(emdfile.Array(data=scan.sum(axis=(2, 3)).astype(np.float32), name="virtual_bf",
                            dims=[[0, 2.0], [0, 2.0]], dim_units=["nm", "nm"]))
    path = tmp_path / "scan.emd"
    emdfile.save(str(path), root)
    before = digest(path)
    m = read_diffraction(path)
    np.testing.assert_array_equal(m.data.compute(), scan)
    y, x, qy, qx = m.axes
    assert (y.scale, y.units, x.scale, x.units) == (2.0, "nm", 2.0, "nm")
    assert qy.scale == pytest.approx(0.1) and qx.scale == pytest.approx(0.1) and "Å" in qy.units
    assert m.metadata["title"] == "datacube"
    expect_file_error(path, "2-D image", "image modality", signal="virtual")
    assert digest(path) == before


def test_empad_xml_and_raw(tmp_path, rng):
    # EMPAD frames are 128 x 130 float32 rows: 128 rows of data, 2 rows of footer.
    frames = rng.poisson(2.0, size=(3, 4, 130, 128)).astype("<f4")
    frames.tofile(tmp_path / "scan_x4_y3.raw")
    xml = tmp_path / "scan.xml"
    xml.write_text(
        '<root><raw_file filename="scan_x4_y3.raw"/><pix_x>4</pix_x>'
        "<pix_y>3</pix_y></root>"
    )
    m = read_diffraction(xml, q_scale=0.03, q_units="1/nm")
    assert m.data.shape == (3, 4, 128, 128)
    np.testing.assert_array_equal(m.data.compute(), frames[:, :, :128, :])
    assert m.metadata["reader"] == "rsciio.empad"
    assert axis_tuple(m.axes[2])[2:] == (0.03, 0.0, "1/nm")


def test_registered():
    assert get_reader("diffraction") is read_diffraction


# --------------------------------------------------------------------------- helpers


def test_scale_patterns(rng):
    counts = rng.poisson(5.0, size=(3, 8, 8)).astype(np.uint16)
    kept = counts.copy()
    log = scale_patterns(counts, "log")
    assert log.dtype == np.float32 and log.shape == counts.shape
    np.testing.assert_allclose(log, np.log1p(counts.astype(np.float64)), rtol=1e-6)
    none = scale_patterns(counts, "none")
    np.testing.assert_array_equal(none, counts)
    assert none.dtype == np.float32
    np.testing.assert_array_equal(counts, kept)  # input untouched
    assert scale_patterns(np.array([[-2.0, 0.0]]), "log").tolist() == [[0.0, 0.0]]
    with pytest.raises(ParameterError, match="anscombe"):
        scale_patterns(counts, "sqrt")


@pytest.mark.parametrize("mean", [4.0, 10.0, 40.0])
def test_anscombe_stabilises_poisson_variance(rng, mean):
    counts = rng.poisson(mean, size=(50, 64, 64))
    assert counts.var() == pytest.approx(mean, rel=0.05)  # raw: variance = mean
    stabilised = scale_patterns(counts, "anscombe")
    np.testing.assert_allclose(stabilised, 2 * np.sqrt(counts + 0.375), rtol=1e-6)
    assert stabilised.var(dtype=np.float64) == pytest.approx(1.0, abs=0.06)


def test_centre_of_mass_and_recentring_a_shifted_disc():
    shape = (48, 64)
    disc = gaussian_disc(shape, (20.3, 27.8))
    centres = centre_of_mass(disc)
    assert centres.shape == (1, 2)
    np.testing.assert_allclose(centres[0], (20.3, 27.8), atol=1e-3)
    centred = centre_patterns(disc, centres)
    assert centred.shape == shape and centred.dtype == np.float32
    np.testing.assert_allclose(centre_of_mass(centred)[0], (23.5, 31.5), atol=0.1)
    assert np.unravel_index(centred.argmax(), shape) in {
        (23, 31),
        (24, 32),
        (23, 32),
        (24, 31),
    }


def test_recentring_a_scan_of_patterns(rng):
    truth = rng.uniform(14, 34, size=(2, 3, 2))
    patterns = np.stack(
        [gaussian_disc((48, 48), c) for c in truth.reshape(-1, 2)]
    ).reshape(2, 3, 48, 48)
    centres = centre_of_mass(patterns)
    assert centres.shape == (6, 2)
    np.testing.assert_allclose(centres, truth.reshape(-1, 2), atol=1e-3)
    centred = centre_patterns(patterns, centres, order=3)
    assert centred.shape == (2, 3, 48, 48)
    np.testing.assert_allclose(centre_of_mass(centred), 23.5, atol=0.1)


def test_threshold_isolates_the_direct_beam():
    pattern = gaussian_disc((64, 64), (40.2, 22.6)) + 5.0  # diffuse background
    biased = centre_of_mass(pattern)[0]
    assert abs(biased[0] - 40.2) > 1.0  # the background pulls to the centre
    np.testing.assert_allclose(
        centre_of_mass(pattern, threshold=0.5)[0], (40.2, 22.6), atol=0.05
    )
    empty = np.zeros((2, 10, 12))
    np.testing.assert_array_equal(centre_of_mass(empty), [[4.5, 5.5], [4.5, 5.5]])


def test_helper_parameters():
    patterns = np.ones((2, 8, 8))
    for bad in (np.zeros((3, 2)), np.zeros(2), np.full((2, 2), np.nan)):
        with pytest.raises(ParameterError, match="centres"):
            centre_patterns(patterns, bad)
    with pytest.raises(ParameterError, match="order"):
        centre_patterns(patterns, centre_of_mass(patterns), order=7)
    for bad in (1.0, -0.1, True):
        with pytest.raises(ParameterError, match="threshold"):
            centre_of_mass(patterns, threshold=bad)
    with pytest.raises(ParameterError, match="qy, qx"):
        centre_of_mass(np.ones(5))
    with pytest.raises(ParameterError, match="real"):
        centre_of_mass(np.ones((4, 4)) * 1j)


# --------------------------------------------------------------------------- bad input


def test_missing_file_directory_and_extensions(tmp_path):
    expect_error(tmp_path / "absent.mib", "absent.mib", "not found")
    folder = tmp_path / "scan.mib"
    folder.mkdir()
    expect_error(folder, "scan.mib", "directory")
    path = tmp_path / "scan.xyz"
    path.write_bytes(b"\x00" * 64)
    expect_file_error(path, "unsupported", *SUPPORTED_DIFFRACTION_EXTENSIONS)
    for name, modality in [("haadf.tif", "image"), ("map.bcf", "spectrum")]:
        path = tmp_path / name
        path.write_bytes(b"\x00" * 64)
        expect_file_error(path, f"read by the {modality} modality")


@pytest.mark.parametrize(
    "name", ["garbage.mib", "garbage.xml", "garbage.h5", "garbage.emd", "garbage.dm4"]
)
def test_corrupt_files(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"x" * 600)
    expect_file_error(path, "cannot be read")


def test_blockfile_without_scikit_image(tmp_path):
    path = tmp_path / "scan.blo"
    path.write_bytes(b"x" * 600)
    err = expect_file_error(path)
    try:
        import skimage  # noqa: F401
    except ModuleNotFoundError:
        assert "scikit-image" in str(err) and "skimage" in str(err)
    else:
        assert "cannot be read" in str(err)


def test_unknown_hdf5_layout(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("frames", data=np.ones((2, 3, 4, 4)))
    expect_file_error(path, "layout", "frames", "hs.signals.Signal2D", "datacube.data")


def test_h5ebsd_header_that_does_not_match(tmp_path):
    path = tmp_path / "patterns.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("manufacturer", data=np.array([b"kikuchipy"]))
        f.create_dataset("Scan 1/EBSD/Data/patterns", data=np.ones((5, 4, 4), np.uint8))
        f.create_dataset("Scan 1/EBSD/Header/n_rows", data=np.array([2]))
        f.create_dataset("Scan 1/EBSD/Header/n_columns", data=np.array([2]))
    expect_file_error(path, "2 x 2", "5 patterns", "scan_shape")


def test_wrong_kinds_say_what_they_are(tmp_path, rng):
    hs = pytest.importorskip("hyperspy.api")
    expect_error(rng.random(30), "<array>", "single spectrum")
    expect_error(rng.random((8, 9)), "<array>", "2-D image", "image modality")
    expect_error(rng.random((2, 2, 2, 4, 4)), "<array>", "5-D")
    si = tmp_path / "eds.hspy"
    s = hs.signals.Signal1D(rng.random((4, 5, 40)))
    s.set_signal_type("EDS_TEM")
    s.save(si)
    expect_file_error(si, "spectrum image", "spectrum modality")
    expect_error(si, "eds.hspy", "spectrum image", scan_shape=(2, 10))
    image = tmp_path / "image.hspy"
    hs.signals.Signal2D(rng.random((12, 12))).save(image)
    expect_file_error(image, "(12, 12)", "2-D image", "image modality")


def test_all_zero_empty_nan_and_parameters(scan):
    expect_error(np.zeros((2, 2, 8, 8), np.uint8), "<array>", "all zeros")
    expect_error(np.zeros((2, 0, 8, 8)), "<array>", "empty")
    bad = scan.astype(np.float32)
    bad[0, 0, 0, :3] = np.nan
    bad[1, 1, 1, 1] = -np.inf
    expect_error(bad, "<array>", f"4 of {bad.size} values", "NaN")
    for kwargs in (
        {"bin_scan": 0},
        {"bin_detector": -1},
        {"bin_detector": 2.0},
        {"scan_shape": (5,)},
        {"scan_shape": (0, 20)},
        {"scan_shape": "5x4"},
        {"chunks": -1},
        {"signal": 0},
        {"scan_units": "nm"},
        {"q_units": "1/nm"},
        {"q_scale": -0.1},
    ):
        with pytest.raises(ParameterError, match="fix:"):
            read_diffraction(scan, **kwargs)
    expect_error(scan, "bin_scan", "4 cols", error=ParameterError, bin_scan=5)
    expect_error(scan, "bin_detector", "16 qy", error=ParameterError, bin_detector=17)
    with pytest.raises(InputError, match="cannot read diffraction"):
        read_diffraction([[1, 2], [3, 4]])


# --------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_real_merlin_mib():
    rsciio_qd = pytest.importorskip("rsciio.quantumdetector")
    path = real_file(MERLIN)
    hdr = path.with_suffix(".hdr")
    before = digest(path, hdr)
    m = read_diffraction(path)
    assert isinstance(m.data, da.Array)
    assert m.data.shape == (2, 4, 256, 256) and m.data.dtype == np.float32
    reference = rsciio_qd.file_reader(str(path))[0]["data"]
    np.testing.assert_array_equal(m.data.compute(), reference)
    assert m.metadata["signal_type"] == "electron_diffraction"
    assert m.metadata["original_dtype"] == "uint8"
    assert [a.units for a in m.axes] == ["px"] * 4
    # 6-bit counts; a saturated direct beam that barely moves during the scan.
    assert reference.max() == 63
    centres = centre_of_mass(reference, threshold=0.9)
    assert np.ptp(centres, axis=0).max() < 3.0
    binned = read_diffraction(path, bin_scan=2, bin_detector=4)
    assert binned.data.shape == (1, 2, 64, 64)
    assert binned.data.sum(dtype=np.float64).compute() == reference.sum()
    flat = read_diffraction(path, scan_shape=(4, 2))
    np.testing.assert_array_equal(
        flat.data.compute(), reference.reshape(4, 2, 256, 256)
    )
    assert digest(path, hdr) == before


@pytest.mark.realdata
def test_truncated_real_mib(tmp_path):
    source = real_file(MERLIN)
    path = tmp_path / source.name
    path.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    shutil.copyfile(source.with_suffix(".hdr"), path.with_suffix(".hdr"))
    expect_file_error(path, "4 of the 8 frames", "truncated", "scan_shape")
    m = read_diffraction(path, scan_shape=(1, 4))  # use the frames there are
    assert m.data.shape == (1, 4, 256, 256)


@pytest.mark.realdata
def test_real_kikuchipy_ebsd():
    path = real_file(EBSD)
    before = digest(path)
    m = read_diffraction(path)
    assert isinstance(m.data, da.Array)
    assert m.data.shape == (3, 3, 60, 60)
    with h5py.File(path, "r") as f:
        scan1 = f["Scan 1/EBSD/Data/patterns"][()]
        scan2 = f["Scan 2/EBSD/Data/patterns"][()]
    np.testing.assert_array_equal(m.data.compute(), scan1.reshape(3, 3, 60, 60))
    assert [axis_tuple(a) for a in m.axes[:2]] == [
        ("y", 3, 1.5, 0.0, "µm"),
        ("x", 3, 1.5, 0.0, "µm"),
    ]
    assert m.metadata["signal_type"] == "EBSD" and m.metadata["title"] == "Scan 1"
    m2 = read_diffraction(path, signal="scan 2", bin_detector=2)
    assert m2.metadata["signal_index"] == 1 and m2.data.shape == (3, 3, 30, 30)
    assert m2.data.sum(dtype=np.float64).compute() == scan2.sum()
    expect_file_error(path, "no signal title contains", signal="Scan 9")
    assert digest(path) == before


@pytest.mark.realdata
def test_real_image_and_spectrum_files_given_as_diffraction():
    haadf = real_file(HAADF_EMD)
    expect_file_error(haadf, "(512, 512)", "2-D image", "image modality")
    expect_file_error(real_file(BCF), "read by the spectrum modality")


@pytest.mark.realdata
def test_real_velox_eds_given_as_diffraction():
    pytest.importorskip("sparse")
    path = real_file(VELOX_EDS)
    expect_file_error(
        path, "no 4-D scan", "HAADF [50x10]", "EDS [50x10x4096]", "spectrum modality"
    )
