"""One pipeline: the step-by-step stages give segment()'s labels; one image is one modality.

Checked on the built-in phantoms (an HAADF image with two grains of one phase, a
second phase and an amorphous front; the same specimen as HAADF + EELS + 4D-STEM).
"""

from __future__ import annotations

import numpy as np
import pytest

import multimodal_seg as mms
from multimodal_seg import stages
from multimodal_seg.errors import InputError, ParameterError
from multimodal_seg.metrics import adjusted_rand
from multimodal_seg.synthetic.multimodal import multimodal_phantom


@pytest.fixture(scope="module")
def specimen():
    """The multimodal phantom on a 32 x 32 scan (HAADF 256 px, EELS, 4D-STEM)."""
    return multimodal_phantom((32, 32), seed=2)


def _step_by_step(sources, *, out=None, refine="auto", fusion="concat", **community):
    study = mms.Study.open(None if out is None else out / "study.zarr")
    stages.add_modalities(study, sources)
    stages.lay_chips(study)
    stages.embed(study, encoder="auto", progress=False)
    stages.build_graphs(study)
    stages.find_communities(study, **community)
    stages.fuse(study, method=fusion)
    stages.refine(study, factor=refine, progress=False)
    stages.place_positions(study, progress=False)
    return stages.collect(study, out=out)


def test_step_by_step_gives_segments_labels_for_one_image(small_phantom, tmp_path):
    whole = mms.segment(small_phantom.image, pixel_size=small_phantom.pixel_size, units="nm", progress=False)
    image = (small_phantom.image, {"pixel_size": small_phantom.pixel_size, "units": "nm"})
    steps = _step_by_step({"image": image}, out=tmp_path / "steps")
    np.testing.assert_array_equal(steps.pixel_labels, whole.pixel_labels)
    np.testing.assert_array_equal(steps.chip_labels, whole.chip_labels)
    # The stages record what they did: the provenance's config is segment()'s.
    assert steps.provenance["config"] == whole.provenance["config"]
    assert steps.provenance["encoders"] == whole.provenance["encoders"]
    # One modality: nothing is fused, there is no joint partition and no consistency.
    assert whole.provenance["fusion"] is None and whole.consistency is None
    assert list(whole.scan_labels) == ["image"] and "partitions/joint" not in mms.Study.open(
        tmp_path / "steps" / "study.zarr").group
    assert (tmp_path / "steps" / "overlay.png").exists()


def test_step_by_step_gives_segments_labels_for_three_modalities(specimen):
    whole = mms.segment(specimen.modalities(), refine=2, progress=False)
    steps = _step_by_step(specimen.modalities(), refine=2)
    assert list(steps.scan_labels) == ["joint", "haadf", "eels", "diffraction"]
    for name, labels in whole.scan_labels.items():
        np.testing.assert_array_equal(steps.scan_labels[name], labels, err_msg=name)
    np.testing.assert_array_equal(steps.pixel_labels, whole.pixel_labels)
    assert steps.provenance["config"] == whole.provenance["config"]
    # Measured 0.865 with the defaults (concat fusion, dip decision, seams dissolved) on
    # this 32 x 32 scan.
    assert adjusted_rand(whole.scan_labels["joint"], specimen.truth) > 0.8


def test_one_image_in_a_mapping_is_the_path_input(small_phantom):
    as_array = mms.segment(small_phantom.image, progress=False, seed=1)
    for sources in ({"image": small_phantom.image}, {"haadf": small_phantom.image}):
        as_mapping = mms.segment(sources, progress=False, seed=1)
        assert as_mapping.grid == as_array.grid  # one chip-size rule: images get >= 32 px chips
        np.testing.assert_array_equal(as_mapping.pixel_labels, as_array.pixel_labels)


def test_consensus_and_merge_apply_to_the_joint_partition(specimen, tmp_path):
    out = tmp_path / "run"
    seg = mms.segment(specimen.modalities(), fusion="multiplex", consensus=5, merge=0.5, out=out, progress=False)
    study = mms.Study.open(out / "study.zarr")
    for name in ("joint", "haadf", "eels", "diffraction"):
        params = study.attrs_of(f"partitions/{name}")["params"]
        assert params["consensus"] == 5 and params["merge"] == 0.5, name
    assert seg.provenance["partitions"]["joint"]["params"]["layer_weights"] == {
        "haadf": 1.0, "eels": 1.0, "diffraction": 1.0}
    # merge acts: the joint partition without it has at least as many communities
    unmerged = mms.segment(specimen.modalities(), fusion="multiplex", consensus=5, progress=False)
    assert seg.n_communities <= unmerged.n_communities
    # a consensus of runs is reproducible for the joint partition too
    again = mms.segment(specimen.modalities(), fusion="multiplex", consensus=5, merge=0.5, progress=False)
    np.testing.assert_array_equal(again.chip_labels, seg.chip_labels)


def test_louvain_cannot_fuse_layers_and_says_so_before_any_work(specimen, tmp_path):
    out = tmp_path / "never"
    with pytest.raises(ParameterError, match="only Leiden") as info:
        mms.segment(specimen.modalities(), method="louvain", fusion="multiplex", out=out, progress=False)
    assert "fusion='concat'" in info.value.fix
    assert not out.exists()
    seg = mms.segment(specimen.modalities(), method="louvain", fusion="concat", consensus=0, progress=False)
    assert seg.provenance["partitions"]["joint"]["params"]["method"] == "louvain"


def test_single_image_options_are_refused_with_several_modalities(specimen, tmp_path):
    for option in ({"signal": 0}, {"pixel_size": 0.1, "units": "nm"}):
        with pytest.raises(ParameterError, match="apply to one image") as info:
            mms.segment(specimen.modalities(), out=tmp_path / "x", progress=False, **option)
        assert "beside the source" in info.value.fix
    assert not (tmp_path / "x").exists()


def test_encoders_for_absent_modalities_are_refused(specimen):
    with pytest.raises(ParameterError, match="not here"):
        mms.segment(specimen.modalities(), config={"modality_encoders": {"edx": "spectrum-pca"}},
                    progress=False)


def test_reader_options_and_calibration_enter_the_fingerprint(specimen):
    eels = np.asarray(specimen.eels)
    study = mms.Study.open()
    stages.add_modalities(study, {"eels": eels})
    plain = study.fingerprint_of("modalities/eels")
    stages.add_modalities(study, {"eels": (eels, {"bin_scan": 2})})
    binned = study.fingerprint_of("modalities/eels")
    assert binned != plain and study.modality("eels").data.shape[:2] == (16, 16)
    assert study.attrs_of("modalities/eels")["metadata"]["reader_options"] == {"bin_scan": 2}
    stages.add_modalities(study, {"eels": (eels, {"scan_step": 0.5, "scan_units": "nm"})})
    calibrated = study.fingerprint_of("modalities/eels")
    assert calibrated not in (plain, binned)
    stages.add_modalities(study, {"eels": (eels, {"scan_step": 0.5, "scan_units": "nm"})})
    assert study.fingerprint_of("modalities/eels") == calibrated  # same read: reused


def test_a_one_channel_spectrum_image_is_refused_before_any_folder(tmp_path):
    cube = np.random.default_rng(0).poisson(50, (20, 20, 1)).astype(np.float32)
    with pytest.raises(InputError, match="too few for n_components"):
        mms.segment({"eels": cube}, out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_failed_run_removes_the_folder_it_created_but_not_one_that_was_there(small_phantom, tmp_path,
                                                                                monkeypatch):
    def refuse(*args, **kwargs):
        raise InputError("simulated bad data found mid-run", fix="none", where="test")

    monkeypatch.setattr(stages.knn, "knn_graph", refuse)
    with pytest.raises(InputError, match="simulated"):
        mms.segment(small_phantom.image, out=tmp_path / "new", progress=False)
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="simulated"):
        mms.segment(small_phantom.image, out=kept, progress=False)
    assert (kept / "notes.txt").read_text() == "mine"
    assert mms.Study.open(kept / "study.zarr").fingerprint_of("embeddings/image") is not None  # resumable


def test_refine_rebuilds_and_refits_the_encoder_of_a_resumed_study(specimen, tmp_path):
    out = tmp_path / "run"
    first = mms.segment(specimen.modalities(), out=out, refine=2, progress=False)
    study = mms.Study.open(out / "study.zarr")  # a new session: nothing fitted in memory
    assert study.fitted_encoders == {}
    stages.refine(study, factor=4, progress=False)
    again = stages.collect(study)
    assert again.provenance["refined"]["fine_grid"]["stride"] == max(1, first.grid.stride // 4)
    assert set(again.scan_labels) == set(first.scan_labels)
    assert adjusted_rand(again.scan_labels["joint"], first.scan_labels["joint"]) > 0.8


def test_each_graph_space_is_fitted_once_and_again_when_its_embeddings_change(small_phantom, monkeypatch):
    from multimodal_seg.graphs import knn

    fits = []
    fit = knn.FeatureReducer.fit_transform
    monkeypatch.setattr(knn.FeatureReducer, "fit_transform", lambda self, x: fits.append(x.shape) or fit(self, x))
    study = mms.Study.open(None)
    stages.add_modalities(study, {"image": small_phantom.image})
    stages.lay_chips(study)
    stages.embed(study, progress=False)
    stages.build_graphs(study)
    stages.find_communities(study)  # decides the number of communities in the graph's space
    stages.refine(study, factor=2, progress=False)  # projects new chips into it
    assert len(fits) == 1
    space = stages.graph_features(study, "image")
    assert not space.flags.writeable  # shared by the stages: nobody may change it in place
    # new embeddings (another encoder option): a new space, and the graph built in it
    stages.embed(study, encoder_options={"n_radial": 8}, progress=False)
    stages.build_graphs(study)
    assert len(fits) == 2 and stages.graph_features(study, "image").shape[0] == space.shape[0]
    assert not np.shares_memory(stages.graph_features(study, "image"), space)


def test_refinement_pools_diffraction_chips_from_the_stored_position_features(specimen, tmp_path, monkeypatch):
    from multimodal_seg.pipeline import embedding

    out = tmp_path / "run"
    scan = {"diffraction": specimen.modalities()["diffraction"]}
    mms.segment(scan, out=out, chip_size=4, stride=2, refine=1, progress=False)
    study = mms.Study.open(out / "study.zarr")
    stored = study.positions("diffraction", fingerprint=study.fingerprint_of("embeddings/diffraction"))
    assert stored.features.shape == (*specimen.diffraction.shape[:2], 35)
    assert study.positions("diffraction", fingerprint="another run's") is None

    def encode_again(*args, **kwargs):
        raise AssertionError("the scan was read and encoded again")

    with monkeypatch.context() as patched:
        patched.setattr(embedding, "position_map", encode_again)
        stages.refine(study, factor=2, progress=False)
    from_stored = study.read_array("refined/diffraction")
    assert study.attrs_of("refined/diffraction")["boundary_chips"] > 0
    # Without the stored features every position is encoded again: the same labels.
    del study.group["positions"], study.group["refined"]
    stages.refine(study, factor=2, progress=False)
    np.testing.assert_array_equal(study.read_array("refined/diffraction"), from_stored)


def test_stale_refined_labels_are_not_used(small_phantom, tmp_path):
    out = tmp_path / "run"
    mms.segment(small_phantom.image, out=out, refine=2, progress=False)
    study = mms.Study.open(out / "study.zarr")
    stages.find_communities(study, resolution=2.0)  # new partition, no refinement of it
    seg = stages.collect(study)
    assert seg.provenance["refined"] is None
    np.testing.assert_array_equal(
        seg.pixel_labels, seg.grid.chip_labels_to_pixels(study.read_array("partitions/image").reshape(
            seg.grid.grid_shape)))


def test_the_user_guides_step_by_step_example_runs(capsys):
    """docs/user-guide.md shows the stages on the phantom; the example must run as written."""
    import re
    from pathlib import Path

    guide = (Path(__file__).parents[1] / "docs" / "user-guide.md").read_text()
    section = guide[guide.index("### Step by step"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "user-guide.md (step by step)", "exec"), namespace)
    seg, truth = namespace["seg"], namespace["phantom"].truth
    assert adjusted_rand(seg.scan_labels["joint"], truth) > 0.8
    assert "consensus" in capsys.readouterr().out


def test_the_runs_warnings_are_recorded_and_still_raised(specimen, tmp_path):
    """A survey image at the scan's pixel size gets tiny chips: the warning reaches the caller
    and is kept in provenance.json beside the results."""
    import json

    modalities = specimen.modalities()
    coarse = modalities["haadf"]
    step = 8  # HAADF pixels per scan position
    coarse.data = coarse.data[::step, ::step]
    coarse.axes = [type(a)(a.name, n, a.scale * step, a.offset, a.units)
                   for a, n in zip(coarse.axes, coarse.data.shape)]
    with pytest.warns(UserWarning, match="too few for texture"):
        seg = mms.segment(modalities, out=tmp_path / "run", progress=False)
    assert any("too few for texture" in w and "blur the joint one" in w for w in seg.provenance["warnings"])
    saved = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert saved["warnings"] == seg.provenance["warnings"]


def test_an_image_alone_with_tiny_chips_is_not_told_of_a_joint_partition():
    from multimodal_seg.chips.shared import shared_grid
    from multimodal_seg.chips.sizing import warn_small_image_chips
    from multimodal_seg.modalities import read_image
    from multimodal_seg.synthetic.phantoms import haadf_phantom

    image = read_image(haadf_phantom((64, 64), seed=0).image, name="haadf")
    with pytest.warns(UserWarning, match="too few for texture") as caught:
        warn_small_image_chips({"haadf": image}, shared_grid({"haadf": image}, chip_size=8, stride=4, warn=False))
    message = str(caught[0].message)
    assert "joint" not in message and "scan" not in message and "larger chips" in message


def test_an_encoder_that_learns_sees_every_chip_or_every_position_once():
    """``Encoder.fit`` sees every chip of the grid where they fit in memory; else chips laid edge
    to edge (every scan position once), a seeded sample of those only where they do not fit
    either.  Neither of the first two depends on the seed."""
    from multimodal_seg.chips.shared import ModalityChips
    from multimodal_seg.pipeline.embedding import fit_origins

    # the grid the pipeline lays on the real Bruker P45 EDS map (75 x 100 positions): 5-position
    # chips every 2, 36 x 48 of them, covering rows 0-74 and columns 0-98
    rows, cols = np.meshgrid(np.arange(0, 71, 2), np.arange(0, 95, 2), indexing="ij")
    chips = ModalityChips(np.stack([rows.ravel(), cols.ravel()], axis=1), 5)
    np.testing.assert_array_equal(fit_origins(chips, seed=0, n=len(chips.origins)), chips.origins)
    tiles = fit_origins(chips, seed=0, n=512)
    seen = np.zeros((75, 99), int)
    for r, c in tiles:
        seen[r:r + 5, c:c + 5] += 1
    # every position once, but column 94: 99 is not a whole number of tiles, so the last
    # column of tiles ends at the far edge and overlaps its neighbour there
    assert (seen[:, :94] == 1).all() and (seen[:, 94] == 2).all() and (seen[:, 95:] == 1).all()
    assert len(tiles) == 15 * 20
    np.testing.assert_array_equal(fit_origins(chips, seed=1, n=512), tiles)
    # more tiles than that: a seeded sample of them, each once
    few = fit_origins(chips, seed=0, n=100)
    assert len(few) == 100 and len(np.unique(few, axis=0)) == 100
    assert not np.array_equal(few, fit_origins(chips, seed=1, n=100))
    assert {tuple(t) for t in few} <= {tuple(t) for t in tiles}


def test_spectrum_embeddings_do_not_depend_on_the_seed():
    """The PCA basis of ``spectrum-pca`` is fitted on every chip of the EELS scan (961 grid chips
    fit in memory), so seeds 0 and 1 embed it alike; a seeded sample of 512 of them, as before,
    gave two bases."""
    phantom = multimodal_phantom((64, 64), seed=2)
    embedded = []
    for seed in (0, 1):
        study = mms.Study.open(None)
        stages.add_modalities(study, {"eels": phantom.modalities()["eels"]})
        stages.lay_chips(study, chip_size=4, stride=2)
        stages.embed(study, seed=seed, progress=False)
        assert len(study.read_array("chips/origins")) == 961
        embedded.append(study.read_array("embeddings/eels"))
    np.testing.assert_array_equal(embedded[0], embedded[1])


def test_a_large_sparse_spectrum_image_is_advised_to_be_binned(monkeypatch):
    """An EDS map with about one count per position over 1024 channels: its chips hold under a
    count per channel, and above the size where it matters (lowered here, the real threshold
    is 1 GiB) the run says how to bin it on reading; a dense map of the same size is not."""
    import warnings

    from multimodal_seg.chips import sizing
    from multimodal_seg.chips.shared import shared_grid
    from multimodal_seg.modalities import read_spectrum_image

    rng = np.random.default_rng(0)
    energy = 0.01 * np.arange(1024)  # keV, 10 eV channels
    line = np.exp(-0.5 * ((energy - 6.4) / 0.06) ** 2) + np.exp(-0.5 * ((energy - 2.3) / 0.05) ** 2)
    sparse = rng.poisson(1.2 * line / line.sum(), (64, 64, 1024)).astype(np.float32)
    dense = rng.poisson(2000 * line / line.sum(), (64, 64, 1024)).astype(np.float32)
    monkeypatch.setattr(sizing, "LARGE_CUBE_BYTES", 4 * sparse.size)
    said = {}
    for label, cube in (("sparse", sparse), ("dense", dense)):
        eds = read_spectrum_image(cube, name="eds", scan_step=1.0, scan_units="nm", energy_scale=0.01,
                                  energy_units="keV")
        grid = shared_grid({"eds": eds}, chip_size=16, stride=8, warn=False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sizing.warn_sparse_spectra({"eds": eds}, grid)
        said[label] = " ".join(str(w.message) for w in caught)
    assert said["dense"] == ""
    # 16-position chips binned 4 x 4 keep 4 x 4; 10 eV channels binned to the detector's ~70 eV
    assert "and sparse" in said["sparse"] and "--read eds.bin_scan=4 --read eds.bin_channels=7" in said["sparse"]
