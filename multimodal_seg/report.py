"""``report.html``: one self-contained page per run, for a colleague without the package.

Every picture is embedded as a base64 PNG and the styling is inline: no network, no
script, no file beside it is needed, so the page can be mailed or archived alone.
It has one section per entry of :data:`SECTIONS`, always all of them (a section
with nothing to show says why): the communities on the specimen, each modality's
partition, the community table (swatches in the colours of every figure,
:func:`multimodal_seg.plot.community_colors`), the agreement between modalities,
the mean signals, the settings, the provenance and the warnings of the run.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import numpy as np
from matplotlib.colors import to_hex

from .analysis.descriptors import CommunityRow
from .analysis.spectral_lines import marked
from .graphs.communities import describe_runs
from .graphs.decide import describe_decision
from .graphs.labels import communities_phrase
from .plot import MARKED_LINES, community_colors
from .provenance import painted_partition, to_json

#: ``(id, heading)`` of every section, in page order.
SECTIONS = (
    ("overlay", "Communities on the specimen"),
    ("modalities", "Each modality's partition"),
    ("communities", "Community table"),
    ("consistency", "Agreement between modalities"),
    ("signals", "Mean signals"),
    ("settings", "Settings"),
    ("provenance", "Provenance"),
    ("warnings", "Warnings"),
)

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1100px; padding: 1em 2em; color: #222; }
header { border-bottom: 1px solid #ccc; margin-bottom: 1em; }
nav a { margin-right: 1em; }
section { margin: 2em 0; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; }
td.key, th.key { text-align: left; }
.swatch { display: inline-block; width: 1.2em; height: 1.2em; border: 1px solid #444; vertical-align: middle; }
.note { color: #555; font-style: italic; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
li.warning { color: #8a4b00; }
"""


def report_html(*, figures: Mapping[str, bytes], communities: list[CommunityRow],
                provenance: Mapping[str, Any], consistency: Mapping[str, Any] | None = None,
                lines: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """The report page of one run.

    Parameters
    ----------
    figures
        PNG bytes by file name, as :meth:`multimodal_seg.result.Segmentation.save`
        writes them (``overlay.png``, ``summary.png``, ``modalities.png`` ...).
    communities
        The community table (one row per community, 0 = largest).
    provenance
        The run's record (config, versions, seed, encoders, warnings ...).
    consistency
        ARI, NMI and VI between partitions (several modalities), else ``None``.
    lines
        Known X-ray lines or EELS edges per spectrum modality and community.

    Returns
    -------
    The HTML text (UTF-8, no external reference).
    """
    colours = [to_hex(c) for c in community_colors(len(communities))]
    body = {
        "overlay": _figures(figures, ("overlay.png", "summary.png"), "no overlay figure was made"),
        "modalities": _modalities(figures),
        "communities": (_decision(provenance) + _community_table(communities, colours)
                        + _figures(figures, ("community_graph.png",), "")),
        "consistency": _consistency(consistency, figures),
        "signals": _signals(figures, lines or {}),
        "settings": _settings(provenance),
        "provenance": _provenance(provenance),
        "warnings": _warnings(provenance.get("warnings") or []),
    }
    n = len(communities)
    names = ", ".join(provenance.get("sources", {}) or {})
    nav = " ".join(f'<a href="#{key}">{html.escape(title)}</a>' for key, title in SECTIONS)
    sections = "\n".join(f'<section id="{key}"><h2>{html.escape(title)}</h2>\n{body[key]}\n</section>'
                         for key, title in SECTIONS)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>multimodal_seg report: {communities_phrase(n)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<header><h1>Segmentation report</h1>\n<p>{communities_phrase(n)}"
        f"{' from ' + html.escape(names) if names else ''}; "
        f"created {html.escape(str(provenance.get('created', '')))} with multimodal_seg "
        f"{html.escape(str((provenance.get('versions') or {}).get('multimodal-seg', '')))}, "
        f"seed {html.escape(str(provenance.get('seed', '')))}.</p>\n<nav>{nav}</nav></header>\n"
        f"{sections}\n</body>\n</html>\n")


def _img(name: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(name)}">'


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _figures(figures: Mapping[str, bytes], names: tuple[str, ...], missing: str) -> str:
    shown = [_img(name, figures[name]) for name in names if name in figures]
    return "\n".join(shown) if shown else (_note(missing) if missing else "")


def _modalities(figures: Mapping[str, bytes]) -> str:
    if "modalities.png" in figures:
        return (_figures(figures, ("modalities.png",), "")
                + _note("Each modality's communities are drawn in the colours of the joint communities "
                        "they match (most of one lies in the other); one that matches none has a colour "
                        "of its own."))
    return (_note("One modality: its partition is the result above; here it is chip by chip.")
            + _figures(figures, ("chip_map.png",), "no chip map was made"))


def _table(header: list[str], rows: list[list[str]], key_columns: int = 1) -> str:
    """An HTML table; cells are already escaped HTML."""
    def cell(tag: str, i: int, text: str) -> str:
        return f'<{tag} class="key">{text}</{tag}>' if i < key_columns else f"<{tag}>{text}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "\n".join("<tr>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}\n</table>"


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else html.escape(str(value))


def _decision(provenance: Mapping[str, Any]) -> str:
    """How the number of communities was decided, with the decision's margin (the p-values
    either side of alpha: both near it mean another seed can give another count)."""
    if not provenance.get("partitions"):
        return ""
    record = painted_partition(provenance)
    decision = record.get("decision")
    runs = describe_runs(record.get("n_communities", 0), record.get("run_counts"), bool(record.get("close_call")))
    runs = f" {runs[0].upper()}{runs[1:]}." if runs else ""
    if not decision:
        return _note("The number of communities is Leiden's (decide=\"none\")." + runs)
    return _note(describe_decision(decision) + "." + runs)


def _community_table(rows: list[CommunityRow], colours: list[str]) -> str:
    if not rows:
        return _note("no community was found")
    fields = list(asdict(rows[0]))
    header = ["colour", *(html.escape(f.replace("_", " ")) for f in fields)]
    cells = [[f'<span class="swatch" style="background-color: {colours[i]}" title="{colours[i]}"></span>',
              *(_number(v) for v in asdict(row).values())] for i, row in enumerate(rows)]
    return _table(header, cells)


def _consistency(consistency: Mapping[str, Any] | None, figures: Mapping[str, bytes]) -> str:
    if consistency is None:
        return _note("One modality: there is no other partition to compare it with.")
    names = [html.escape(str(n)) for n in consistency["names"]]
    ari = consistency["ari"]
    rows = [[name, *(f"{v:.2f}" for v in ari[i])] for i, name in enumerate(names)]
    return ("<p>Adjusted Rand index between each modality's own partition and the joint one "
            "(1: the same partition, 0: no more alike than chance).</p>\n"
            + _table(["ARI", *names], rows) + _figures(figures, ("consistency.png",), ""))


def _signals(figures: Mapping[str, bytes], lines: Mapping[str, Mapping[str, Any]]) -> str:
    if "community_signals.png" not in figures:
        return _note("No spectrum image or diffraction scan in this run: the community table's mean "
                     "intensity describes each community.")
    text = _figures(figures, ("community_signals.png",), "")
    for modality, table in lines.items():
        intensities = np.asarray(table["intensities"])
        keep = marked(table, top=MARKED_LINES)  # those the figure marks
        header = ["community", *(html.escape(f"{label} ({table['energies'][i]:.4g})") for i, label in keep)]
        rows = [[str(c), *(f"{values[i]:.3g}" for i, _ in keep)] for c, values in enumerate(intensities)]
        text += (f"<p>{html.escape(modality)}: net counts per position of the strongest known lines and "
                 f"edges (energies in {html.escape(str(table['units']))}; all of them, with their standard "
                 f"errors, in community_lines.csv).{_naming(table)}</p>\n" + _table(header, rows))
    return text


def _naming(table: Mapping[str, Any]) -> str:
    """How the report's EDS lines were named: the beam energy their families were judged by, and
    the specimen's elements where they were known."""
    if "beam_energy" not in table:
        return ""
    source = {"file": "as the file records it", "option": "as the reader's beam_energy gives it",
              "signal": "as the HyperSpy signal's metadata record it"}.get(
        str(table.get("beam_energy_from")), "assumed: the top of the energy axis, since the file does not record it")
    text = (f" An X-ray line is named only where its element's higher-energy families that a beam of "
            f"{table['beam_energy']:.4g} keV ({source}) excites are present, and not where a named "
            "element's own weaker lines account for its peak.")
    if table.get("elements"):
        given = {"file": "as the file lists them", "option": "as the reader's elements option gives them",
                 "signal": "as the HyperSpy signal's metadata list them"}.get(str(table.get("elements_from")), "")
        text += (f" Where a line of an element the specimen holds ({html.escape(', '.join(table['elements']))}; "
                 f"{given}) can name a peak, it alone does.")
    return text


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, Mapping) and value:
        return [item for key, sub in value.items() for item in _flatten(sub, f"{prefix}{key}.")]
    return [(prefix.rstrip("."), value)]


def _key_values(pairs: list[tuple[str, Any]]) -> str:
    rows = [[html.escape(k), html.escape(v if isinstance(v, str) else json.dumps(v))] for k, v in pairs]
    return _table(["setting", "value"], rows, key_columns=2)


def _settings(provenance: Mapping[str, Any]) -> str:
    pairs = _flatten(provenance.get("config", {}))
    # the run's own record of these, where the config does not already show the same value
    shown = dict(pairs)
    pairs += [(key, value) for key, value in (("seed", provenance.get("seed")),
                                              ("encoder choice", provenance.get("encoder_choice")),
                                              ("fusion", provenance.get("fusion")))
              if key not in shown or shown[key] != value]
    pairs += _flatten(provenance.get("encoders", {}), "encoders.")
    return _key_values(pairs)


def _provenance(provenance: Mapping[str, Any]) -> str:
    pairs = _flatten({key: provenance.get(key) for key in
                      ("created", "versions", "machine", "sources", "reader_options", "grid", "n_chips",
                       "n_communities", "modularity", "study", "seconds")})
    return (_key_values(pairs) + "\n<details><summary>the whole record (provenance.json)</summary>"
            f"<pre>{html.escape(to_json(dict(provenance)))}</pre></details>")


def _warnings(warnings: list[str]) -> str:
    if not warnings:
        return _note("The run raised no warning.")
    return "<ul>\n" + "\n".join(f'<li class="warning">{html.escape(str(w))}</li>' for w in warnings) + "\n</ul>"
