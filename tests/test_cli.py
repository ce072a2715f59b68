"""The mmseg command as a user runs it: exit codes, messages, files."""

from __future__ import annotations

import json
import re

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from multimodal_seg.graphs.labels import communities_phrase
from multimodal_seg.cli import app
from multimodal_seg.synthetic.phantoms import haadf_phantom

from .conftest import file_hash

runner = CliRunner()


def _png(path, image):
    scaled = (255 * (image - image.min()) / np.ptp(image)).astype(np.uint8)
    Image.fromarray(scaled).save(path)
    return path


def test_segment_png_writes_results(tmp_path):
    src = _png(tmp_path / "haadf.png", haadf_phantom((256, 256), seed=1).image)
    out = tmp_path / "results"
    result = runner.invoke(app, ["segment", str(src), "--out", str(out), "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert (out / "overlay.png").stat().st_size > 1000
    # the table says how the number of communities was decided, with the decision's margin
    record = json.loads((out / "provenance.json").read_text())["partitions"]["image"]["decision"]
    shown = " ".join(result.output.split())
    assert f"Leiden found {record['n_before']}; merged by the dip test at alpha 0.01" in shown
    kept = record["closest_kept"]["p"]  # kept to six decimals: below them it reads "< 1e-06"
    assert f"closest pair kept apart p {'< 1e-06' if kept < 1e-6 else f'= {kept:.3g}'}" in shown
    # ... and what the consensus's runs ended with
    counts = json.loads((out / "provenance.json").read_text())["partitions"]["image"]["run_counts"]
    if len(counts) == 1:
        only = communities_phrase(int(next(iter(counts))))
        assert f"all {sum(counts.values())} consensus runs ended with {only}" in shown
    else:
        assert f"of {sum(counts.values())} consensus runs," in shown
    assert (out / "communities.csv").read_text().startswith("community,")
    # --refine reaches the run and is recorded beside the results
    refined = tmp_path / "refined"
    result = runner.invoke(app, ["segment", str(src), "--out", str(refined), "-q", "--refine", "2"])
    assert result.exit_code == 0, result.output
    provenance = json.loads((refined / "provenance.json").read_text())
    assert provenance["config"]["chips"]["refine"] == 2
    assert provenance["refined"]["boundary_chips"]["image"] > 0
    # --decide and --alpha reach the community step: the default records its decision,
    # "none" keeps Leiden's communities and records none
    decided = json.loads((out / "provenance.json").read_text())
    assert decided["partitions"]["image"]["decision"]["method"] == "dip-test"
    kept = tmp_path / "kept"
    result = runner.invoke(app, ["segment", str(src), "--out", str(kept), "-q", "--decide", "none", "--alpha", "0.05"])
    assert result.exit_code == 0, result.output
    provenance = json.loads((kept / "provenance.json").read_text())
    assert provenance["config"]["communities"]["decide"] == "none"
    assert provenance["config"]["communities"]["alpha"] == 0.05
    assert provenance["partitions"]["image"]["decision"] is None
    result = runner.invoke(app, ["segment", str(src), "--out", str(tmp_path / "bad"), "-q", "--decide", "gap"])
    assert result.exit_code != 0 and "decide" in result.output and not (tmp_path / "bad").exists()


def test_config_file_and_unknown_key(tmp_path):
    src = _png(tmp_path / "haadf.png", haadf_phantom((256, 256), seed=1).image)
    good = tmp_path / "good.yaml"
    good.write_text("chips: {size: 32, stride: 32}\ngraph: {k: 10}\n")
    result = runner.invoke(app, ["segment", str(src), "--out", str(tmp_path / "a"), "-q", "-c", str(good)])
    assert result.exit_code == 0, result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("chips: {size: 32}\ncomunities: {resolution: 2}\n")
    result = runner.invoke(app, ["segment", str(src), "--out", str(tmp_path / "b"), "-c", str(bad)])
    assert result.exit_code == 2
    assert "comunities" in result.output and "bad.yaml" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "b").exists()


def test_bad_file_gives_clear_error_and_no_output(tmp_path):
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00 definitely not a tiff")
    out = tmp_path / "out"
    result = runner.invoke(app, ["segment", str(broken), "--out", str(out)])
    assert result.exit_code == 2
    assert "broken.tif" in result.output and "fix:" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()
    assert broken.read_bytes() == b"II*\x00 definitely not a tiff"


def test_unknown_extension(tmp_path):
    odd = tmp_path / "scan.xyz"
    odd.write_text("1 2 3")
    result = runner.invoke(app, ["segment", str(odd), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and ".xyz" in result.output


def test_a_4dstem_file_given_as_the_image_names_the_command_that_reads_it(tmp_path):
    from .conftest import shared_file

    scan = shared_file("fourd/merlin_4x2/001_4x2_6bit.mib")
    out = tmp_path / "out"
    result = runner.invoke(app, ["segment", str(scan), "--out", str(out)])
    assert result.exit_code == 2 and "Traceback" not in result.output and not out.exists()
    text = " ".join(result.output.split())  # rich wraps long lines
    assert "'.mib' files hold diffraction data, not an image" in text
    assert "-m diffraction=" in text
    # the command it names segments the scan
    again = runner.invoke(app, ["segment", "-m", f"diffraction={scan}", "--out", str(out)])
    assert again.exit_code == 0, again.output
    # no image, so no crystallinity: the table says so rather than printing NaN
    assert "crystallinity" in again.output and not re.search(r"\bnan\b", again.output.lower())
    # where the run's time went
    assert "time: " in again.output and "embed" in " ".join(again.output.split())
    assert (out / "provenance.json").exists()


def test_demo_is_multimodal_and_reports_every_modality(tmp_path):
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--out", str(out), "--scan", "32", "--quiet"])
    assert result.exit_code == 0, result.output
    for name in ("joint", "haadf", "eels", "diffraction"):
        assert f"{name}: adjusted Rand index" in result.output
    joint = float(result.output.split("joint: adjusted Rand index")[1].split()[0])
    assert joint > 0.7
    for name in ("agreement.json", "summary.png", "modalities.png", "consistency.png"):
        assert (out / name).exists(), name


def test_image_only_demo_reports_agreement(tmp_path):
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--image-only", "--out", str(out), "--size", "256", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "adjusted Rand index" in result.output
    ari = float(result.output.split("adjusted Rand index")[1].split(",")[0])
    assert ari > 0.8
    assert (out / "agreement.json").exists() and (out / "summary.png").exists()
    # boundaries refined by default (auto: half the stride); --refine reaches the demo
    # (measured 0.936 with --refine 1, 0.941 by default; before pixels were placed by the
    # image's lattice, 0.876 and 0.933)
    assert json.loads((out / "provenance.json").read_text())["config"]["chips"]["refine"] == 2
    coarse = tmp_path / "coarse"
    result = runner.invoke(app, ["demo", "--image-only", "--out", str(coarse), "--size", "256", "-q",
                                 "--refine", "1"])
    assert result.exit_code == 0, result.output
    assert float(result.output.split("adjusted Rand index")[1].split(",")[0]) < ari
    assert json.loads((coarse / "provenance.json").read_text())["config"]["chips"]["refine"] == 1


def test_info_lists_encoders_and_weights():
    result = runner.invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    assert "fourier" in result.output and "resnet50" in result.output
    assert "micronet" in result.output and "not found" in result.output


def test_version_is_the_installed_package_version():
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"multimodal_seg {version('multimodal-seg')}"


def test_lengths_that_are_not_chip_sizes_fail_cleanly(tmp_path):
    src = _png(tmp_path / "haadf.png", haadf_phantom((64, 64), seed=1).image)
    for option, value, needle in (("--chip-size", "-8", "not positive"), ("--stride", "-4", "not positive"),
                                  ("--chip-size", "1 cm", "no length calibration")):
        out = tmp_path / f"out{option}{value}"
        result = runner.invoke(app, ["segment", str(src), "--out", str(out), option, value])
        assert result.exit_code == 2, result.output
        assert needle in result.output and "fix:" in result.output and "Traceback" not in result.output
        assert not out.exists()


def test_warnings_are_shown_as_a_user_reads_them(tmp_path):
    src = _png(tmp_path / "haadf.png", haadf_phantom((64, 64), seed=1).image)
    result = runner.invoke(app, ["segment", str(src), "--out", str(tmp_path / "out"), "--chip-size", "8", "-q"])
    assert result.exit_code == 0, result.output
    shown = " ".join(result.output.split())
    assert "warning: image modality 'image'" in shown and "too few for texture" in shown
    assert "UserWarning" not in shown and ".py:" not in shown  # no category, no source file and line


def test_multimodal_bad_inputs_fail_cleanly(tmp_path):
    import hyperspy.api as hs

    counts = np.random.default_rng(0).poisson(20.0, (16, 16, 64)).astype(np.float32)
    si = tmp_path / "si.hspy"
    hs.signals.Signal1D(counts).save(si)
    before = file_hash(si)
    out = tmp_path / "out"
    cases = {
        "spectrum file as image": (["haadf=" + str(si), "eels=" + str(si)], "si.hspy"),
        "missing modality file": (["eels=" + str(si), "diffraction=" + str(tmp_path / "scan.mib")],
                                  "scan.mib"),
    }
    for case, (modalities, named) in cases.items():
        args = ["segment", "--out", str(out), "--quiet"]
        for m in modalities:
            args += ["--modality", m]
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (case, result.output)
        assert named in result.output and "Traceback" not in result.output, case
        assert not out.exists(), case
    assert file_hash(si) == before


def test_the_command_line_and_the_package_start_without_the_pipeline():
    """``mmseg --help`` and ``import multimodal_seg`` import neither the pipeline nor its heavy
    dependencies (5.4 s on 2 cores when they did); the public names load on first use."""
    import subprocess
    import sys

    heavy = ["multimodal_seg.pipeline", "sklearn", "dask.array", "torch", "numba"]
    probe = ("import sys, multimodal_seg.cli; "
             f"print(sorted(m for m in {heavy!r} if m in sys.modules)); "
             "import multimodal_seg as mms; from multimodal_seg import segment; "
             "print(segment is mms.segment, mms.stages.__name__, 'Study' in dir(mms))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split("\n")[:2] == ["[]", "True multimodal_seg.pipeline.stages True"]
    missing = subprocess.run([sys.executable, "-c", "import multimodal_seg as mms; mms.no_such_name"],
                             capture_output=True, text=True)
    assert "has no attribute 'no_such_name'" in missing.stderr
