"""Spectrum images through the real readers (../shared/data/multimodal; skipped where absent).

Truths are derived independently of the segmentation, from the physics of the data:
element line intensities (Al K vs Cu L/K) or total X-ray counts (vacuum vs film vs particle).
"""

from __future__ import annotations

import numpy as np
import pytest

import multimodal_seg as mms
from multimodal_seg.analysis.spectral_lines import marked
from multimodal_seg.graphs.labels import community_groups
from multimodal_seg.metrics import many_to_one_accuracy
from multimodal_seg.modalities import read_spectrum_image

from .conftest import file_hash, shared_file

pytestmark = pytest.mark.realdata


def _line_sum(cube: np.ndarray, energy: np.ndarray, low: float, high: float) -> np.ndarray:
    return cube[..., (energy > low) & (energy < high)].sum(axis=-1)


def _main_labels(labels: np.ndarray, share: float = 0.9) -> set[int]:
    """The most frequent labels that together cover ``share`` of the positions."""
    counts = np.bincount(labels)
    order = np.argsort(counts)[::-1]
    needed = np.searchsorted(np.cumsum(counts[order]), share * labels.size) + 1
    return set(order[:needed].tolist())


def _energy(modality) -> np.ndarray:
    axis = modality.axes[2]
    return axis.offset + axis.scale * np.arange(axis.size)


@pytest.mark.parametrize("signal", ["Map 3", "Map 6"])
def test_phenom_al_cu_boundary_found(signal):
    path = shared_file("multimodal/phenom_AlCu_SEM_EDS/Elid2Version4.elid")
    before = file_hash(path)
    seg = mms.segment({"eds:spectrum": (path, {"signal": signal})}, progress=False)
    assert seg.grid.size <= 2  # auto: small chips on a 16 x 16 map with 128 counts per position
    assert file_hash(path) == before
    mod = read_spectrum_image(path, signal=signal)
    cube, energy = np.asarray(mod.data), _energy(mod)
    # keV: Al K-alpha 1.49; Cu L-alpha 0.93 and K-alpha 8.05.
    aluminium = _line_sum(cube, energy, 1.42, 1.55)
    copper = _line_sum(cube, energy, 0.88, 1.0) + _line_sum(cube, energy, 7.9, 8.2)
    truth = (aluminium > copper).astype(int)
    labels = seg.grid.chip_labels_to_pixels(seg.chip_labels)
    # Boundary found: every community lies (almost) wholly on one side of it.  (Each side
    # may split in two by its own count variations, so ARI is not the measure here.)
    assert many_to_one_accuracy(labels, truth) > 0.9
    assert seg.n_communities <= 4
    # Phenom's own record of the beam (15 kV); Al and Cu named (Cu by both its L and K alpha),
    # and none of the M lines of rare earths that intensity alone named at Cu L (Pr, Pm); the
    # sulphur of the third community, a few per cent of Al K alpha, named too; and the sum peaks
    # of Al K alpha (2.97 keV) and Cu L alpha (1.86 keV) not named as Ar K alpha or Re M alpha
    table = seg.lines["eds"]
    assert table["beam_energy"] == 15.0
    named = {name.split("/")[0] for _, name in marked(table, top=8)}
    assert {"Al_Ka", "Cu_La", "Cu_Ka", "S_Ka"} <= named
    assert not {n.split("_")[0] for n in named} & {"Pr", "Pm", "Ar", "Re"}


def test_jeol_fes_particle_film_and_vacuum_told_apart():
    path = shared_file("multimodal/jeol_FeS_TEM_EDS/rawdata.ASW")
    seg = mms.segment({"eds:spectrum": (path, {"bin_channels": 32, "bin_scan": 4})}, progress=False,
                      merge=0.5)
    mod = read_spectrum_image(path, bin_channels=32, bin_scan=4)
    counts = np.asarray(mod.data).sum(axis=-1)
    labels = seg.grid.chip_labels_to_pixels(seg.chip_labels)
    # Vacuum: (almost) no X-rays; particle: the most.  Noise may split the near-empty
    # vacuum into several communities, but none of them may also hold the particle.
    vacuum = counts <= np.percentile(counts, 10)
    particle = counts >= np.percentile(counts, 97)
    vacuum_labels, particle_labels = _main_labels(labels[vacuum]), _main_labels(labels[particle])
    assert not vacuum_labels & particle_labels
    particle_label = np.bincount(labels[particle]).argmax()
    vacuum_label = np.bincount(labels[vacuum]).argmax()
    # The particle's community holds Fe and S: its mean spectrum has Fe K-alpha (6.40 keV)
    # and S K-alpha (2.31 keV) well above the vacuum community's.
    energy = _energy(mod)
    mean = seg.signals["eds"]
    for line in (6.40, 2.31):
        channel = np.argmin(np.abs(energy - line))
        assert mean[particle_label, channel] > 5 * mean[vacuum_label, channel] + 1e-9
    # The line table (exSpy energies) says the same: net Fe K-alpha counts in the particle.
    table = seg.lines["eds"]
    fe = next(i for i, label in enumerate(table["features"]) if "Fe_Ka" in label.split("/"))
    intensities = np.asarray(table["intensities"])
    assert intensities[particle_label, fe] > 5 * max(intensities[vacuum_label, fe], 0) + 1e-6
    # The lines figures and the report name are of elements the JEOL software mapped in this
    # file (its element maps: C, O, S, Fe, Cu; the grid's Cu), read first in each name; by
    # intensity alone 8 peaks were named, among them Y/P/Zr, Ru/Cl, Tb, Ho/Co and W.
    assert table["beam_energy"] == 200.0 and table["beam_energy_from"] == "file"
    named = {name.split("/")[0].split("_")[0] for _, name in marked(table, top=8)}
    assert {"S", "Fe"} <= named <= {"C", "O", "S", "Fe", "Cu"}


def test_velox_nb_interface_layers_run_along_the_scan():
    # Sparse counts over 4096 channels: binned by 8 and 2 x 2 chips, as a user would.
    path = next(iter(sorted(shared_file("multimodal/velox_Nb_interface_STEM_EDS").glob("*.emd"))))
    seg = mms.segment({"eds:spectrum": (path, {"bin_channels": 8})}, chip_size=2, stride=1,
                      progress=False)
    labels = seg.grid.chip_labels_to_pixels(seg.chip_labels)
    assert seg.n_communities >= 2
    # The beam energy is Velox's own record (200 kV); the lines named are the interface's (Ni,
    # Nb, Ti, Cr, Fe), not those of elements whose stronger families the spectra lack (La M
    # beside Ni L, Pr M beside Cu L, Tl M on Nb's L beta, Dy L beside Fe K: all were named by
    # intensity alone)
    table = seg.lines["eds"]
    assert table["beam_energy"] == 200.0 and table["beam_energy_from"] == "file"
    named = {alias.split("_")[0] for _, name in marked(table, top=8) for alias in name.split("/")}
    assert {"Ni", "Nb"} <= named and not named & {"La", "Pr", "Tl", "Dy", "Hg"}
    # A layered interface: labels hardly change along a layer (the short scan axis) and
    # change between layers (along the long one).
    long_axis = int(np.argmax(labels.shape))
    along_layers = np.mean(np.diff(labels, axis=1 - long_axis) != 0)
    assert along_layers < 0.2
    # The two ends of the scan, on either side of the interface, are different material.
    stack = np.moveaxis(labels, long_axis, 0)
    fifth = stack.shape[0] // 5
    assert np.bincount(stack[:fifth].ravel()).argmax() != np.bincount(stack[-fifth:].ravel()).argmax()


def test_chevkinite_phases_have_different_mean_spectra():
    path = next(iter(sorted(shared_file("multimodal/bruker_chevkinite_SEM_EDS").glob("*.bcf"))))
    seg = mms.segment({"eds:spectrum": path}, progress=False)
    assert seg.n_communities >= 2
    # The elements the analyst chose in Esprit come with the file, and every peak named is one
    # of theirs
    table = seg.lines["eds"]
    assert table["elements_from"] == "file" and {"O", "Si", "Ti", "Fe"} <= set(table["elements"])
    named = {alias.split("_")[0] for _, name in marked(table, top=8) for alias in name.split("/")}
    assert {"O", "Si", "Ti"} <= named <= set(table["elements"])
    mean = seg.signals["eds"]
    normalised = mean / mean.sum(axis=1, keepdims=True)
    # The two largest communities differ in composition, not only in counts.
    assert np.abs(normalised[0] - normalised[1]).sum() > 0.05


def test_survey_image_and_spectrum_image_from_one_bruker_file():
    """The BSE image inside a .bcf is read by the image modality, the EDS cube by the
    spectrum modality; both land on one grid by their own calibrations (the same
    scan here) and their partitions are compared."""
    path = shared_file("multimodal/bruker_P45_SEM_BSE_EDS/P45_the_default_job.bcf")
    before = file_hash(path)
    image = mms.modalities.read_image(path)
    assert image.metadata.get("title", "BSE") == "BSE" and image.data.ndim == 2
    assert image.axes[0].units == "µm" and image.axes[0].scale > 0
    # The BSE image has the scan's own 75 x 100 px: its 5 px chips get a warning.
    with pytest.warns(UserWarning, match="'bse' .* gets chips of 5 px, too few for texture"):
        seg = mms.segment({"bse": path, "eds": path}, progress=False)
    assert file_hash(path) == before
    assert seg.consistency["names"] == ["bse", "eds", "joint"]
    ari = np.asarray(seg.consistency["ari"])
    assert ari.shape == (3, 3) and np.allclose(np.diag(ari), 1.0)
    # The joint partition follows the chemistry far better than chance.  (The BSE image
    # has the scan's own 75 x 100 px, so its chips are 5 px wide: too small for the
    # image encoder's texture features, and the BSE partition alone is mostly noise.)
    # With the default concat fusion the joint partition follows the noise-only BSE layer
    # (ARI 0.85 with the BSE, 0.055 with the EDS): the warning above says to leave such an
    # image out.  Multiplex, one partition good on both graphs, follows the chemistry (0.44).
    multiplex = mms.segment({"bse": path, "eds": path}, fusion="multiplex", progress=False)
    assert np.asarray(multiplex.consistency["ari"])[2, 1] > 0.2
    # Every joint community is painted somewhere, and each pair of them is told apart by the
    # own partition of one modality or the other (graphs.decide.merge_untold): before, a
    # bright particle of about 3 x 3 px was 7 joint chips that neither the BSE's partition (5 px
    # chips: mostly noise, as warned) nor the EDS's told from the matrix.
    assert all(row.area_fraction > 0 for row in seg.communities if row.n_chips)
    assert not [w for w in seg.provenance["warnings"] if "painted on no position" in w]
    n = int(seg.chip_labels.max()) + 1
    groups = np.stack([community_groups(seg.chip_labels.ravel(), own.ravel(), n)
                       for own in seg.modality_labels.values()], axis=1)
    assert len(np.unique(groups, axis=0)) == n


@pytest.mark.parametrize("relative, holds", [
    ("multimodal/bruker_P45_SEM_BSE_EDS/P45_the_default_job.bcf", r"an EDS spectrum image \[75x100x2048\]"),
    ("multimodal/velox_Nb_interface_STEM_EDS/fei_SI_SuperX-HAADF_20frames_10x50.emd",
     r"an EDS spectrum image \(Velox SpectrumImage\)"),
])
def test_an_image_read_alone_from_a_file_with_a_spectrum_image_says_so(relative, holds):
    """Given alone, a Bruker or Velox file's image is what the run segments; the EDS data
    beside it, which the image reader skips undecoded, is named with how to read both (the
    run said nothing before, and a user who gave an EDS file got a map of its survey image).
    A run that reads the file's spectrum image too says nothing."""
    import warnings

    from multimodal_seg.modalities.sources import read_modalities

    path = shared_file(relative)
    with pytest.warns(UserWarning, match=f"also holds {holds}.*this run segments only its image "
                                         r"\(signal 0: .*-m image=FILE -m eds=FILE") as caught:
        read_modalities({"image": path})
    assert len([w for w in caught if "also holds" in str(w.message)]) == 1
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*also holds")
        read_modalities({"image": path, "eds": path})


def test_cli_reads_one_map_of_a_phenom_file_and_records_which(tmp_path):
    """``--read NAME.OPTION=VALUE`` gives a modality's reader its options on the command line;
    the run records which signal of the file it read, and the file by its absolute path."""
    import json

    from typer.testing import CliRunner

    from multimodal_seg.cli import app

    path = shared_file("multimodal/phenom_AlCu_SEM_EDS/Elid2Version4.elid")
    runner = CliRunner()
    out = tmp_path / "map3"
    done = runner.invoke(app, ["segment", "-m", f"eds={path}", "--read", "eds.signal=Map 3", "--read",
                               "eds.bin_channels=2", "--out", str(out), "-q"])
    assert done.exit_code == 0, done.output
    record = json.loads((out / "provenance.json").read_text())
    assert record["reader_options"]["eds"] == {"signal": "Map 3", "bin_channels": 2}
    assert record["signals"]["eds"]["title"] == "Image 1, Map 3"
    assert record["signals"]["eds"]["of"] > 1  # the file holds several maps and images
    assert record["sources"]["eds"] == str(path.resolve())
    # the same map by its index gives the same labels
    again = tmp_path / "by-index"
    index = record["signals"]["eds"]["index"]
    done = runner.invoke(app, ["segment", "-m", f"eds={path}", "-r", f"eds.signal={index}", "-r",
                               "eds.bin_channels=2", "--out", str(again), "-q"])
    assert done.exit_code == 0, done.output
    import zarr

    def labels(folder):
        return zarr.open_group(str(folder / "labels.zarr"), mode="r")["chip_labels"][...]

    assert np.array_equal(labels(out), labels(again))
    # what a user gets wrong is refused before anything is read or written
    for args, needle in ((["-r", "eds.bin_chanels=2"], "did you mean 'bin_channels'"),
                         (["-r", "haadf.signal=1"], "not NAME.OPTION=VALUE for a modality of this run (eds)"),
                         (["--signal", "1"], "--read NAME.signal=VALUE")):
        bad = tmp_path / "bad"
        done = runner.invoke(app, ["segment", "-m", f"eds={path}", *args, "--out", str(bad), "-q"])
        assert done.exit_code == 2 and needle in " ".join(done.output.split()), done.output
        assert not bad.exists()


def test_cli_shows_what_rosettasciio_notices_in_plain_text(tmp_path):
    """RosettaSciIO logs to stdout in ANSI colours with its source line; mmseg shows the
    message as a plain line."""
    from typer.testing import CliRunner

    from multimodal_seg.cli import app

    path = shared_file("multimodal/velox_Nb_interface_STEM_EDS/fei_SI_SuperX-HAADF_20frames_10x50.emd")
    done = CliRunner().invoke(app, ["segment", "-m", f"eds={path}", "-r", "eds.bin_channels=8",
                                    "--out", str(tmp_path / "out"), "-q"])
    assert done.exit_code == 0, done.output
    assert "RosettaSciIO: The file contains only one spectrum stream" in done.output
    assert "\x1b[" not in done.output and "_emd_velox" not in done.output
