"""The Study store (zarr), resumable stage outputs, and provenance helpers."""

from __future__ import annotations

import json
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp

import multimodal_seg as mms
from multimodal_seg import stages
from multimodal_seg.chips.grid import ChipGrid
from multimodal_seg.errors import InputError
from multimodal_seg.modalities.base import Axis, ModalityData
from multimodal_seg.provenance import (
    atomic_path,
    fingerprint,
    package_versions,
    run_record,
    to_json,
    write_text_atomic,
)
from multimodal_seg.chips.shared import ModalityChips
from multimodal_seg.pipeline.study import LAYOUT_VERSION, Study


@pytest.fixture(params=["memory", "disk"])
def study(request, tmp_path) -> Study:
    return Study.open(None if request.param == "memory" else tmp_path / "study.zarr")


def _modality(image: np.ndarray, name: str = "haadf", chunks=(40, 50)) -> ModalityData:
    return ModalityData(
        name=name,
        kind="image",
        data=da.from_array(image, chunks=chunks),
        axes=[Axis("y", image.shape[0], 0.04, 1.5, "nm"), Axis("x", image.shape[1], 0.05, 0.0, "nm")],
        source="<array>",
        metadata={"title": "test image", "dtype": str(image.dtype)},
    )


def _graph(seed: int = 0, n: int = 60) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    a = sp.random(n, n, density=0.1, random_state=rng, format="csr")
    return (a + a.T).tocsr()


# --- arrays and sparse matrices -------------------------------------------------------


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.int64).reshape(6, 2),
        np.random.default_rng(0).normal(size=(300, 17)).astype(np.float32),
        np.random.default_rng(1).integers(-1, 9, 1000).astype(np.int32),
        np.zeros((0, 5), dtype=np.float32),
    ],
    ids=["origins", "embeddings", "labels", "empty"],
)
def test_array_round_trip(study, array):
    study.write_array("stage/out", array, fingerprint="fp1", params={"k": 15}, note="x")
    back = study.read_array("stage/out")
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)
    attrs = study.attrs_of("stage/out")
    assert attrs["params"] == {"k": 15} and attrs["note"] == "x" and attrs["fingerprint"] == "fp1"


def test_overwriting_an_array_replaces_shape_and_values(study):
    study.write_array("a", np.ones((10, 3)), fingerprint="one")
    study.write_array("a", np.arange(4, dtype=np.int16), fingerprint="two")
    np.testing.assert_array_equal(study.read_array("a"), np.arange(4))
    assert study.fingerprint_of("a") == "two"


def test_sparse_round_trip(study):
    g = _graph()
    study.write_sparse("graphs/haadf", g, fingerprint="g1", params={"k": 5})
    back = study.read_sparse("graphs/haadf")
    assert back.format == "csr" and back.shape == g.shape
    assert (back != g).nnz == 0
    np.testing.assert_array_equal(back.toarray(), g.toarray())
    assert study.attrs_of("graphs/haadf")["params"] == {"k": 5}
    # Rewriting with fewer edges leaves no stale entries behind.
    smaller = sp.csr_matrix(sp.triu(g, k=5) + sp.triu(g, k=5).T)
    study.write_sparse("graphs/haadf", smaller, fingerprint="g2")
    assert (study.read_sparse("graphs/haadf") != smaller).nnz == 0


# --- modalities -------------------------------------------------------------------


def test_modality_round_trip_is_lazy_and_keeps_axes(study):
    image = np.random.default_rng(2).random((130, 170)).astype(np.float32)
    mod = _modality(image)
    study.write_modality(mod, fingerprint="m1")
    back = study.modality("haadf")
    assert isinstance(back.data, da.Array)
    assert back.data.shape == image.shape and back.data.dtype == np.float32
    np.testing.assert_array_equal(back.data.compute(), image)
    np.testing.assert_array_equal(np.asarray(back.data[10:20, 30:45]), image[10:20, 30:45])
    assert back.axes == mod.axes
    assert (back.name, back.kind, back.source, back.metadata) == ("haadf", "image", "<array>", mod.metadata)
    assert study.modality_names() == ["haadf"]
    assert study.is_current("modalities/haadf", "m1")


def test_several_modalities_and_missing_one(study):
    assert study.modality_names() == []
    rng = np.random.default_rng(3)
    study.write_modality(_modality(rng.random((64, 64)).astype(np.float32), "haadf"), fingerprint="a")
    study.write_modality(_modality(rng.random((64, 64)).astype(np.float32), "bf"), fingerprint="b")
    assert study.modality_names() == ["haadf", "bf"]  # in the order they were added
    with pytest.raises(KeyError):
        study.modality("eels")


def _zarr_cube(path: Path, shape=(12, 10, 8, 8), chunks=(3, 10, 8, 8)):
    import zarr

    values = np.random.default_rng(8).poisson(3.0, size=shape).astype(np.float32)
    group = zarr.open_group(str(path), mode="w")
    group.create_array("scan/cube", data=values, chunks=chunks)
    return values, group["scan/cube"]


def _scan(data: da.Array) -> ModalityData:
    return ModalityData(name="diffraction", kind="diffraction", data=data,
                        axes=[Axis("y", data.shape[0], 1.0, 0.0, "nm"), Axis("x", data.shape[1], 1.0, 0.0, "nm"),
                              Axis("qy", data.shape[2], 0.1, 0.0, "1/nm"), Axis("qx", data.shape[3], 0.1, 0.0, "1/nm")],
                        source="scan.zarr/scan/cube", metadata={})


@pytest.mark.parametrize("opened", ["array", "path"])
def test_a_zarr_array_on_disk_is_read_in_place_not_copied(study, tmp_path, opened):
    values, array = _zarr_cube(tmp_path / "scan.zarr")
    data = da.from_zarr(array) if opened == "array" else da.from_zarr(str(tmp_path / "scan.zarr"), component="scan/cube")
    study.write_modality(_scan(data), fingerprint="m")
    attrs = study.attrs_of("modalities/diffraction")
    assert attrs["in_place"]["store"] == str((tmp_path / "scan.zarr").resolve())
    assert attrs["in_place"]["path"] == "scan/cube"
    assert "data" not in study.group["modalities/diffraction"]  # nothing copied
    back = study.modality("diffraction")
    assert back.data.chunks == data.chunks
    np.testing.assert_array_equal(back.data.compute(), values)
    # reading never writes to the input
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "scan.zarr").rglob("*")}
    back.data.sum().compute()
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "scan.zarr").rglob("*")} == before


def test_computed_or_in_memory_arrays_are_copied(study, tmp_path):
    import zarr

    values, array = _zarr_cube(tmp_path / "scan.zarr")
    # something computed on top of the store, and an array in a memory store: copied
    for data in (da.from_zarr(array) * 2, da.from_zarr(zarr.array(values, chunks=(3, 10, 8, 8)))):
        study.write_modality(_scan(data), fingerprint="m")
        assert "in_place" not in study.attrs_of("modalities/diffraction")
        np.testing.assert_array_equal(study.modality("diffraction").data.compute(), data.compute())
    # and a copy made earlier is dropped when the same name is later read in place
    study.write_modality(_scan(da.from_zarr(array)), fingerprint="n")
    assert "data" not in study.group["modalities/diffraction"]


def test_a_study_in_memory_holds_arrays_already_in_memory_instead_of_copying(tmp_path):
    values = np.random.default_rng(9).poisson(3.0, size=(12, 10, 8, 8)).astype(np.float32)
    data = da.from_array(values, chunks=(5, 10, 8, 8))  # every chunk a NumPy array
    memory, disk = Study.open(None), Study.open(tmp_path / "study.zarr")
    for study in (memory, disk):
        study.write_modality(_scan(data), fingerprint="m")
    # in memory: held as it is, nothing copied into the store; on disk: copied (resumable)
    assert "diffraction" in memory.held and "data" not in memory.group["modalities/diffraction"]
    assert not disk.held and "data" in disk.group["modalities/diffraction"]
    held, copied = memory.modality("diffraction").data, disk.modality("diffraction").data
    assert held.chunks == copied.chunks  # the chunks a copy has: the same reads, the same labels
    np.testing.assert_array_equal(held.compute(), values)
    assert memory.is_current("modalities/diffraction", "m")
    # an array with work left in it (here a product) is copied, and replaces what was held
    memory.write_modality(_scan(data * 2), fingerprint="n")
    assert not memory.held and "data" in memory.group["modalities/diffraction"]
    np.testing.assert_array_equal(memory.modality("diffraction").data.compute(), values * 2)
    # and held again, the copy goes
    memory.write_modality(_scan(data), fingerprint="o")
    assert "diffraction" in memory.held and "data" not in memory.group["modalities/diffraction"]


def test_segment_in_memory_and_on_disk_give_the_same_labels(tmp_path):
    from multimodal_seg.synthetic.multimodal import multimodal_phantom

    phantom = multimodal_phantom((24, 24), seed=1)
    modalities = phantom.modalities()
    sources = {name: modalities[name] for name in ("haadf", "eels")}
    originals = {"haadf": phantom.haadf, "eels": phantom.eels}  # the arrays the study holds
    before = {name: array.copy() for name, array in originals.items()}
    in_memory = mms.segment(sources, seed=0, progress=False)
    on_disk = mms.segment(sources, seed=0, progress=False, out=tmp_path / "run")
    for name, labels in in_memory.scan_labels.items():
        np.testing.assert_array_equal(labels, on_disk.scan_labels[name])
    for name, array in originals.items():  # held, never written to
        np.testing.assert_array_equal(array, before[name])


def test_a_store_read_in_place_that_moved_or_changed_is_named(tmp_path):
    import shutil

    import zarr

    values, array = _zarr_cube(tmp_path / "scan.zarr")
    study = Study.open(tmp_path / "study.zarr")
    study.write_modality(_scan(da.from_zarr(array)), fingerprint="m")
    group = zarr.open_group(str(tmp_path / "scan.zarr"), mode="a")
    group.create_array("scan/cube", data=values[:6], chunks=(3, 10, 8, 8), overwrite=True)
    with pytest.raises(InputError, match=r"\[6, 10, 8, 8\] float32 array instead of the \[12, 10, 8, 8\]") as info:
        Study.open(tmp_path / "study.zarr").modality("diffraction")
    assert "scan.zarr" in str(info.value) and "new --out" in info.value.fix
    shutil.rmtree(tmp_path / "scan.zarr")
    with pytest.raises(InputError, match="cannot be opened") as info:
        Study.open(tmp_path / "study.zarr").modality("diffraction")
    assert "put the store back" in info.value.fix


# --- fingerprints and resuming ------------------------------------------------------


def test_is_current_tracks_the_fingerprint(study):
    assert study.fingerprint_of("embeddings/haadf") is None
    assert not study.is_current("embeddings/haadf", "abc")
    study.write_array("embeddings/haadf", np.ones((4, 2), np.float32), fingerprint="abc")
    assert study.is_current("embeddings/haadf", "abc")
    assert not study.is_current("embeddings/haadf", "abd")
    study.write_sparse("graphs/haadf", _graph(), fingerprint="g")
    assert study.is_current("graphs/haadf", "g") and not study.is_current("graphs/haadf", "h")


def test_interrupted_modality_write_is_not_current(study):
    image = np.random.default_rng(4).random((128, 128)).astype(np.float32)
    study.write_modality(_modality(image), fingerprint="old")
    assert study.is_current("modalities/haadf", "old")

    def fail_on_last_rows(block, block_info=None):
        if block_info[0]["chunk-location"][0] == 3:
            raise OSError("disk went away")
        return block

    broken = _modality(image)
    broken.data = broken.data.map_blocks(fail_on_last_rows, dtype=np.float32)
    with pytest.raises(OSError, match="disk went away"):
        study.write_modality(broken, fingerprint="new")
    # Neither the old nor the new output counts as finished: the stage is redone.
    assert not study.is_current("modalities/haadf", "old")
    assert not study.is_current("modalities/haadf", "new")
    assert study.fingerprint_of("modalities/haadf") is None


def test_stage_is_skipped_when_current_and_redone_when_inputs_change(tmp_path):
    path = tmp_path / "study.zarr"
    study = Study.open(path)
    image = np.random.default_rng(5).random((96, 80)).astype(np.float32)
    stages.add_modalities(study, {"haadf": _modality(image)})
    grid = stages.lay_chips(study, chip_size=32, stride=16).grid
    fp = study.fingerprint_of("chips/origins")
    np.testing.assert_array_equal(study.read_array("chips/origins"), grid.origins)
    assert grid == ChipGrid(image.shape, 32, 16)
    assert study.attrs_of("chips/origins")["grid"] == grid.to_dict()
    attrs = study.attrs_of("chips/modalities/haadf")
    assert attrs["size"] == 32
    assert attrs["chip_size_physical"] == pytest.approx([32 * 0.04, 32 * 0.05])
    assert attrs["units"] == ["nm", "nm"]
    assert study.stage_params["chips"] == {"size": 32, "stride": 16}
    # Tamper with the stored data (not its attributes): a current stage is not rerun.
    study.group["chips/origins"][...] = 0
    stages.lay_chips(Study.open(path), chip_size=32, stride=16)
    assert Study.open(path).fingerprint_of("chips/origins") == fp
    assert (Study.open(path).read_array("chips/origins") == 0).all()
    # Another grid, or another modality upstream, changes the fingerprint and rewrites.
    stages.lay_chips(study, chip_size=32, stride=32)
    fp2 = study.fingerprint_of("chips/origins")
    assert fp2 != fp
    np.testing.assert_array_equal(study.read_array("chips/origins"), ChipGrid(image.shape, 32, 32).origins)
    stages.add_modalities(study, {"haadf": _modality(image[::-1].copy())})
    stages.lay_chips(study, chip_size=32, stride=32)
    assert study.fingerprint_of("chips/origins") not in (fp, fp2)


def test_a_stage_before_its_input_says_which_stage_to_run(study):
    from multimodal_seg.errors import ParameterError

    stages.add_modalities(study, {"haadf": _modality(np.random.default_rng(1).random((64, 64)).astype(np.float32))})
    with pytest.raises(ParameterError, match="lay_chips"):
        stages.embed(study, encoder="fourier")
    stages.lay_chips(study, chip_size=16)
    with pytest.raises(ParameterError, match="embed"):
        stages.build_graphs(study)


def test_a_store_of_another_layout_is_refused(tmp_path):
    import zarr

    old = tmp_path / "old.zarr"
    group = zarr.open_group(str(old), mode="w")
    group.create_array("partitions/leiden", data=np.zeros(4, np.int32))  # layout 1, no version
    with pytest.raises(InputError, match="layout version 1") as info:
        Study.open(old)
    assert "delete the old study.zarr" in info.value.fix
    assert Study.open(tmp_path / "new.zarr").group.attrs["layout_version"] == LAYOUT_VERSION


# --- persistence ----------------------------------------------------------------------


def test_reopening_from_disk_keeps_everything(tmp_path):
    path = tmp_path / "specimen.zarr"
    image = np.random.default_rng(6).random((100, 90)).astype(np.float32)
    emb = np.random.default_rng(7).normal(size=(42, 8)).astype(np.float32)
    g = _graph(8, 42)
    s = Study.open(path)
    s.write_modality(_modality(image), fingerprint="m")
    s.write_array("embeddings/haadf", emb, fingerprint="e", encoder={"name": "fourier"})
    s.write_sparse("graphs/haadf", g, fingerprint="g")
    s.record(config={"k": 15}, seed=0)
    del s

    r = Study.open(path)
    assert r.path == path and "specimen.zarr" in repr(r)
    assert r.modality_names() == ["haadf"]
    np.testing.assert_array_equal(r.modality("haadf").data.compute(), image)
    assert r.modality("haadf").axes[0] == Axis("y", 100, 0.04, 1.5, "nm")
    np.testing.assert_array_equal(r.read_array("embeddings/haadf"), emb)
    assert r.attrs_of("embeddings/haadf")["encoder"] == {"name": "fourier"}
    assert (r.read_sparse("graphs/haadf") != g).nnz == 0
    assert all(r.is_current(k, f) for k, f in
               [("modalities/haadf", "m"), ("embeddings/haadf", "e"), ("graphs/haadf", "g")])
    assert r.provenance == {"config": {"k": 15}, "seed": 0}


def test_provenance_record_merges(study):
    assert study.provenance == {}
    study.record(config={"k": 15}, seed=0)
    study.record(seed=3, encoder="fourier")
    assert study.provenance == {"config": {"k": 15}, "seed": 3, "encoder": "fourier"}


def test_opening_something_that_is_not_a_study_fails_clearly(tmp_path):
    not_a_folder = tmp_path / "image.tif"
    not_a_folder.write_bytes(b"II*\x00 not really a tiff")
    with pytest.raises(InputError) as info:
        Study.open(not_a_folder)
    assert info.value.where == str(not_a_folder)


# --- provenance helpers -----------------------------------------------------------------


def test_fingerprint_is_stable_and_ignores_dict_key_order():
    a = {"k": 15, "n_pcs": 30, "nested": {"x": 1, "y": [1, 2]}}
    b = {"nested": {"y": [1, 2], "x": 1}, "n_pcs": 30, "k": 15}
    assert fingerprint("graph", a, "up") == fingerprint("graph", b, "up")
    assert fingerprint("graph", a, "up") == fingerprint("graph", dict(a), "up")
    fp = fingerprint("graph", a, "up")
    assert isinstance(fp, str) and len(fp) == 16 and int(fp, 16) >= 0


def test_fingerprint_changes_with_any_value():
    base = fingerprint("graph", {"k": 15, "n_pcs": 30}, "up")
    assert fingerprint("graph", {"k": 16, "n_pcs": 30}, "up") != base
    assert fingerprint("graph", {"k": 15, "n_pcs": None}, "up") != base
    assert fingerprint("graph", {"k": 15, "n_pcs": 30}, "up2") != base
    assert fingerprint("chips", {"k": 15, "n_pcs": 30}, "up") != base
    assert fingerprint("graph", {"k": 15, "n_pcs": 30, "seed": 0}, "up") != base


def test_fingerprint_accepts_numpy_values_and_paths():
    assert fingerprint({"k": np.int64(15), "r": np.float64(0.5)}) == fingerprint({"k": 15, "r": 0.5})
    assert fingerprint(np.array([1, 2, 3])) == fingerprint([1, 2, 3])
    assert fingerprint(Path("a/b.tif")) == fingerprint("a/b.tif")
    with pytest.raises(TypeError):
        fingerprint(object())


def test_package_versions_and_run_record():
    versions = package_versions()
    assert versions["numpy"] == np.__version__
    assert versions["python"].count(".") == 2
    rec = run_record({"k": 15}, extra={"seed": 1})
    assert rec["config"] == {"k": 15} and rec["seed"] == 1 and rec["versions"]["numpy"] == np.__version__
    assert json.loads(to_json(rec))["config"] == {"k": 15}


def test_atomic_path_replaces_a_file_on_success(tmp_path):
    target = tmp_path / "labels.csv"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_text("new")
        assert target.read_text() == "old"  # readers still see the old file meanwhile
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv"]  # no temporaries left


def test_atomic_path_leaves_a_file_untouched_on_error(tmp_path):
    target = tmp_path / "labels.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half-writ")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv"]


def test_atomic_path_with_a_new_target_creates_nothing_on_error(tmp_path):
    target = tmp_path / "new.txt"
    with pytest.raises(KeyError):
        with atomic_path(target) as tmp:
            tmp.write_text("x")
            raise KeyError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_and_protects_directories(tmp_path):
    target = tmp_path / "study.zarr"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(ValueError):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "new.txt").write_text("partial")
            raise ValueError("crash")
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.zarr"]


def test_atomic_path_keeps_a_directory_when_the_block_writes_nothing(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(OSError):
        with atomic_path(target):
            pass  # e.g. a writer that silently skipped its output
    assert (target / "old.txt").read_text() == "old"


def test_write_text_atomic(tmp_path):
    target = tmp_path / "report.json"
    write_text_atomic(target, '{"a": 1}')
    write_text_atomic(target, '{"a": 2}')
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
