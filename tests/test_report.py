"""report.html: one self-contained page per run, checked as text and in a real browser."""

from __future__ import annotations

import base64
import dataclasses
import html
import re
import warnings

import numpy as np
import pytest
from matplotlib.colors import to_hex, to_rgba

import multimodal_seg as mms
from multimodal_seg import plot
from multimodal_seg.graphs.communities import describe_runs
from multimodal_seg.graphs.labels import communities_phrase
from multimodal_seg.report import SECTIONS, report_html
from multimodal_seg.result import OUTPUT_FILES
from multimodal_seg.synthetic.multimodal import multimodal_phantom

from .browser import Browser, chromium_path

SCAN = (24, 24)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two real runs written to disk: one image, and HAADF + EELS + 4D-STEM, the 4D-STEM scan
    shifted by two positions so that the run warns (the common region is smaller)."""
    phantom = multimodal_phantom(SCAN, seed=0, pattern_size=32, n_channels=400)
    modalities = phantom.modalities()
    scan = modalities["diffraction"]
    scan.axes = [dataclasses.replace(scan.axes[0], offset=2 * scan.axes[0].scale), *scan.axes[1:]]
    folders = {name: tmp_path_factory.mktemp(name) for name in ("image", "multimodal")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image = mms.segment(phantom.haadf, out=folders["image"], progress=False, consensus=5)
    with pytest.warns(UserWarning, match="extend beyond the region"):
        several = mms.segment(modalities, out=folders["multimodal"], progress=False, consensus=5)
    return {"image": (image, folders["image"]), "multimodal": (several, folders["multimodal"])}


def _page(folder) -> str:
    return (folder / "report.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("run", ["image", "multimodal"])
def test_report_is_written_with_every_section_and_no_outside_reference(runs, run):
    seg, folder = runs[run]
    assert "report.html" in OUTPUT_FILES
    page = _page(folder)
    for key, title in SECTIONS:
        assert f'<section id="{key}"><h2>{title.replace(chr(39), "&#x27;")}</h2>' in page
    # Self-contained: every src is an embedded PNG; no link, script or stylesheet elsewhere.
    sources = re.findall(r'src="([^"]+)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"<script|<link|@import|url\(|https?://", page)
    # The embedded pictures are the figures written beside the page, byte for byte.
    embedded = {base64.b64decode(s.split(",", 1)[1]) for s in sources}
    for name in ("overlay.png", "summary.png", "community_graph.png"):
        assert (folder / name).read_bytes() in embedded
    # The community table: one row per community, the run's numbers.
    for row in seg.communities:
        assert f"<td>{row.n_chips}</td>" in page
    assert f"seed {seg.provenance['seed']}" in page
    # how the painted partition's number of communities was decided, with the decision's margin
    painted = "joint" if run == "multimodal" else "image"
    decision = seg.provenance["partitions"][painted]["decision"]
    assert f"Leiden found {decision['n_before']}; merged by the dip test at alpha 0.01" in page
    if decision["closest_kept"] is not None:
        kept = decision["closest_kept"]["p"]
        assert f"closest pair kept apart p {'&lt; 1e-06' if kept < 1e-6 else f'= {kept:.3g}'}" in page
    # ... and what the consensus's runs ended with, beside it
    record = seg.provenance["partitions"][painted]
    runs = describe_runs(record["n_communities"], record["run_counts"], record["close_call"])
    assert f"{runs[0].upper()}{runs[1:]}." in page
    # where the run's time went, step by step, in the provenance section
    assert "seconds.embed" in page and "seconds.place" in page
    # each setting once (the seed is the config's and the run's record: one row)
    section = page.split('<section id="settings">', 1)[1].split("</section>", 1)[0]
    keys = re.findall(r'<tr><td class="key">([^<]+)</td>', section)
    assert "seed" in keys and len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)


def test_multimodal_report_shows_consistency_signals_and_warnings(runs):
    seg, folder = runs["multimodal"]
    page = _page(folder)
    assert any("extend beyond the region" in w for w in seg.provenance["warnings"])
    for warning in seg.provenance["warnings"]:
        assert f'<li class="warning">{html.escape(warning)}</li>' in page
    ari = np.asarray(seg.consistency["ari"])
    assert f"{ari[0, 1]:.2f}" in page
    for name in ("modalities.png", "consistency.png", "community_signals.png"):
        assert base64.b64encode((folder / name).read_bytes()).decode() in page
    assert "in the colours of the joint communities" in page  # what the modalities' colours mean
    # Edge labels of the EELS community table are those the figure marks: the phantom's C, Ti
    # and O, and no edge read off their tails (Pd M5 51 eV after C K, Cr L3 43 eV after O K)
    assert "C_K" in page and "Ti_L3" in page and "O_K" in page
    assert "Pd_M5" not in page and "Cr_L3" not in page and "K_L3" not in page


def test_image_report_says_why_sections_are_empty(runs):
    _, folder = runs["image"]
    page = _page(folder)
    assert "One modality: there is no other partition to compare it with." in page
    assert "No spectrum image or diffraction scan in this run" in page
    assert "The run raised no warning." in page


def test_report_says_when_leiden_alone_set_the_number_of_communities():
    page = report_html(figures={}, communities=[], provenance={"partitions": {"image": {"decision": None}}})
    assert "The number of communities is Leiden&#x27;s (decide=&quot;none&quot;)." in page
    assert "Leiden found" not in page


def test_one_colour_source_for_figures_table_and_legend(runs):
    seg, folder = runs["multimodal"]
    n = seg.n_communities
    expected = [to_hex(c) for c in plot.community_colors(n)]
    page = _page(folder)
    swatches = re.findall(r'class="swatch" style="background-color: (#[0-9a-f]{6})"', page)
    assert swatches == expected
    # The overlay figure's legend and painted labels use the same colours.
    fig = plot.overlay(seg.display_image(), seg.pixel_labels)
    handles = fig.axes[0].get_legend().legend_handles
    assert [to_hex(h.get_facecolor()) for h in handles] == expected
    rgba = plot.label_rgba(seg.pixel_labels)
    for community in range(n):
        painted = rgba[seg.pixel_labels == community][0]
        assert np.allclose(painted[:3], to_rgba(expected[community])[:3])


@pytest.mark.parametrize("run", ["image", "multimodal"])
def test_report_renders_in_headless_chromium(runs, run):
    executable = chromium_path()
    if executable is None:
        pytest.skip("no Chromium on this machine (Debian: apt-get install chromium; .ci/run installs it)")
    seg, folder = runs[run]
    with Browser(executable) as browser:
        browser.load(folder / "report.html")
        state = browser.evaluate("""(() => {
            const sections = [...document.querySelectorAll('section')].map(s => ({
                id: s.id, heading: s.querySelector('h2').textContent,
                height: s.getBoundingClientRect().height, width: s.getBoundingClientRect().width}));
            const images = [...document.images].map(i => ({ok: i.complete && i.naturalWidth > 0,
                                                           shown: i.getBoundingClientRect().width}));
            const swatches = [...document.querySelectorAll('.swatch')].map(
                s => getComputedStyle(s).backgroundColor);
            return {title: document.title, sections, images, swatches};
        })()""")
        errors = browser.console_errors()
        urls = browser.requested_urls()
    assert errors == []
    assert all(u.split(":", 1)[0] in ("file", "data") for u in urls), urls
    assert [s["id"] for s in state["sections"]] == [key for key, _ in SECTIONS]
    for section in state["sections"]:
        assert section["height"] > 30 and section["width"] > 100, section
    assert state["images"] and all(i["ok"] and i["shown"] > 100 for i in state["images"])
    expected = [tuple(round(255 * v) for v in c[:3]) for c in plot.community_colors(seg.n_communities)]
    shown = [tuple(int(v) for v in re.findall(r"\d+", s)[:3]) for s in state["swatches"]]
    assert shown == expected
    assert state["title"] == f"multimodal_seg report: {communities_phrase(seg.n_communities)}"


def test_figures_are_written_faster_compressed_but_pixel_for_pixel_as_drawn():
    """The PNGs use a light zlib level (``plot.PNG_COMPRESS_LEVEL``); PNG is lossless at every
    level, so the decoded pixels are matplotlib's at its default level, at the size asked for."""
    import io

    from PIL import Image

    from multimodal_seg import plot

    rng = np.random.default_rng(0)
    fig = plot.overlay(rng.random((300, 400)), rng.integers(0, 4, size=(300, 400)))
    plot.png_bytes(fig, dpi=80)  # the first draw settles the layout; later draws are alike
    written = plot.png_bytes(fig, dpi=80)
    default = io.BytesIO()
    fig.savefig(default, dpi=80, format="png")
    light, reference = (Image.open(io.BytesIO(b)) for b in (written, default.getvalue()))
    assert light.size == reference.size == tuple(round(80 * v) for v in fig.get_size_inches())
    np.testing.assert_array_equal(np.asarray(light), np.asarray(reference))
    assert plot.PNG_COMPRESS_LEVEL < 6 and written != default.getvalue()  # another zlib level than the default


def test_a_saved_figure_is_the_png_written_whole(tmp_path):
    from multimodal_seg import plot

    rng = np.random.default_rng(1)
    fig = plot.overlay(rng.random((60, 80)), rng.integers(0, 3, size=(60, 80)))
    plot.png_bytes(fig, dpi=50)  # the first draw settles the layout
    plot.save_figure(fig, tmp_path / "figure.png", dpi=50)
    assert (tmp_path / "figure.png").read_bytes() == plot.png_bytes(fig, dpi=50)
    assert [p.name for p in tmp_path.iterdir()] == ["figure.png"]  # no temporary file left


@pytest.mark.parametrize("shape", [(512, 512), (160, 512), (512, 200)])
def test_summary_figure_keeps_its_titles_and_width_inside(shape):
    """Square, wide and tall images: every panel's title and the width label are drawn inside
    the figure (a square image's titles were cut off), the width in a readable unit."""
    from multimodal_seg.plot import readable_length, summary
    from multimodal_seg.synthetic.phantoms import haadf_phantom

    image = haadf_phantom(shape, seed=0).image
    labels = (np.arange(shape[0])[:, None] * 3 // shape[0] + np.zeros((1, shape[1]), int)).astype(np.int32)
    fig = summary(image, labels, labels[::32, ::32], pixel_size=5.2e-6, units="m")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer, box = canvas.get_renderer(), fig.bbox
    texts = [ax.title for ax in fig.axes] + [fig.axes[0].xaxis.label]
    for text in texts:
        extent = text.get_window_extent(renderer)
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1 and box.y0 <= extent.y0 and extent.y1 <= box.y1, \
            (text.get_text(), extent, box)
    assert fig.axes[0].xaxis.label.get_text() == f"width {readable_length(shape[1] * 5.2e-6, 'm')}"
    assert readable_length(0.002677, "m") == "2.677 mm" and readable_length(256, "px") == "256 px"


def test_summary_draws_each_true_region_in_the_colour_of_its_community():
    """The truth panel beside the communities: a region in the colour of the community that
    found it (the truth's own ids are other numbers), on a truth of a coarser grid too."""
    from multimodal_seg.plot import label_rgba, summary
    from multimodal_seg.synthetic.phantoms import haadf_phantom

    phantom = haadf_phantom((256, 256), seed=0)
    communities = np.array([3, 0, 2, 1])[phantom.truth]  # a perfect segmentation, other ids
    for truth in (phantom.truth, phantom.truth[::4, ::4]):  # as fine as the image, and a scan
        fig = summary(phantom.image, communities, communities[::16, ::16], truth=truth)
        drawn = np.asarray(fig.axes[3].images[0].get_array())
        step = 256 // truth.shape[0]
        np.testing.assert_array_equal(drawn, label_rgba(communities[::step, ::step]))


def test_modality_maps_draw_each_modality_in_the_joint_communities_colours():
    """A modality that finds the joint regions under other ids, one of them split in two: its
    panel shows the regions in the joint colours and the extra piece in a colour of its own;
    without ``colours_of`` each map keeps its own ids."""
    from multimodal_seg.plot import label_rgba, modality_maps

    joint = np.repeat(np.repeat(np.array([[0, 1], [2, 3]]), 8, axis=0), 8, axis=1)
    eels = np.array([2, 3, 0, 1])[joint]
    eels[12:, 12:] = 4  # a corner of joint community 3 split off
    fig = modality_maps({"eels": eels, "joint": joint}, colours_of="joint")
    drawn = np.asarray(fig.axes[0].images[0].get_array())
    expected = np.where(eels == 4, 4, joint)
    np.testing.assert_array_equal(drawn, label_rgba(expected))
    np.testing.assert_array_equal(np.asarray(fig.axes[1].images[0].get_array()), label_rgba(joint))
    plain = modality_maps({"eels": eels, "joint": joint})
    np.testing.assert_array_equal(np.asarray(plain.axes[0].images[0].get_array()), label_rgba(eels))
