"""What a batch segments: one :class:`Specimen` per input.

Inputs (:func:`expand_inputs`) are

* an image file: one specimen, named by the file's stem, segmented as one image;
* a folder: every image file in it (the extensions :func:`multimodal_seg.segment`
  reads as images), one specimen each; other files are skipped and listed;
* a list of multimodal specimens, ``.csv`` or ``.yaml``/``.yml``: one row or entry per
  specimen, its modalities as ``name=path`` (the names ``mmseg segment -m`` takes,
  ``name:kind`` to state the kind); relative paths are taken from the list's folder::

      # specimens.csv: specimen, then name=path cells
      grain-1,haadf=g1/haadf.dm4,eels=g1/si.dm4
      grain-2,haadf=g2/haadf.dm4,eels=g2/si.dm4,diffraction=g2/scan.mib

      # specimens.yaml: specimen -> {name: path}, or {name: [path, {reader options}]}
      grain-1: {haadf: g1/haadf.dm4, eels: [g1/si.dm4, {bin_scan: 2}]}

A specimen's name is its output folder under the batch's ``--out``, so names must
be unique and plain (letters, digits, ``.``, ``_``, ``-``).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import SegmentConfig, read_yaml_mapping
from ..errors import InputError, ParameterError
from ..modalities.image import SUPPORTED_IMAGE_EXTENSIONS
from ..provenance import file_identity

#: Extensions of specimen lists.
LIST_EXTENSIONS = (".csv", ".yaml", ".yml")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Specimen:
    """One input of a batch.

    Attributes
    ----------
    name
        Its output folder's name (unique in the batch).
    sources
        What :func:`multimodal_seg.segment` takes: one image path, or
        ``{modality: path or (path, {reader options})}``.
    origin
        Where it came from (the file, folder or list), for messages.
    """

    name: str
    sources: Path | dict[str, Any]
    origin: str

    def paths(self) -> list[Path]:
        """Every input file of the specimen."""
        if isinstance(self.sources, Path):
            return [self.sources]
        return [Path(v[0] if isinstance(v, tuple) else v) for v in self.sources.values()]

    def identity(self) -> list[Any]:
        """JSON-able identity of the inputs (path, size, modification time; reader options):
        a changed file makes a finished specimen unfinished."""
        options = {} if isinstance(self.sources, Path) else {
            k: v[1] for k, v in self.sources.items() if isinstance(v, tuple)}
        return [file_identity(p) if p.exists() else {"path": str(p), "missing": True}
                for p in self.paths()] + [options]


def _check_name(name: str, where: str) -> str:
    if not _NAME.match(name):
        raise ParameterError(f"specimen name {name!r} cannot be a folder name",
                             fix="use letters, digits, '.', '_' and '-' only, starting with a letter or digit",
                             where=where)
    return name


def _modality(cell: str, base: Path, where: str) -> tuple[str, Path]:
    name, sep, value = cell.partition("=")
    name, value = name.strip(), value.strip()
    if not sep or not name or not value:
        raise ParameterError(f"{cell!r} is not name=path", fix="write each modality as e.g. haadf=a.dm4",
                             where=where)
    path = Path(value).expanduser()
    return name, path if path.is_absolute() else base / path


def _from_csv(path: Path) -> list[Specimen]:
    specimens = []
    with path.open(newline="") as fh:
        for number, row in enumerate(csv.reader(fh), start=1):
            cells = [c.strip() for c in row if c.strip()]
            if not cells or cells[0].startswith("#"):
                continue
            where = f"{path}:{number}"
            if not specimens and not any("=" in c for c in cells[1:]) and len(cells) > 1:
                # the first row is where a header would be: say both what a row is and that
                # there is no header
                raise ParameterError(f"row {number} has no name=path cell ({', '.join(cells)}): a specimen list "
                                     "has no header row, and each modality is written name=path",
                                     fix="write each row as e.g. grain-1,haadf=a.dm4,eels=b.dm4 (and remove a "
                                         "header row)", where=where)
            if len(cells) < 2:
                raise ParameterError(f"row {number} names a specimen but no modality",
                                     fix="write the specimen name, then name=path cells", where=where)
            sources = dict(_modality(c, path.parent, where) for c in cells[1:])
            specimens.append(Specimen(_check_name(cells[0], where), sources, where))
    return specimens


def _from_yaml(path: Path) -> list[Specimen]:
    data = read_yaml_mapping(path, expected="a specimen list is a mapping: specimen -> {modality: path}",
                             fix="write e.g. 'grain-1: {haadf: a.dm4, eels: b.dm4}'")
    # a config's sections hold settings (numbers, mappings), a specimen's modalities hold paths
    sections = sorted(k for k, v in data.items() if k in SegmentConfig.model_fields and (
        isinstance(v, int) or isinstance(v, dict) and any(not isinstance(x, (str, list)) for x in v.values())))
    if sections:
        raise ParameterError(f"this reads as a config file, not a specimen list: {', '.join(map(str, sections))} "
                             "are config sections",
                             fix="give it with --config (run_batch(config=...)); a specimen list maps names to "
                                 "modality files, e.g. 'grain-1: {haadf: a.dm4, eels: b.dm4}'", where=path)
    specimens = []
    for name, modalities in data.items():
        where = f"{path}: {name}"
        if not isinstance(modalities, dict) or not modalities:
            raise ParameterError(f"specimen {name!r} has no {{modality: path}} mapping",
                                 fix="write e.g. 'grain-1: {haadf: a.dm4, eels: b.dm4}'", where=where)
        sources: dict[str, Any] = {}
        for modality, value in modalities.items():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[1], dict):
                value, options = value
            else:
                options = None
            if not isinstance(value, str):
                raise ParameterError(f"modality {modality!r} of {name!r} is not a path",
                                     fix="give a path, or [path, {reader options}]", where=where)
            _, file = _modality(f"{modality}={value}", path.parent, where)
            sources[str(modality)] = (file, options) if options else file
        specimens.append(Specimen(_check_name(str(name), where), sources, where))
    return specimens


def _from_folder(path: Path) -> tuple[list[Specimen], list[Path]]:
    specimens, skipped = [], []
    for file in sorted(path.iterdir()):
        if file.name.startswith("."):
            continue
        if file.is_file() and file.suffix.lower() in SUPPORTED_IMAGE_EXTENSIONS:
            specimens.append(Specimen(_check_name(file.stem, str(file)), file, str(path)))
        else:
            skipped.append(file)
    return specimens, skipped


def expand_inputs(inputs: Sequence[str | Path] | str | Path) -> tuple[list[Specimen], list[Path]]:
    """The specimens of a batch's inputs, in order, and the folder entries skipped.

    Raises
    ------
    InputError
        An input that does not exist.
    ParameterError
        No specimen at all, two specimens of one name, or a malformed list.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    specimens: list[Specimen] = []
    skipped: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if not path.exists():
            raise InputError("input not found", fix="give existing files, folders or specimen lists",
                             where=path)
        if path.is_dir():
            found, passed = _from_folder(path)
            specimens += found
            skipped += passed
        elif path.suffix.lower() == ".csv":
            specimens += _from_csv(path)
        elif path.suffix.lower() in (".yaml", ".yml"):
            specimens += _from_yaml(path)
        else:
            specimens.append(Specimen(_check_name(path.stem, str(path)), path, str(path)))
    if not specimens:
        raise ParameterError("the inputs hold no specimen to segment",
                             fix="give image files, folders of images, or a .csv/.yaml specimen list "
                                 f"(images: {', '.join(SUPPORTED_IMAGE_EXTENSIONS)})",
                             where=", ".join(str(i) for i in inputs))
    _check_unique(specimens)
    return specimens, skipped


def _check_unique(specimens: Iterable[Specimen]) -> None:
    seen: dict[str, Specimen] = {}
    for specimen in specimens:
        if specimen.name in seen:
            raise ParameterError(
                f"two inputs are both named {specimen.name!r}, and each needs its own output folder",
                fix="rename one of them (or its row in the specimen list)",
                where=f"{seen[specimen.name].origin} and {specimen.origin}")
        seen[specimen.name] = specimen
