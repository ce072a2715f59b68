"""How often do the figures name an element the spectra do not hold, or miss one they do?

Random synthetic EDS specimens, none of them tuned on: 3-6 elements from a pool of 30 common
ones, in 2-3 communities, each a random mix of 2-4 of them, on random detectors and beams (the
figure names up to 8 peaks).  Each draw picks

- the beam (15, 20, 30 or 200 kV) and the channel width (10, 20 or 40 eV; 0-20 keV at most);
- the detector's width (FWHM at Mn K alpha 120-140 eV) and calibration (every line shifted by
  -10 to +10 eV), which the project does not know;
- per community, the elements and their alpha lines' counts (log-uniform over two decades), every
  family the beam ionises with exSpy's line weights, as Gaussians integrated over each channel;
- a continuum falling with energy, cut off at the beam energy and absorbed below 1 keV;
- the detector's artefacts: a sum peak of the strongest line with itself (0.5-2 % of it, with
  the square of its rate) and silicon escape peaks (1 % of each line above Si's K edge);
- the counts (mean spectra of 10^4 to 10^6 counts, Poisson).

Each community's mean spectrum goes through the run's line table
(:func:`multimodal_seg.analysis.spectral_lines.line_table`, told the beam energy) and
:func:`~multimodal_seg.analysis.spectral_lines.marked` (the 8 names ``community_signals.png``
shows).  Scored per draw:

- *false*: names whose first line (the one the figure prints) is of an element the specimen
  does not hold;
- *missed*: elements the specimen holds whose strongest line in range is at least 5 % of the
  strongest line of some community, and that no name lists.

Usage::

    python benchmarks/bench_line_names.py --draws 200 --seed 0 --out benchmarks/reports/line-names-2cpu
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.stats import norm

import multimodal_seg as mms
from multimodal_seg.analysis.spectral_lines import line_table, marked, xray_family
from multimodal_seg.modalities.base import Axis

POOL = ["C", "O", "Na", "Mg", "Al", "Si", "P", "S", "Cl", "K", "Ca", "Ti", "V", "Cr", "Mn", "Fe", "Co",
        "Ni", "Cu", "Zn", "Zr", "Nb", "Mo", "Ag", "Sn", "Ba", "W", "Pt", "Au", "Pb"]
SI_KA, SI_K_EDGE = 1.740, 1.839


def family_lines(element: str, beam: float, top: float) -> list[tuple[float, float]]:
    """``(energy keV, weight)`` of every line of every family of ``element`` the beam ionises
    (its highest line below the beam energy), inside 0.2 keV .. ``top``, each family's alpha
    line of weight 1; a lighter family's alpha scaled down with its ionisation (``0.6`` for L
    beside K, ``0.4`` for M beside L) so that no family outshines the one above it."""
    found = []
    for family, scale in (("K", 1.0), ("L", 0.6), ("M", 0.4)):
        lines = xray_family(element, family)
        if not lines or max(e for e, _ in lines.values()) * 1.05 >= beam:
            continue
        found += [(e, w * scale) for e, w in lines.values() if 0.2 < e < top]
    return found


def draw(rng: np.random.Generator) -> dict:
    """One random specimen on one random detector: its communities' mean spectra and truth."""
    beam = float(rng.choice([15.0, 20.0, 30.0, 200.0]))
    channel = float(rng.choice([0.01, 0.02, 0.04]))
    top = min(20.0, beam)
    size = int(round(top / channel))
    energy = (np.arange(size) + 0.5) * channel
    fwhm_mn, shift = rng.uniform(0.120, 0.140), rng.uniform(-0.010, 0.010)
    edges = np.append(energy - channel / 2, energy[-1] + channel / 2)
    counts = 10 ** rng.uniform(4, 6)
    spectra, holds, strong = [], set(), set()
    specimen = list(rng.choice(POOL, size=int(rng.integers(3, 7)), replace=False))
    for _ in range(int(rng.integers(2, 4))):
        elements = list(rng.choice(specimen, size=int(rng.integers(2, min(4, len(specimen)) + 1)), replace=False))
        lines = {}
        for element in elements:
            amount = 10 ** rng.uniform(-2, 0)
            for e, w in family_lines(element, beam, top):
                lines[(element, e)] = amount * w
        if not lines:
            continue
        holds |= set(elements)
        total = sum(lines.values())
        expected = np.zeros(size)
        peak_height = {}
        for (element, centre), weight in lines.items():
            area = counts * 0.5 * weight / total
            sigma = np.sqrt(max(fwhm_mn**2 + 2.5e-3 * (centre - 5.895), 1e-4)) / 2.3548
            expected += area * np.diff(norm.cdf((edges - centre - shift) / sigma))
            peak_height[element] = max(peak_height.get(element, 0.0), area)
            if centre > SI_K_EDGE:  # silicon escape peak
                expected += 0.01 * area * np.diff(norm.cdf((edges - centre + SI_KA - shift) / sigma))
        (element, centre), weight = max(lines.items(), key=lambda item: item[1])
        area = counts * 0.5 * weight / total
        pile = rng.uniform(0.005, 0.02) * area  # the strongest line's sum peak
        sigma = np.sqrt(max(fwhm_mn**2 + 2.5e-3 * (2 * centre - 5.895), 1e-4)) / 2.3548
        expected += pile * np.diff(norm.cdf((edges - 2 * centre - shift) / sigma))
        continuum = energy ** -0.3 * np.clip(beam - energy, 0, None) * (1 - np.exp(-(energy / 0.8) ** 3))
        expected += counts * 0.5 * continuum / continuum.sum()
        spectra.append(rng.poisson(expected).astype(float))
        strongest = max(peak_height.values())
        strong |= {e for e, h in peak_height.items() if h >= 0.05 * strongest}
    axis = Axis("energy", size, channel, float(energy[0]), "keV")
    return {"beam": beam, "channel": channel, "fwhm_mn": fwhm_mn, "shift": shift, "counts": counts,
            "spectra": np.stack(spectra), "axis": axis, "holds": sorted(holds), "strong": sorted(strong)}


def score(specimen: dict) -> dict:
    table = line_table(specimen["spectra"], specimen["axis"], beam_energy=specimen["beam"])
    names = [name for _, name in marked(table, top=8)] if table else []
    shown = {name.split("/")[0].split("_")[0] for name in names}
    listed = {alias.split("_")[0] for name in names for alias in name.split("/")}
    return {"names": names, "false": sorted(shown - set(specimen["holds"])),
            "missed": sorted(set(specimen["strong"]) - listed)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    rng = np.random.default_rng(args.seed)
    rows, start = [], time.perf_counter()
    for i in range(args.draws):
        specimen = draw(rng)
        result = score(specimen)
        rows.append({"draw": i, **{k: specimen[k] for k in ("beam", "channel", "fwhm_mn", "shift", "counts",
                                                             "holds", "strong")}, **result})
    seconds = time.perf_counter() - start
    named = sum(len(r["names"]) for r in rows)
    false = sum(len(r["false"]) for r in rows)
    strong = sum(len(r["strong"]) for r in rows)
    missed = sum(len(r["missed"]) for r in rows)
    by_kind = {}
    for key, label in (("beam", "beam (kV)"), ("channel", "channel (keV)")):
        for value in sorted({r[key] for r in rows}):
            part = [r for r in rows if r[key] == value]
            by_kind[f"{label} {value:g}"] = (len(part), sum(len(r["names"]) for r in part),
                                             sum(len(r["false"]) for r in part),
                                             sum(len(r["strong"]) for r in part), sum(len(r["missed"]) for r in part))
    worst = sorted(rows, key=lambda r: -len(r["false"]))[:5]
    text = ["# EDS line names on random synthetic specimens", "",
            f"Machine: {platform.machine()}, {platform.platform()}; multimodal-seg {mms.__version__}; "
            f"{args.draws} draws in {seconds:.0f} s.", "",
            f"Reproduce: `python benchmarks/bench_line_names.py --draws {args.draws} --seed {args.seed} "
            f"--out {args.out}`", "", (__doc__ or "").split("\n\n", 1)[1].split("Usage::")[0].strip(), "",
            "| draws | names shown | false (element not held) | strong elements | missed |",
            "|---:|---:|---:|---:|---:|",
            f"| {args.draws} | {named} | {false} ({false / max(named, 1):.1%}) | {strong} | "
            f"{missed} ({missed / max(strong, 1):.1%}) |", "",
            "| draws by | draws | names | false | strong | missed |", "|---|---:|---:|---:|---:|---:|"]
    text += [f"| {k} | {n} | {s} | {f} ({f / max(s, 1):.1%}) | {t} | {m} ({m / max(t, 1):.1%}) |"
             for k, (n, s, f, t, m) in by_kind.items()]
    text += ["", "Draws with the most false names:", ""]
    text += [f"- draw {r['draw']} ({r['beam']:g} kV, {r['channel'] * 1e3:g} eV channels, {r['counts']:.0f} counts): "
             f"holds {', '.join(r['holds'])}; named {', '.join(r['names'])}; false {', '.join(r['false'])}"
             for r in worst if r["false"]]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.md").write_text("\n".join(text) + "\n")
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    start = text.index("| draws | names shown | false (element not held) | strong elements | missed |")
    print("\n".join(text[start:start + 3]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
