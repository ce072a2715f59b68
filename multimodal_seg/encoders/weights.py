"""Pretrained encoder weights: where they live, how they are found, fetched and read.

Nothing is downloaded unless the caller allows it (``allow_download=True``, CLI
``--download-weights``).  Offline, a missing file gives an error that says which
file to put where, and where to get it.

Known weights
-------------
``micronet`` (default), ``micronet-v1.0``
    ResNet50 pretrained on MicroNet, >100k electron/optical micrographs
    (Stuckner et al., npj Comput Mater 8, 200 (2022); MIT licence).
``imagenet-micronet``, ``imagenet-micronet-v1.0``
    ImageNet pretraining, then MicroNet.
``imagenet``
    torchvision's ``ResNet50_Weights.IMAGENET1K_V2``.

All are plain state dicts with torchvision ResNet50 key names.  torch is imported
only when a file is read or downloaded, so finding weights stays cheap.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

from ..errors import WeightsError

#: Environment variable that overrides :func:`weights_dir`.
WEIGHTS_DIR_ENV = "MMSEG_WEIGHTS_DIR"
#: Name used when the caller explicitly wants random initialisation.
RANDOM = "random"
#: Weights used when none are named.
DEFAULT_WEIGHTS = "micronet"

_MICRONET_BASE = "https://nasa-public-data.s3.amazonaws.com/microscopy_segmentation_models"
_MICRONET_CITE = "Stuckner et al., npj Comput Mater 8, 200 (2022)"
_CHUNK = 1 << 20  # bytes read at a time when hashing


@dataclass(frozen=True)
class KnownWeights:
    """A downloadable weights file.

    Attributes
    ----------
    name
        Short name users pass as ``weights``.
    url
        Where the file is published.
    file_name
        Name of the file in :func:`weights_dir`.
    description
        One line: what the network was trained on.
    licence
        Licence of the weights.
    hub_cache
        Whether torch.hub's cache (``torch.hub.get_dir()/checkpoints``) may hold it
        too (torchvision downloads its weights there).
    sha256_prefix
        Leading hex digits of the file's SHA-256 when published, checked on download.
    """

    name: str
    url: str
    file_name: str
    description: str
    licence: str
    hub_cache: bool = False
    sha256_prefix: str | None = None


@dataclass(frozen=True)
class ResolvedWeights:
    """Weights ready to load.

    Attributes
    ----------
    name
        Known name (e.g. ``"micronet"``), the file name of a local file, or
        ``"random"``.
    path
        The file, or ``None`` for random initialisation.
    sha256
        Hex SHA-256 of the file, or ``None`` for random initialisation.
    source
        Where the weights came from, for logs.
    """

    name: str
    path: Path | None
    sha256: str | None
    source: str

    @property
    def is_random(self) -> bool:
        return self.path is None


def _micronet(name: str, stem: str, description: str) -> KnownWeights:
    file_name = f"resnet50_pretrained_{stem}.pth.tar"
    return KnownWeights(
        name=name,
        url=f"{_MICRONET_BASE}/{file_name}",
        file_name=file_name,
        description=f"{description} ({_MICRONET_CITE})",
        licence="MIT",
    )


#: MicroNet weights by name; needs no torchvision, so encoder="auto" stays cheap.
_MICRONET = {
    w.name: w
    for w in (
        _micronet("micronet", "microscopynet_v1.1", "ResNet50 pretrained on MicroNet v1.1"),
        _micronet("micronet-v1.0", "microscopynet_v1.0", "ResNet50 pretrained on MicroNet v1.0"),
        _micronet(
            "imagenet-micronet",
            "imagenet-microscopynet_v1.1",
            "ResNet50 pretrained on ImageNet, then MicroNet v1.1",
        ),
        _micronet(
            "imagenet-micronet-v1.0",
            "imagenet-microscopynet_v1.0",
            "ResNet50 pretrained on ImageNet, then MicroNet v1.0",
        ),
    )
}


def _imagenet() -> KnownWeights:
    from torchvision.models import ResNet50_Weights

    url = ResNet50_Weights.IMAGENET1K_V2.url
    file_name = url.rsplit("/", 1)[-1]
    digest = re.search(r"-([0-9a-f]{6,})\.", file_name)  # torchvision names end "-<sha256 prefix>.pth"
    return KnownWeights(
        name="imagenet",
        url=url,
        file_name=file_name,
        description="ResNet50 pretrained on ImageNet-1k (torchvision IMAGENET1K_V2)",
        licence="BSD-3-Clause (torchvision); ImageNet terms of use apply",
        hub_cache=True,
        sha256_prefix=digest.group(1) if digest else None,
    )


@functools.cache
def known_weights() -> dict[str, KnownWeights]:
    """The table of known weights, by name (torchvision is imported on first call)."""
    return {**_MICRONET, "imagenet": _imagenet()}


class _KnownWeightsTable(Mapping[str, KnownWeights]):
    """Read-only view of :func:`known_weights` that builds the table on first use."""

    def __getitem__(self, name: str) -> KnownWeights:
        return known_weights()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(known_weights())

    def __len__(self) -> int:
        return len(known_weights())

    def __repr__(self) -> str:
        return f"KNOWN_WEIGHTS({', '.join(self)})"


#: Known weights by name (a lazy mapping: torchvision is imported on first access).
KNOWN_WEIGHTS: Mapping[str, KnownWeights] = _KnownWeightsTable()


def weights_info(name: str) -> KnownWeights:
    """The table entry of known weights ``name`` (URL, file name, licence).

    Raises
    ------
    WeightsError
        ``name`` is not a known weights name.
    """
    name = name.strip().lower()
    entry = _MICRONET.get(name)
    if entry is not None:
        return entry
    table = known_weights()
    if name not in table:
        raise WeightsError(
            f"unknown weights name {name!r}",
            fix=f"use one of {', '.join(table)}, {RANDOM!r} for random initialisation, "
            "or the path of a local weights file",
            where="weights",
        )
    return table[name]


def weights_dir() -> Path:
    """Folder where downloaded weights are kept (and looked for).

    ``$MMSEG_WEIGHTS_DIR`` when set, else the user cache folder
    (``~/.cache/multimodal_seg/weights`` on Linux).  Not created here.
    """
    env = os.environ.get(WEIGHTS_DIR_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return platformdirs.user_cache_path("multimodal_seg") / "weights"


def _hub_checkpoints_dir() -> Path:
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def _candidates(entry: KnownWeights) -> list[Path]:
    paths = [weights_dir() / entry.file_name]
    if entry.hub_cache:
        paths.append(_hub_checkpoints_dir() / entry.file_name)
    return paths


def find_weights(name: str) -> Path | None:
    """The local file of known weights ``name``, or ``None``; never downloads.

    Raises
    ------
    WeightsError
        ``name`` is not a known weights name.
    """
    for path in _candidates(weights_info(name)):
        if path.is_file():
            return path
    return None


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks; cached per path, size and mtime."""
    path = Path(path).resolve()
    st = path.stat()
    return _sha256_cached(str(path), st.st_size, st.st_mtime_ns)


def _looks_like_path(spec: str) -> bool:
    return (
        os.sep in spec
        or "/" in spec
        or spec.startswith(("~", "."))
        or spec.endswith((".pth", ".pt", ".tar", ".ckpt", ".bin"))
    )


def _is_known(name: str) -> bool:
    return name in _MICRONET or name in known_weights()


def resolve_weights(
    spec: str | Path | None, *, allow_download: bool = False, progress: bool = True
) -> ResolvedWeights:
    """Turn a weights spec into a file on disk (or random initialisation).

    Parameters
    ----------
    spec
        A known name (see :func:`known_weights`), the path of a local file,
        ``"random"`` (no weights, random initialisation), or ``None`` for the
        default (``"micronet"``).
    allow_download
        Download a missing known file into :func:`weights_dir`.  Off by default:
        nothing goes to the network unless the user asks.
    progress
        Show a progress bar while downloading.

    Returns
    -------
    ResolvedWeights

    Raises
    ------
    WeightsError
        Unknown name; local file missing; known file missing and download not
        allowed; download failed.
    """
    if spec is None:
        spec = DEFAULT_WEIGHTS
    if isinstance(spec, str) and spec.strip().lower() == RANDOM:
        return ResolvedWeights(RANDOM, None, None, "random initialisation (no pretrained weights)")
    if isinstance(spec, Path) or _looks_like_path(spec):
        return _resolve_local(Path(spec).expanduser())
    name = spec.strip().lower()
    if not _is_known(name) and Path(spec).is_file():  # a bare file name in the cwd
        return _resolve_local(Path(spec))
    entry = weights_info(name)
    path = find_weights(entry.name)
    if path is not None:
        source = f"{entry.description}; file {path}"
    elif allow_download:
        path = download_weights(entry, progress=progress)
        source = f"{entry.description}; downloaded from {entry.url} to {path}"
    else:
        raise _missing_error(entry)
    return ResolvedWeights(entry.name, path, file_sha256(path), source)


def _resolve_local(path: Path) -> ResolvedWeights:
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise WeightsError(
            f"weights file {what}",
            fix="give the path of a ResNet50 state dict saved with torch.save, "
            f"or a known weights name ({', '.join(known_weights())})",
            where=path,
        )
    return ResolvedWeights(path.name, path, file_sha256(path), f"local file {path.resolve()}")


def _missing_error(entry: KnownWeights) -> WeightsError:
    target = weights_dir() / entry.file_name
    return WeightsError(
        f"weights {entry.name!r} ({entry.description}) are not on this machine: "
        f"expected the file {entry.file_name} in {target.parent}",
        fix=f"download {entry.url} and save it as {target} "
        f"(or set ${WEIGHTS_DIR_ENV} to the folder that holds it); or allow the "
        "download (Python: allow_download=True, CLI: --download-weights); or pass "
        "the path of a local weights file instead",
        where=target,
    )


def download_weights(entry: KnownWeights, *, progress: bool = True) -> Path:
    """Download ``entry`` into :func:`weights_dir` atomically and return its path.

    The file is written under a temporary name in the same folder and renamed
    when complete, so an interrupted download never leaves a truncated file
    under the real name.
    """
    import torch.hub

    folder = weights_dir()
    target = folder / entry.file_name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(
            f"cannot create the weights folder ({exc.strerror or exc})",
            fix=f"set ${WEIGHTS_DIR_ENV} to a writable folder",
            where=folder,
        ) from exc
    tmp = folder / f".{entry.file_name}.{os.getpid()}.part"
    try:
        torch.hub.download_url_to_file(
            entry.url, str(tmp), hash_prefix=entry.sha256_prefix, progress=progress
        )
        os.replace(tmp, target)
    except Exception as exc:  # network, HTTP, disk or hash errors all mean "no file"
        raise WeightsError(
            f"could not download weights {entry.name!r} from {entry.url}: {exc}",
            fix=f"check the network connection, or download the file by other means "
            f"and save it as {target}",
            where=target,
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _unwrap(obj: Any, path: Path) -> dict[str, Any]:
    """Find the state dict inside common checkpoint wrappers."""
    for _ in range(3):  # e.g. {"model": {"state_dict": {...}}}
        if not isinstance(obj, dict):
            break
        wrappers = ("state_dict", "model", "model_state_dict")
        inner = next((obj[k] for k in wrappers if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict) or not obj:
        raise WeightsError(
            f"file holds a {type(obj).__name__}, not a state dict of tensors",
            fix="save the weights with torch.save(model.state_dict(), path)",
            where=path,
        )
    return obj


def load_state_dict(path: str | Path) -> dict[str, Any]:
    """Read a state dict safely (``weights_only=True``) onto the CPU.

    Unwraps ``{"state_dict": ...}`` / ``{"model": ...}`` checkpoints and strips
    the ``module.`` prefix that ``DataParallel`` adds.

    Parameters
    ----------
    path
        A file written by ``torch.save``.

    Returns
    -------
    Dict of parameter name to tensor.

    Raises
    ------
    WeightsError
        The file is missing, not a torch file, truncated, needs unsafe unpickling,
        or does not hold a state dict of tensors.
    """
    import torch

    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError("weights file does not exist", fix="check the path", where=path) from None
    except Exception as exc:  # pickle, zip and EOF errors depending on how it is broken
        raise WeightsError(
            f"cannot read weights file: not a complete torch.save file of tensors "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
            fix="delete it and download it again (the download may have been cut short), "
            "or re-save the weights with torch.save(model.state_dict(), path)",
            where=path,
        ) from exc
    state = _unwrap(obj, path)
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(
            f"state dict holds non-tensor entries: {', '.join(map(str, bad[:5]))}",
            fix="save the weights with torch.save(model.state_dict(), path)",
            where=path,
        )
    return {str(k).removeprefix("module."): v for k, v in state.items()}


#: Offending keys quoted in a layout error.
_SHOW_KEYS = 5


def check_layout(state: dict[str, Any], expected: dict[str, Any], path: Path, *, what: str,
                 fix: str) -> None:
    """Raise WeightsError unless ``state`` has exactly the keys and tensor shapes of ``expected``.

    Parameters
    ----------
    state
        The state dict read from ``path``.
    expected
        The network's own ``state_dict()``.
    what
        The network, for the message (e.g. ``"torchvision's ResNet50"``).
    fix
        What the user should load instead.
    """
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or reshaped):
        return
    problems = {"missing keys": missing, "unexpected keys": unexpected, "wrong shapes": reshaped}
    parts = [f"{len(items)} {label} (e.g. {', '.join(items[:_SHOW_KEYS])})"
             for label, items in problems.items() if items]
    raise WeightsError(f"weights do not fit {what}: " + "; ".join(parts), fix=fix, where=path)
