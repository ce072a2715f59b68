"""Image modality reader and the modality registry.

Round trips write real files with real writers (HyperSpy/RosettaSciIO, tifffile,
pillow) into ``tmp_path``; real instrument files come from ``../shared/data`` and are
skipped where that folder is absent.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import pytest

from multimodal_seg.errors import ParameterError
from multimodal_seg.modalities import (
    SUPPORTED_IMAGE_EXTENSIONS,
    ModalityData,
    available_modalities,
    get_reader,
    read_image,
    register_modality,
    registry,
)

from .conftest import DATA, assert_file_error, assert_reader_error, shared_file, tree_digest
LUMA = np.array([0.2126, 0.7152, 0.0722])


# --------------------------------------------------------------------------- helpers


real_file = shared_file
digest = tree_digest


def expect_input_error(source, where_name: str, *needles: str, **kwargs):
    """read_image(source) must raise InputError naming ``where_name`` with a fix."""
    return assert_reader_error(read_image, source, where_name, *needles, **kwargs)


def expect_file_error(path: Path, *needles: str, **kwargs):
    """As :func:`expect_input_error`, and the file is left byte-for-byte unchanged."""
    return assert_file_error(read_image, path, *needles, **kwargs)


def calibrated_signal(arr: np.ndarray, *, title: str = "test image"):
    """HyperSpy Signal2D with distinct calibrations on y and x."""
    hs = pytest.importorskip("hyperspy.api")
    s = hs.signals.Signal2D(arr)
    x, y = s.axes_manager.signal_axes  # hyperspy orders (x, y)
    x.scale, x.offset, x.units = 0.5, 3.0, "nm"
    y.scale, y.offset, y.units = 0.25, -1.0, "nm"
    s.metadata.General.title = title
    return s


def assert_calibrated(m: ModalityData, shape: tuple[int, int]) -> None:
    y, x = m.axes
    assert (y.name, y.size, y.scale, y.offset, y.units) == (
        "y",
        shape[0],
        0.25,
        -1.0,
        "nm",
    )
    assert (x.name, x.size, x.scale, x.offset, x.units) == (
        "x",
        shape[1],
        0.5,
        3.0,
        "nm",
    )


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def image_f32(rng) -> np.ndarray:
    return rng.random((20, 30), dtype=np.float32) * 100.0


# ------------------------------------------------------------------------- round trips


def test_hspy_round_trip(tmp_path, image_f32):
    path = tmp_path / "x.hspy"
    calibrated_signal(image_f32, title="my haadf").save(path)
    m = read_image(path, name="haadf")
    assert isinstance(m.data, da.Array)
    assert m.data.dtype == np.float32 and m.data.shape == (20, 30)
    np.testing.assert_array_equal(m.data.compute(), image_f32)
    assert_calibrated(m, (20, 30))
    assert (m.name, m.kind, m.source) == ("haadf", "image", str(path))
    assert m.metadata["title"] == "my haadf"
    assert m.metadata["reader"] == "rsciio.hspy"
    assert m.metadata["original_shape"] == [20, 30]
    json.dumps(m.metadata)


def hspy_as_zspy(hspy: Path, zspy: Path) -> None:
    """Copy a ``.hspy`` file's tree into a zarr v2 store: what HyperSpy writes as ``.zspy``
    (the same groups, arrays and attributes, in zarr), for environments where RosettaSciIO's
    ``.zspy`` writer, which needs zarr 2, cannot run."""
    import h5py
    import zarr

    def plain(value):
        if isinstance(value, bytes):
            return value.decode()
        if isinstance(value, np.ndarray):
            return [plain(v) for v in value.tolist()] if value.dtype.kind in "SO" else value.tolist()
        return value.item() if isinstance(value, np.generic) else value

    def copy(node, group) -> None:
        group.attrs.update({k: plain(v) for k, v in node.attrs.items()})
        for name, item in node.items():
            if isinstance(item, h5py.Group):
                copy(item, group.create_group(name))
            elif item.dtype.kind not in "SO":
                array = group.create_array(name, shape=item.shape, dtype=item.dtype)
                array[...] = item[()]
                array.attrs.update({k: plain(v) for k, v in item.attrs.items()})

    with h5py.File(hspy, "r") as source:
        copy(source, zarr.open_group(str(zspy), mode="w", zarr_format=2))


def test_zspy_is_read(tmp_path, image_f32):
    """A ``.zspy`` store (a folder) is read, with its calibration: written by RosettaSciIO where
    its writer runs, else as the same tree copied from ``.hspy`` (the writer needs zarr 2;
    the reader works with zarr 3)."""
    path = tmp_path / "x.zspy"
    try:
        calibrated_signal(image_f32).save(path)
    except Exception:  # noqa: BLE001 - rsciio's zspy writer needs zarr<3
        calibrated_signal(image_f32).save(tmp_path / "x.hspy")
        hspy_as_zspy(tmp_path / "x.hspy", path)
    assert path.is_dir()
    m = read_image(path)
    np.testing.assert_array_equal(m.data.compute(), image_f32)
    assert_calibrated(m, (20, 30))
    assert m.metadata["reader"] == "rsciio.zspy"


def test_ncem_emd_round_trip(tmp_path, image_f32):
    path = tmp_path / "x.emd"
    calibrated_signal(image_f32).save(path)  # rsciio writes the NCEM flavour
    m = read_image(path)
    np.testing.assert_array_equal(m.data.compute(), image_f32)
    y, x = m.axes
    assert (y.scale, y.units, x.scale, x.units) == (0.25, "nm", 0.5, "nm")


def write_mrc2014(path: Path, image: np.ndarray, pixel_angstrom: float) -> None:
    """Minimal MRC2014 file (1024-byte header + float32 data).

    Neither rsciio nor the test environment has an MRC writer, so the header is built
    from the published MRC2014 layout: 256 little-endian 4-byte words.
    """
    ny, nx = image.shape
    words = np.zeros(256, dtype="<i4")
    floats = words.view("<f4")
    words[0:4] = nx, ny, 1, 2  # NX, NY, NZ, MODE 2 = float32
    words[7:10] = nx, ny, 1  # MX, MY, MZ: sampling
    floats[10:13] = nx * pixel_angstrom, ny * pixel_angstrom, pixel_angstrom  # cell, Å
    floats[13:16] = 90.0
    words[16:19] = 1, 2, 3  # MAPC, MAPR, MAPS
    header = bytearray(words.tobytes())
    header[208:216] = b"MAP " + bytes([0x44, 0x44, 0, 0])  # MAP id, little-endian stamp
    path.write_bytes(bytes(header) + image.astype("<f4").tobytes())


def test_mrc(tmp_path, image_f32):
    path = tmp_path / "x.mrc"
    write_mrc2014(path, image_f32, pixel_angstrom=1.5)
    m = read_image(path)
    np.testing.assert_array_equal(m.data.compute(), image_f32)
    for axis in m.axes:  # rsciio reports MRC pixel sizes in nm
        assert axis.units == "nm" and axis.scale == pytest.approx(0.15)


def test_tiff_round_trip_through_rsciio_writer(tmp_path, image_f32):
    path = tmp_path / "x.tif"
    calibrated_signal(image_f32).save(path)
    m = read_image(path)
    np.testing.assert_array_equal(m.data.compute(), image_f32)
    assert_calibrated(m, (20, 30))


def test_uint16_tiff_from_tifffile_is_uncalibrated_float32(tmp_path, rng):
    tifffile = pytest.importorskip("tifffile")
    arr = rng.integers(0, 65536, size=(40, 24), dtype=np.uint16)
    arr[0, 0] = 65535  # float32 holds every uint16 exactly
    path = tmp_path / "u16.TIFF"  # extension matching ignores case
    tifffile.imwrite(path, arr)
    m = read_image(path, chunks=16)
    out = m.data.compute()
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, arr.astype(np.float32))
    assert m.data.chunksize == (16, 16)
    assert [(a.scale, a.offset, a.units) for a in m.axes] == [(1.0, 0.0, "px")] * 2
    assert m.metadata["original_dtype"] == "uint16"


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_png_colour_folded_to_luminance(tmp_path, rng, mode):
    Image = pytest.importorskip("PIL.Image")
    pixels = rng.integers(0, 256, size=(17, 23, len(mode)), dtype=np.uint8)
    path = tmp_path / f"colour_{mode}.png"
    Image.fromarray(pixels, mode=mode).save(path)
    m = read_image(path)
    expected = pixels[..., :3].astype(np.float64) @ LUMA
    np.testing.assert_allclose(m.data.compute(), expected, atol=1e-3)
    assert m.metadata["rgb_folded"] is True
    assert [a.units for a in m.axes] == ["px", "px"]


def test_grey_png_and_jpeg(tmp_path, rng):
    Image = pytest.importorskip("PIL.Image")
    grey = rng.integers(0, 256, size=(32, 48), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_image(tmp_path / "g.png").data.compute(), grey)

    smooth = np.add.outer(np.arange(32), np.arange(48)).astype(np.uint8) * 2
    Image.fromarray(smooth).save(tmp_path / "g.jpg", quality=95)
    m = read_image(tmp_path / "g.jpg")
    decoded = np.asarray(Image.open(tmp_path / "g.jpg"), dtype=np.float32)
    np.testing.assert_array_equal(m.data.compute(), decoded)  # same pixels as pillow
    assert np.abs(decoded - smooth).mean() < 2.0  # and close to what was saved

    colour = np.stack([smooth, smooth[::-1], np.full_like(smooth, 90)], axis=-1)
    Image.fromarray(colour).save(tmp_path / "c.jpeg", quality=95)
    m = read_image(tmp_path / "c.jpeg")
    decoded = np.asarray(Image.open(tmp_path / "c.jpeg"), dtype=np.float64)
    assert m.metadata["rgb_folded"] is True
    np.testing.assert_allclose(m.data.compute(), decoded @ LUMA, atol=1e-3)


def test_numpy_and_dask_input(image_f32):
    ints = (image_f32 * 10).astype(np.int32)
    kept = ints.copy()
    m = read_image(ints, chunks=8)
    assert m.source == "<array>" and m.metadata["reader"] == "numpy"
    assert m.data.dtype == np.float32 and m.data.chunksize == (8, 8)
    np.testing.assert_array_equal(m.data.compute(), ints.astype(np.float32))
    np.testing.assert_array_equal(ints, kept)  # input untouched
    assert [(a.name, a.size, a.scale, a.units) for a in m.axes] == [
        ("y", 20, 1.0, "px"),
        ("x", 30, 1.0, "px"),
    ]
    json.dumps(m.metadata)

    m = read_image(da.from_array(image_f32, chunks=7), pixel_size=0.3, units="nm")
    assert m.metadata["reader"] == "dask"
    np.testing.assert_array_equal(m.data.compute(), image_f32)
    assert [(a.scale, a.offset, a.units) for a in m.axes] == [(0.3, 0.0, "nm")] * 2


def test_numpy_rgb_folded(rng):
    rgb = rng.random((9, 11, 3))
    np.testing.assert_allclose(read_image(rgb).data.compute(), rgb @ LUMA, rtol=1e-6)


def test_pixel_size_overrides_file_calibration(tmp_path, image_f32):
    path = tmp_path / "x.hspy"
    calibrated_signal(image_f32).save(path)
    m = read_image(path, pixel_size=2.0, units="µm")
    assert [(a.scale, a.offset, a.units) for a in m.axes] == [(2.0, 0.0, "µm")] * 2
    assert m.metadata["calibration"] == "pixel_size argument"


# --------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_real_velox_haadf():
    rsciio_emd = pytest.importorskip("rsciio.emd")
    path = real_file("images/velox_particles_on_support_HAADF_512.emd")
    m = read_image(path)
    assert m.data.shape == (512, 512) and m.data.dtype == np.float32
    reference = rsciio_emd.file_reader(str(path))[0]["data"]
    np.testing.assert_array_equal(m.data.compute(), reference.astype(np.float32))
    for axis in m.axes:
        assert axis.units in {"nm", "µm", "um", "Å", "pm"}
        assert axis.scale > 0 and axis.scale != 1.0
    assert m.metadata["title"] == "HAADF"
    json.dumps(m.metadata)


@pytest.mark.realdata
@pytest.mark.parametrize(
    "relative",
    [
        "images/zeiss_SEM_grains_1024x768.tif",
        "images/aquami_nanoporous_gold_SEM_1024x768.tif",
    ],
)
def test_real_sem_tiffs(relative):
    tifffile = pytest.importorskip("tifffile")
    path = real_file(relative)
    m = read_image(path)
    assert m.data.shape == (768, 1024)
    np.testing.assert_array_equal(
        m.data.compute(), tifffile.imread(path).astype(np.float32)
    )
    for axis in m.axes:
        assert axis.units != "px" and axis.scale > 0


@pytest.mark.realdata
def test_real_nasa_png():
    Image = pytest.importorskip("PIL.Image")
    pngs = sorted((DATA / "labelled/nasa_pmm/Super").glob("*_image.png"))
    if not pngs:
        pytest.skip("NASA PMM images not available")
    m = read_image(pngs[0])
    expected = np.asarray(Image.open(pngs[0]), dtype=np.float32)
    assert expected.ndim == 2
    np.testing.assert_array_equal(m.data.compute(), expected)


@pytest.mark.realdata
def test_real_velox_eds_file_gives_the_haadf_image():
    pytest.importorskip("sparse")  # rsciio refuses Velox SI files without it
    folder = DATA / "multimodal/velox_Nb_interface_STEM_EDS"
    files = sorted(folder.glob("*.emd")) if folder.exists() else []
    if not files:
        pytest.skip("Velox EDS data not available")
    path = files[0]
    before = digest(path)
    for m in (read_image(path), read_image(path, signal="haadf")):
        assert m.data.ndim == 2 and "HAADF" in m.metadata["title"]
        assert [a.units for a in m.axes] == ["nm", "nm"]
        assert m.metadata["signal_index"] == 0
    expect_file_error(path, "no signal title contains", signal="no such detector")
    expect_file_error(path, "signal=7", signal=7)
    assert digest(path) == before


# --------------------------------------------------------------------------- signals


def _fake_velox(
    tmp_path, monkeypatch, signals: list[tuple[str, tuple[int, ...]]]
) -> Path:
    """An .emd path whose rsciio reader returns the given (title, shape) signals.

    Stands in for multi-image Velox files, of which no small real example is at hand.
    """
    import rsciio.emd

    rng = np.random.default_rng(1)
    dicts = [
        {
            "data": da.from_array(rng.random(shape)),
            "axes": [
                {"size": n, "scale": 0.1, "offset": 0.0, "units": "nm"} for n in shape
            ],
            "metadata": {"General": {"title": title}},
        }
        for title, shape in signals
    ]
    monkeypatch.setattr(rsciio.emd, "file_reader", lambda *a, **k: dicts)
    path = tmp_path / "fake.emd"
    path.write_bytes(b"not read")
    return path


def test_signal_selection(tmp_path, monkeypatch):
    path = _fake_velox(
        tmp_path, monkeypatch, [("EDS", (6, 5, 40)), ("HAADF", (6, 5)), ("DF4", (6, 5))]
    )
    assert read_image(path).metadata["title"] == "HAADF"  # first 2-D image
    # part of two titles and equal to neither: which one was meant cannot be told
    expect_file_error(path, "signal='df' is part of several titles", "1: HAADF [6x5]", "2: DF4 [6x5]", signal="df")
    assert read_image(path, signal="haa").metadata["title"] == "HAADF"  # part of one title
    m = read_image(path, signal="df4")
    assert (m.metadata["title"], m.metadata["signal_index"]) == ("DF4", 2)
    assert read_image(path, signal=-1).metadata["title"] == "DF4"
    assert m.metadata["signals_in_file"] == ["EDS [6x5x40]", "HAADF [6x5]", "DF4 [6x5]"]
    expect_file_error(path, "(6, 5, 40)", "signal=", "spectrum", signal=0)


def test_a_signal_named_by_its_whole_title_is_that_one(tmp_path, monkeypatch):
    """A Bruker file holds "BSE" and "SE": signal="SE" is the SE image, not the BSE one whose
    title contains it."""
    path = _fake_velox(tmp_path, monkeypatch, [("BSE", (6, 5)), ("SE", (6, 5))])
    assert read_image(path, signal="SE").metadata["signal_index"] == 1
    assert read_image(path, signal="bse").metadata["signal_index"] == 0


def test_file_without_2d_image(tmp_path, monkeypatch):
    path = _fake_velox(
        tmp_path, monkeypatch, [("Spectrum", (40,)), ("EDS", (6, 5, 40))]
    )
    expect_file_error(path, "no 2-D image", "spectrum modality")


# --------------------------------------------------------------------------- bad input


def test_missing_file(tmp_path):
    path = tmp_path / "absent.tif"
    expect_input_error(path, "absent.tif", "not found")
    assert not path.exists()


def test_directory(tmp_path):
    folder = tmp_path / "stack.tif"
    folder.mkdir()
    expect_input_error(folder, "stack.tif", "directory")


def test_unknown_extension_lists_supported(tmp_path):
    path = tmp_path / "image.xyz"
    path.write_bytes(b"\x00" * 64)
    expect_file_error(path, "unsupported", *SUPPORTED_IMAGE_EXTENSIONS)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("empty.tif", b""),
        ("garbage.png", b"\x89PNG not really" * 10),
        ("garbage.emd", b"x" * 500),
    ],
    ids=["empty-tif", "garbage-png", "garbage-emd"],
)
def test_corrupt_files(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    expect_file_error(path, "cannot be read")


def test_truncated_tiff(tmp_path, rng):
    tifffile = pytest.importorskip("tifffile")
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, rng.integers(0, 65535, size=(256, 256), dtype=np.uint16))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    expect_file_error(path)


@pytest.mark.realdata
@pytest.mark.parametrize(
    "relative",
    [
        "images/velox_particles_on_support_HAADF_512.emd",
        "images/zeiss_SEM_grains_1024x768.tif",
    ],
)
def test_truncated_real_files(tmp_path, relative):
    source = real_file(relative)
    path = tmp_path / source.name
    shutil.copyfile(source, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    expect_file_error(path, "truncated")


def test_one_dimensional(tmp_path):
    hs = pytest.importorskip("hyperspy.api")
    path = tmp_path / "profile.hspy"
    hs.signals.Signal1D(np.arange(50.0)).save(path)
    expect_file_error(path, "(50,)", "1-D", "2-D image")
    expect_input_error(np.arange(5.0), "<array>", "1-D")


def test_stack_is_rejected(tmp_path, rng):
    hs = pytest.importorskip("hyperspy.api")
    path = tmp_path / "stack.hspy"
    hs.signals.Signal2D(rng.random((3, 16, 16))).save(path)
    expect_file_error(
        path, "(3, 16, 16)", "one 2-D image", "signal=", "spectrum modality"
    )
    expect_input_error(
        rng.random((5, 6, 7)), "<array>", "(5, 6, 7)", "spectrum modality"
    )


def test_nan_and_inf_are_counted(tmp_path, image_f32):
    tifffile = pytest.importorskip("tifffile")
    bad = image_f32.copy()
    bad[1, 2] = bad[3, 4] = bad[5, 6] = np.nan
    bad[7, 8] = -np.inf
    path = tmp_path / "holes.tif"
    tifffile.imwrite(path, bad)
    expect_file_error(path, "4 of 600", "NaN")
    expect_input_error(bad, "<array>", "4 of 600")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's cast-overflow warning
        expect_input_error(
            np.full((4, 4), 1e300), "<array>", "16 of 16"
        )  # > float32 max


def test_constant_image(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    path = tmp_path / "flat.tif"
    tifffile.imwrite(path, np.full((32, 32), 7, dtype=np.uint8))
    expect_file_error(path, "constant", "nothing to segment", "detector off")


@pytest.mark.realdata
def test_constant_image_of_a_file_of_several_signals_lists_the_others():
    """The first image of this Phenom file is blank; the fix lists the file's signals and
    says how to read its maps."""
    path = real_file("multimodal/phenom_AlCu_SEM_EDS/Elid2Version4.elid")
    expect_file_error(path, "constant", "--signal", "3: Image 1, Map 3 [16x16x2048]", "--modality eds=FILE")


def test_empty_and_complex_arrays():
    expect_input_error(np.zeros((0, 5)), "<array>", "empty")
    expect_input_error(np.ones((4, 4)) * (1 + 1j), "<array>", "complex")


def test_bad_parameters(image_f32):
    for kwargs in (
        {"chunks": 0},
        {"pixel_size": -1.0, "units": "nm"},
        {"pixel_size": "0.5", "units": "nm"},
        {"units": "nm"},
        {"signal": True},
        {"signal": 1.5},
    ):
        with pytest.raises(ParameterError, match="fix:"):
            read_image(image_f32, **kwargs)
    with pytest.raises(ParameterError, match="signal"):
        read_image(image_f32, signal=0)


# --------------------------------------------------------------------------- registry


@pytest.fixture
def clean_registry(monkeypatch):
    """A private copy of the registry, with plugin discovery not yet run."""
    monkeypatch.setattr(registry, "_READERS", dict(registry._READERS))
    monkeypatch.setattr(registry, "_plugins_discovered", False)
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **kw: importlib.metadata.EntryPoints(()))
    return registry


def _dummy_reader(source, *, name="dummy", **options) -> ModalityData:
    data = da.zeros((2, 3), dtype=np.float32)
    return ModalityData(name=name, kind="dummy", data=data, axes=[], source=str(source))


def test_image_is_registered(clean_registry):
    assert get_reader("image") is read_image
    assert "image" in available_modalities()


def test_register_and_get(clean_registry):
    assert register_modality("dummy", _dummy_reader) is _dummy_reader
    assert get_reader("dummy")("x.dat").source == "x.dat"

    @register_modality("decorated")
    def read_decorated(source, *, name="d"):
        return _dummy_reader(source, name=name)

    assert get_reader("decorated") is read_decorated
    assert available_modalities() == sorted(["decorated", "diffraction", "dummy", "image", "spectrum"])

    with pytest.raises(ParameterError, match="already registered"):
        register_modality("dummy", read_decorated)
    register_modality("dummy", read_decorated, overwrite=True)
    assert get_reader("dummy") is read_decorated
    with pytest.raises(ParameterError):
        register_modality("dummy", "not callable", overwrite=True)
    with pytest.raises(ParameterError):
        register_modality("two words", _dummy_reader)
    registry.unregister_modality("dummy")
    assert "dummy" not in available_modalities()


def test_unknown_kind_lists_available(clean_registry):
    with pytest.raises(ParameterError) as info:
        get_reader("hologram")
    assert "hologram" in str(info.value) and "image" in str(info.value)
    assert "fix:" in str(info.value)


def test_entry_point_plugins(clean_registry, monkeypatch, tmp_path):
    (tmp_path / "mmseg_fake_modality_plugin.py").write_text(
        "from multimodal_seg.modalities import ModalityData\n"
        "import dask.array as da\n"
        "def read_cl(source, *, name='cl'):\n"
        "    return ModalityData(name, 'cathodo', da.ones((2, 2)), [], str(source))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    group = registry.ENTRY_POINT_GROUP
    entry_points = [
        importlib.metadata.EntryPoint("cathodo", "mmseg_fake_modality_plugin:read_cl", group),
        importlib.metadata.EntryPoint("broken", "mmseg_no_such_module:read", group),
        importlib.metadata.EntryPoint("image", "mmseg_fake_modality_plugin:read_cl", group),
    ]
    calls = []

    def fake_entry_points(**kwargs):
        calls.append(kwargs)
        return entry_points if kwargs.get("group") == group else []

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kinds = available_modalities()
    assert kinds == ["cathodo", "diffraction", "image", "spectrum"]
    messages = [str(w.message) for w in caught]
    assert any("'broken'" in m and "failed to load" in m for m in messages)
    assert any("'image'" in m and "already registered" in m for m in messages)
    assert get_reader("image") is read_image  # built-in not hijacked
    assert get_reader("cathodo")("a.cl").kind == "cathodo"
    assert calls == [{"group": group}]  # discovered once, on first lookup
    with pytest.raises(ParameterError):
        get_reader("broken")
