"""Speed against the hardware: peak FLOP rate, encoder throughput, graph and Leiden scaling.

Every function returns plain dicts (floats, ints, strings, lists, ``None``) that
``json.dumps`` accepts, and each figure comes with a sentence saying how it was
obtained, so that a report can quote the method next to the number.

* :func:`peak_flops`: the machine's floating-point peak, measured (best large
  ``torch.mm``) and nominal (cores x clock x FLOP per cycle from the CPU's SIMD
  flags, or the GPU's SM count and clock).
* :func:`encoder_flops_per_chip`: FLOPs of one chip through an encoder, counted
  by torch's ``FlopCounterMode`` for torch encoders, analytic for the Fourier
  encoder.
* :func:`encoder_throughput`: chips per second of ``encoder.encode`` and the
  fraction of peak it reaches; for torch encoders also split into preprocessing and
  network (:func:`forward_split`), and the network's own fraction of peak.
* :func:`compilation_across_processes`: a compiled encoder's first call in a fresh
  process, with inductor's on-disk cache empty and then warm from the first.
* :func:`graph_scaling`: seconds of PCA + kNN graph and of Leiden against the
  number of chips, on a planted Gaussian mixture (the recovered partition is
  scored, so a fast but wrong graph stage shows).
* :func:`peak_rss_mib`, :func:`current_rss_mib`, :func:`reset_peak_rss`: Linux
  resident-memory marks.

FLOP conventions: one fused multiply-add is 2 FLOPs; a matrix product of
``(m, k) x (k, n)`` is ``2 m k n`` FLOPs; only arithmetic that dominates the cost
is counted (see each function).  Nothing here prints.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..compute.cpus import cgroup_cpu_limit, cpu_affinity

__all__ = [
    "ChildrenMemory",
    "against_peak",
    "compilation_across_processes",
    "current_rss_mib",
    "encoder_flops_per_chip",
    "encode_in_batches",
    "encoder_throughput",
    "forward_split",
    "fourier_flops_per_chip",
    "graph_scaling",
    "peak_flops",
    "peak_rss_mib",
    "planted_mixture",
    "reset_peak_rss",
]

_MIB = 1024.0  # KiB per MiB

# --------------------------------------------------------------------------- memory


def _proc_status_kib(key: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (Linux), or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name == key:
                return int(value.split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_rss_mib() -> float | None:
    """Peak resident set size of this process (``VmHWM``), in MiB.

    Since process start or since the last successful :func:`reset_peak_rss`.

    Returns
    -------
    MiB, or ``None`` where ``/proc/self/status`` is not available (not Linux).
    """
    kib = _proc_status_kib("VmHWM")
    return None if kib is None else kib / _MIB


def current_rss_mib() -> float | None:
    """Current resident set size of this process (``VmRSS``), in MiB; ``None`` off Linux."""
    kib = _proc_status_kib("VmRSS")
    return None if kib is None else kib / _MIB


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (``VmHWM``) of this process to the current RSS.

    Writes ``"5"`` to ``/proc/self/clear_refs`` (Linux >= 4.0).

    Returns
    -------
    True if the mark was reset; False where that is not possible (not Linux, or
    the file is not writable, e.g. in some containers).  After False,
    :func:`peak_rss_mib` is the peak since process start.
    """
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class ChildrenMemory:
    """Peak private memory of this process's child processes while a block runs (Linux).

    A helper process forked for a consensus (:mod:`multimodal_seg.graphs.ahead`) shares most of
    its pages with this one, so its own resident size counts them twice; what it adds to the
    machine is its private memory (``Private_Clean + Private_Dirty`` of
    ``/proc/<pid>/smaps_rollup``), sampled every ``interval`` seconds.  Use as
    ``with ChildrenMemory() as children: ...``; then ``children.peak_mib`` (``None`` where it
    cannot be read: not Linux) and ``children.samples``.
    """

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak_mib: float | None = 0.0 if Path("/proc/self/smaps_rollup").exists() else None
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _private_mib(self, pid: int) -> float | None:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:  # ended between listing and reading
            return None
        kib = sum(int(line.split()[1]) for line in text.splitlines()
                  if line.startswith(("Private_Clean:", "Private_Dirty:")))
        return kib / _MIB

    def _poll(self) -> None:
        import multiprocessing

        while not self._stop.wait(self.interval):
            for child in multiprocessing.active_children():
                mib = self._private_mib(child.pid)
                if mib is not None:
                    self.peak_mib = max(self.peak_mib or 0.0, mib)
                    self.samples += 1

    def __enter__(self) -> "ChildrenMemory":
        if self.peak_mib is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()


def _load_average() -> float | None:
    """1-minute load average (runnable processes; Unix), or None: shows a busy machine."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


# --------------------------------------------------------------------------- CPU description


def _cpuinfo() -> list[dict[str, str]]:
    """``/proc/cpuinfo`` as one dict per logical processor (empty off Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    blocks = []
    for block in text.strip().split("\n\n"):
        entry = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                entry[key.strip().lower()] = value.strip()
        if entry:
            blocks.append(entry)
    return blocks


def _physical_cores(info: list[dict[str, str]]) -> tuple[int, str]:
    """Physical cores this process can use, and how that was determined."""
    usable = cpu_affinity()
    logical = len(usable) if usable is not None else (os.cpu_count() or 1)
    cores = set()
    for entry in info:
        try:
            cpu = int(entry["processor"])
        except (KeyError, ValueError):
            continue
        if usable is not None and cpu not in usable:
            continue
        cores.add((entry.get("physical id", "0"), entry.get("core id", str(cpu))))
    if cores:
        n, how = len(cores), f"{len(cores)} physical cores among the {logical} usable logical CPUs"
    else:
        n, how = logical, f"{logical} usable logical CPUs (physical cores unknown)"
    limit = cgroup_cpu_limit()
    if limit is not None and math.ceil(limit) < n:
        n = max(1, math.ceil(limit))
        how += f", capped at {n} by the cgroup CPU quota ({limit:g} CPUs)"
    return n, how


def _clock_mhz(info: list[dict[str, str]]) -> tuple[float | None, str]:
    """Core clock in MHz and where it came from (maximum / boost clock preferred)."""
    try:
        khz = int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text())
        if khz > 0:
            return khz / 1000.0, "maximum clock from /sys/devices/system/cpu/cpu0/cpufreq"
    except (OSError, ValueError):
        pass
    lscpu = shutil.which("lscpu")
    if lscpu:
        try:
            out = subprocess.run([lscpu], capture_output=True, text=True, timeout=10, check=False,
                                 env={**os.environ, "LC_ALL": "C"}).stdout
            for line in out.splitlines():
                key, _, value = line.partition(":")
                if key.strip().lower() == "cpu max mhz":
                    return float(value.strip().replace(",", ".")), "'CPU max MHz' from lscpu"
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
    mhz = []
    for entry in info:
        try:
            mhz.append(float(entry["cpu mhz"]))
        except (KeyError, ValueError):
            continue
    if mhz:
        return max(mhz), ("'cpu MHz' from /proc/cpuinfo (the current clock as the kernel "
                          "reports it; turbo may run faster)")
    return None, "clock unknown"


def _flops_per_cycle(entry: dict[str, str], dtype: str) -> tuple[int | None, str, str]:
    """Nominal FLOPs per cycle per core for ``dtype``, the SIMD level, and the assumption."""
    flags = set((entry.get("flags") or entry.get("features") or "").split())
    vendor = entry.get("vendor_id", "")
    try:
        family = int(entry.get("cpu family", "-1"))
        model = int(entry.get("model", "-1"))
    except ValueError:
        family, model = -1, -1
    if "avx512f" in flags:
        if vendor == "AuthenticAMD" and family == 25:
            simd, fp32 = "avx512f", 32
            why = ("AVX-512 on AMD Zen 4 (family 25) executes as two 256-bit halves: "
                   "assumed 2 FMA units x 8 float32 lanes x 2 FLOP = 32 float32 FLOP/cycle")
        else:
            simd, fp32 = "avx512f", 64
            why = ("AVX-512: assumed 2 FMA units x 16 float32 lanes x 2 FLOP = 64 float32 "
                   "FLOP/cycle (Xeon Gold/Platinum and later; parts with one 512-bit FMA unit "
                   "reach half)")
    elif "avx2" in flags and "fma" in flags:
        if vendor == "AuthenticAMD" and family == 23 and model < 0x30:
            simd, fp32 = "avx2+fma", 16
            why = ("AVX2+FMA on AMD Zen/Zen+ (family 23, model < 0x30), whose 128-bit FP "
                   "datapath splits 256-bit operations: 2 FMA units x 4 float32 lanes x 2 FLOP "
                   "= 16 float32 FLOP/cycle")
        else:
            simd, fp32 = "avx2+fma", 32
            why = ("AVX2+FMA: assumed 2 FMA units x 8 float32 lanes x 2 FLOP = 32 float32 "
                   "FLOP/cycle")
    elif "avx" in flags:
        simd, fp32 = "avx", 16
        why = ("AVX without FMA: assumed one 8-lane add and one 8-lane multiply per cycle = "
               "16 float32 FLOP/cycle")
    elif "asimd" in flags:
        simd, fp32 = "asimd", 16
        why = ("ARM NEON (asimd): assumed 2 FMA units x 4 float32 lanes x 2 FLOP = 16 float32 "
               "FLOP/cycle")
    else:
        simd, fp32 = "sse-class", 8
        why = ("no AVX/NEON flag recognised: assumed one 4-lane add and one 4-lane multiply "
               "per cycle = 8 float32 FLOP/cycle")
    if dtype == "float32":
        return fp32, simd, why
    if dtype == "float64":
        return fp32 // 2, simd, why + "; float64 has half the lanes: " + f"{fp32 // 2} FLOP/cycle"
    return None, simd, f"no nominal CPU rate is derived for {dtype}"


def _cpu_nominal(dtype: str) -> dict[str, Any]:
    info = _cpuinfo()
    first = info[0] if info else {}
    cores, cores_how = _physical_cores(info)
    clock, clock_how = _clock_mhz(info)
    per_cycle, simd, why = _flops_per_cycle(first, dtype)
    model = first.get("model name") or platform.processor() or platform.machine()
    out: dict[str, Any] = {
        "cpu_model": model,
        "simd": simd,
        "cores": cores,
        "clock_mhz": clock,
        "flops_per_cycle_per_core": per_cycle,
    }
    if clock is None or per_cycle is None:
        out["nominal_flops"] = None
        out["nominal_method"] = (f"not derived ({clock_how if clock is None else why}); "
                                 f"cores: {cores_how}")
        return out
    rate = cores * clock * 1e6 * per_cycle
    out["nominal_flops"] = rate
    out["nominal_method"] = (
        f"{cores} cores x {clock:.0f} MHz x {per_cycle} {dtype} FLOP/cycle/core = "
        f"{rate / 1e9:.1f} GFLOP/s; cores: {cores_how}; clock: {clock_how}; "
        f"FLOP/cycle: {why}")
    return out


# --------------------------------------------------------------------------- GPU description

#: FP32 CUDA cores per SM by compute capability (non-tensor-core FMA lanes).
_CUDA_FP32_LANES = {(6, 0): 64, (6, 1): 128, (7, 0): 64, (7, 5): 64, (8, 0): 64,
                    (8, 6): 128, (8, 7): 128, (8, 9): 128, (9, 0): 128,
                    (10, 0): 128, (12, 0): 128}


def _cuda_nominal(device: Any, dtype: str) -> dict[str, Any]:
    """Nominal FP32 CUDA-core peak: SMs x FP32 lanes per SM x 2 x clock (untested here)."""
    import torch

    props = torch.cuda.get_device_properties(device)
    cc = (props.major, props.minor)
    lanes = _CUDA_FP32_LANES.get(cc)
    clock_khz = getattr(props, "clock_rate", 0) or 0
    out: dict[str, Any] = {"gpu_model": props.name, "compute_capability": f"{cc[0]}.{cc[1]}",
                           "sms": props.multi_processor_count,
                           "clock_mhz": clock_khz / 1000.0 if clock_khz else None,
                           "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32)}
    if dtype != "float32" or lanes is None or not clock_khz:
        why = (f"{dtype} (only float32 CUDA-core peaks are derived)" if dtype != "float32"
               else "unknown compute capability" if lanes is None else "clock unknown")
        out["nominal_flops"] = None
        out["nominal_method"] = f"not derived: {why}"
        return out
    rate = props.multi_processor_count * lanes * 2 * clock_khz * 1e3
    out["nominal_flops"] = rate
    out["nominal_method"] = (
        f"{props.multi_processor_count} SMs x {lanes} FP32 lanes x 2 FLOP x "
        f"{clock_khz / 1000:.0f} MHz = {rate / 1e12:.1f} TFLOP/s (CUDA cores, no tensor cores; "
        "TF32 tensor-core matmuls can exceed it)")
    return out


# --------------------------------------------------------------------------- peak FLOP rate


def peak_flops(
    dtype: str = "float32",
    *,
    size: int | None = None,
    repeats: int = 5,
    device: Any = "cpu",
) -> dict[str, Any]:
    """The machine's peak floating-point rate, measured and nominal.

    Measured: the best (shortest) of ``repeats`` square ``torch.mm`` of ``size x
    size`` matrices, after one warm-up, on all of torch's intra-op threads;
    ``2 size^3`` FLOPs each; other work on the machine lowers it (see
    ``load_average``).  Nominal (CPU): physical cores usable by this
    process x clock x FLOPs per cycle per core from the CPU's SIMD flags (the
    assumption is spelled out in ``nominal_method``).  Nominal (CUDA):
    SMs x FP32 lanes per SM x 2 x clock, float32 only.

    Parameters
    ----------
    dtype
        ``"float32"``, ``"float64"``, ``"float16"`` or ``"bfloat16"`` (nominal
        rates are derived for float32 and, on CPUs, float64).
    size
        Matrix edge; default 2048 on CPUs, 8192 on GPUs.
    repeats
        Timed products; the fastest counts.
    device
        ``"cpu"`` or a CUDA device (``"cuda"``, ``"cuda:1"``, a ``torch.device``).

    Returns
    -------
    dict with ``measured_flops`` and ``nominal_flops`` (FLOP/s; nominal ``None``
    where not derivable), ``measured_method`` and ``nominal_method`` (sentences
    for a report), ``measured_seconds`` (s, best product), ``measured_over_nominal``,
    ``measured_cpu_flops`` (FLOP per CPU-second of the best product, times the
    threads: the rate while the threads run, less sensitive to other work on the
    machine; ``None`` on GPUs), ``device``, ``dtype``, ``threads``, ``size``, ``repeats``, ``load_average``
    (1-minute load average after the measurement, or None) and the hardware
    figures behind the nominal rate (``cores``, ``clock_mhz``,
    ``flops_per_cycle_per_core``, ``simd``, ``cpu_model``; or ``sms``,
    ``compute_capability``, ``gpu_model`` on GPUs).
    """
    import torch

    dev = torch.device(device)
    dtypes = {"float32": torch.float32, "float64": torch.float64,
              "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype not in dtypes:
        raise ValueError(f"dtype {dtype!r} not one of {', '.join(dtypes)}")
    if repeats < 1:
        raise ValueError(f"repeats={repeats} must be >= 1")
    cuda = dev.type == "cuda"
    n = int(size) if size is not None else (8192 if cuda else 2048)

    gen = torch.Generator(device=dev).manual_seed(0)
    a = torch.randn(n, n, generator=gen, device=dev).to(dtypes[dtype])
    b = torch.randn(n, n, generator=gen, device=dev).to(dtypes[dtype])
    c = torch.empty(n, n, dtype=dtypes[dtype], device=dev)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(dev)

    times, cpu_times = [], []
    with torch.inference_mode():
        torch.mm(a, b, out=c)  # warm-up: thread pool, kernels selection
        sync()
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            torch.mm(a, b, out=c)
            sync()
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
    del a, b, c
    best = min(times)
    flop = 2.0 * n**3
    measured = flop / best
    threads = torch.get_num_threads()
    where = (f"on {dev}" if cuda else f"on {threads} intra-op thread{'s' if threads != 1 else ''}")
    out: dict[str, Any] = {
        "device": str(dev),
        "dtype": dtype,
        "size": n,
        "repeats": repeats,
        "threads": threads,
        "measured_flops": measured,
        "measured_seconds": best,
        # FLOP per CPU-second of this process, times its threads: what the threads reach
        # while they run, whatever else the machine runs (CPU runs only: a GPU's is None)
        "measured_cpu_flops": None if cuda else flop * threads / min(cpu_times),
        "load_average": _load_average(),
        "measured_method": (
            f"best of {repeats} torch.mm of two {n}x{n} {dtype} matrices {where}, "
            f"2 n^3 = {flop:.3g} FLOP each: {measured / 1e9:.1f} GFLOP/s"),
    }
    nominal = _cuda_nominal(dev, dtype) if cuda else _cpu_nominal(dtype)
    out.update(nominal)
    rate = out.get("nominal_flops")
    out["measured_over_nominal"] = measured / rate if rate else None
    return out


# --------------------------------------------------------------------------- encoder FLOPs


def fourier_flops_per_chip(size: int, n_radial: int = 12, n_angular: int = 12) -> float:
    """Analytic FLOPs of :class:`~multimodal_seg.encoders.fourier.FourierEncoder` per chip.

    Counted (``N = size**2`` pixels):

    * real 2D FFT (``numpy.fft.rfft2``): ``2.5 N log2 N`` (the FFTW/benchFFT
      convention for real-input transforms: half the ``5 N log2 N`` of a complex
      FFT of the same length);
    * centring and Hann window: ``2 N`` (one subtraction, one multiplication);
    * power spectrum ``|X|^2`` on the ``size x (size // 2 + 1)`` rfft samples:
      3 FLOPs each;
    * polar binning: 1 addition per sample that falls in a bin.

    Not counted: the intensity statistics (mean, standard deviation, gradient,
    percentiles are sorting rather than arithmetic) and the logs of the
    ``n_radial * (n_angular + 1)`` bins, all small or not FLOP-bound.

    Returns
    -------
    FLOPs per chip.
    """
    from ..encoders.fourier import polar_bins

    n = float(size * size)
    samples = size * (size // 2 + 1)
    bins, _ = polar_bins(int(size), int(n_radial), int(n_angular))
    used = int((bins >= 0).sum())
    return 2.5 * n * math.log2(n) + 2.0 * n + 3.0 * samples + used


def _torch_network(encoder: Any) -> Any:
    """The encoder's public ``network`` attribute when it is a torch module, else None."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return None
    network = getattr(encoder, "network", None)
    return network if isinstance(network, torch.nn.Module) else None


def _example_chips(chip_shape: tuple[int, ...], n: int = 1, seed: int = 0) -> np.ndarray:
    """``(n, *chip_shape)`` float32 uniform in [0, 1), seeded."""
    return np.random.default_rng(seed).random((n, *chip_shape), dtype=np.float32)


def encoder_flops_per_chip(encoder: Any, chip_shape: tuple[int, ...]) -> float | None:
    """FLOPs of one chip through ``encoder.encode``.

    Torch encoders (those with a public ``network`` attribute that is a
    ``torch.nn.Module``: ResNet50, the spectrum and diffraction convnets):
    ``encoder.encode`` of one seeded random chip runs under
    ``torch.utils.flop_counter.FlopCounterMode``, which counts the operations
    torch registers FLOP formulas for (convolutions, matrix products, attention;
    ``2 x`` multiply-adds), whatever preprocessing the encoder does first (e.g.
    ResNet50's resize to 224 px).  Element-wise operations, normalisation and
    pooling are not counted, as is usual for network FLOPs.  A chip of
    ``h x w`` positions (spectra, patterns) is counted whole: all its positions.
    A compiled network (``compile=True``) is counted as it runs eagerly: the same
    arithmetic, without the zeros its batches are padded with.

    Numpy encoders: the Fourier encoder has an analytic count
    (:func:`fourier_flops_per_chip`); for the others (``spectrum-pca``,
    ``diffraction-profiles``, plugins) no well-defined count is given: ``None``.

    Parameters
    ----------
    encoder
        An :class:`~multimodal_seg.encoders.base.Encoder` (fitted, if it needs fitting).
    chip_shape
        One chip's shape without the batch axis: ``(size, size)`` for images,
        ``(h, w, channels)`` for spectra, ``(h, w, qy, qx)`` for diffraction.

    Returns
    -------
    FLOPs per chip, or ``None`` where not defined.
    """
    shape = tuple(int(s) for s in chip_shape)
    if _torch_network(encoder) is not None:
        from torch.utils.flop_counter import FlopCounterMode

        chip = _example_chips(shape)
        # A compiled network is counted eagerly: the same arithmetic, without the padding
        # of the batch to its fixed size (and without compiling under the counter's hooks).
        runner = getattr(encoder, "runner", None)
        compiled = bool(getattr(runner, "compile", False))
        try:
            if compiled:
                runner.compile = False
            with FlopCounterMode(display=False) as counter:
                encoder.encode(chip)
        finally:
            if compiled:
                runner.compile = True
        total = counter.get_total_flops()
        return float(total) if total > 0 else None
    from ..encoders.fourier import FourierEncoder

    if isinstance(encoder, FourierEncoder):
        if len(shape) != 2 or shape[0] != shape[1]:
            raise ValueError(f"the Fourier encoder takes square (size, size) chips, not {shape}")
        return fourier_flops_per_chip(shape[0], encoder.n_radial, encoder.n_angular)
    return None


# --------------------------------------------------------------------------- encoder throughput


def peak_for(encoder: Any, peaks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The :func:`peak_flops` of the device ``encoder`` runs on, measured once per device.

    ``peaks`` maps a device name (``"cpu"``, ``"cuda:0"`` ...) to its measured peak and
    is filled in as new devices come: a GPU encoder is measured against its GPU's
    product rate in the precision it computes in (bfloat16 or float16 under CUDA
    autocast), never against the CPU's.  Devices other than CPUs and CUDA GPUs get ``{}``
    (no peak, fractions None).
    """
    import torch

    from ..encoders.device import amp_dtype

    device = torch.device(str(getattr(encoder, "device", None) or "cpu"))
    key = str(device)
    if key not in peaks:
        if device.type == "cuda":
            low = amp_dtype(device)
            dtype = {torch.bfloat16: "bfloat16", torch.float16: "float16"}.get(low, "float32")
            peaks[key] = peak_flops(device=device, dtype=dtype)
        elif device.type == "cpu":
            peaks[key] = peak_flops()
        else:
            peaks[key] = {}
    return peaks[key]


def encoder_throughput(
    encoder: Any,
    chips: np.ndarray,
    *,
    repeats: int = 3,
    peak: dict[str, Any] | None = None,
    flops_per_chip: float | None = None,
    batch: int | None = None,
) -> dict[str, Any]:
    """Chips per second of ``encoder.encode`` on ``chips``, and the fraction of peak reached.

    The forward pass (:func:`encode_in_batches`: ``encoder.encode`` on ``batch`` chips at a
    time, or all in one call) runs once untimed (warm-up: thread pools, kernel selection,
    caches), then ``repeats`` times timed; the median counts.

    Parameters
    ----------
    encoder
        An :class:`~multimodal_seg.encoders.base.Encoder` (fitted, if it needs fitting).
    chips
        ``(n, *chip_shape)`` chips as the encoder takes them.
    repeats
        Timed runs (median reported).
    peak
        A :func:`peak_flops` result for the encoder's device; measured with the
        defaults when ``None`` (on ``encoder.device`` if it has one, else the CPU;
        on other devices than CPUs and CUDA GPUs no peak, and fractions are None).
    flops_per_chip
        FLOPs per chip; :func:`encoder_flops_per_chip` when ``None``.
    batch
        Chips per ``encode`` call, as ``segment()`` hands them (``None``: all in one call).

    Returns
    -------
    dict with ``encoder`` (its description), ``n_chips``, ``chip_shape``,
    ``repeats``, ``seconds`` (median wall time of one ``encode``, s),
    ``seconds_all`` (every timed run, s), ``warmup_seconds`` (the untimed first
    run: thread pools, caches, and a compiled network's compilation), ``chips_per_s``, ``seconds_per_chip``
    (s), ``flops_per_chip`` (FLOP or None), ``flop_rate`` (FLOP/s achieved, or
    None), ``fraction_of_measured_peak`` and ``fraction_of_nominal_peak``
    (``flop_rate`` over the peaks, or None), ``peak_measured_flops``,
    ``peak_nominal_flops`` (FLOP/s), ``cpu_seconds`` (median CPU time of this process
    per ``encode``) and ``fraction_of_measured_cpu_peak`` (FLOP per CPU-second times
    torch's threads, over the peak's ``measured_cpu_flops``: steadier than the wall-time
    fraction when other work shares the machine), ``threads`` (torch intra-op threads),
    ``load_average`` (1-minute, after the runs, or None) and ``device``; torch encoders
    add ``prepare_seconds`` and ``network_seconds`` (:func:`forward_split`) and
    ``network_fraction_of_measured_peak``.  Numpy
    encoders may use one core only while the peaks are for all cores.  ``chips_per_s == n_chips / seconds`` and
    ``flop_rate == flops_per_chip * chips_per_s``.
    """
    import torch

    if repeats < 1:
        raise ValueError(f"repeats={repeats} must be >= 1")
    chips = np.asarray(chips)
    n = int(chips.shape[0])
    if n < 1:
        raise ValueError("chips is empty")
    chip_shape = tuple(int(s) for s in chips.shape[1:])
    device = getattr(encoder, "device", None)
    device = str(device) if device is not None else "cpu"
    if flops_per_chip is None:
        flops_per_chip = encoder_flops_per_chip(encoder, chip_shape)
    if peak is None:  # peaks are measured on CPUs and CUDA GPUs only (not e.g. MPS)
        peak = peak_flops(device=device) if device == "cpu" or device.startswith("cuda") else {}

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    encode_in_batches(encoder, chips, batch)  # warm-up (and, for a compiled network, its compilation)
    sync()
    warmup = time.perf_counter() - t0
    times, cpu_times = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        encode_in_batches(encoder, chips, batch)
        sync()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    seconds = statistics.median(times)
    cpu_seconds = statistics.median(cpu_times)
    split = forward_split(encoder, chips, repeats=repeats)
    chips_per_s = n / seconds
    describe = encoder.describe() if hasattr(encoder, "describe") else type(encoder).__name__
    record = {
        "encoder": describe,
        "device": device,
        "threads": torch.get_num_threads(),
        "load_average": _load_average(),
        "n_chips": n,
        "chip_shape": list(chip_shape),
        "repeats": repeats,
        "batch": batch,
        "seconds": seconds,
        "seconds_all": times,
        "warmup_seconds": warmup,
        "chips_per_s": chips_per_s,
        "seconds_per_chip": seconds / n,
        "flops_per_chip": flops_per_chip,
        "flop_rate": flops_per_chip * chips_per_s if flops_per_chip is not None else None,
        "cpu_seconds": cpu_seconds,
        **(split or {}),
    }
    return {**record, **against_peak(record, peak)}


def encode_in_batches(encoder: Any, chips: np.ndarray, batch: int | None) -> np.ndarray:
    """``encoder.encode`` of ``chips`` ``batch`` at a time, in order (``None``: one call), as
    ``segment()`` hands them to it (:data:`multimodal_seg.pipeline.embedding.BATCH_CHIPS`).

    One call on every chip of a large image is not what the pipeline does, and not a steady
    yardstick: on the 961 chips of 128 px of the 2048 px phantom, ``fourier`` took 0.64 to
    2.87 s in six calls in a row (its transforms of all the chips at once hold about a GB),
    and 0.61 to 0.77 s in batches of 256.
    """
    if batch is None or batch >= len(chips):
        return encoder.encode(chips)
    return np.concatenate([encoder.encode(chips[i : i + batch]) for i in range(0, len(chips), batch)])


def forward_split(encoder: Any, chips: np.ndarray, *, repeats: int = 3) -> dict[str, Any] | None:
    """Where a torch encoder's forward pass goes: its preprocessing and its network.

    For an encoder with ``signals``, ``prepare`` and ``runner`` (ResNet50 and the
    convnets): every batch of ``chips``' items is prepared (``prepare_seconds``: the
    encoder's own preprocessing, numpy and torch), then the network runs on the prepared
    batches (``network_seconds``, under the encoder's autocast); medians of ``repeats``
    runs after an untimed one.  What ``encode`` does besides (averaging a chip's items,
    copying the features out) is neither.  ``None`` for other encoders.
    """
    import torch

    from ..encoders.device import autocast_context

    if not all(hasattr(encoder, name) for name in ("signals", "prepare", "runner")):
        return None
    items, _ = encoder.signals(chips)
    device = getattr(encoder, "device", torch.device("cpu"))
    batch = int(encoder.batch_size)

    def sync() -> None:
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()

    prepare, network = [], []
    with torch.inference_mode():
        for _ in range(repeats + 1):  # the first untimed
            t0 = time.perf_counter()
            batches = [encoder.prepare(items[start : start + batch]) for start in range(0, len(items), batch)]
            sync()
            t1 = time.perf_counter()
            for x in batches:
                with autocast_context(device):
                    encoder.runner(x)
            sync()
            prepare.append(t1 - t0)
            network.append(time.perf_counter() - t1)
    return {"prepare_seconds": statistics.median(prepare[1:]), "network_seconds": statistics.median(network[1:])}


def against_peak(record: dict[str, Any], peak: dict[str, Any]) -> dict[str, Any]:
    """The peak fields of an :func:`encoder_throughput` record, taken against ``peak``.

    Returns ``peak_measured_flops``, ``peak_nominal_flops`` (FLOP/s, or None),
    ``fraction_of_measured_peak``, ``fraction_of_nominal_peak`` (the record's
    ``flop_rate`` over them) and ``fraction_of_measured_cpu_peak`` (FLOP per CPU-second
    times torch's threads, over the peak's ``measured_cpu_flops``: steadier than the
    wall-time fraction when other work shares the machine), and
    ``network_fraction_of_measured_peak`` (the network alone, :func:`forward_split`);
    fractions are None where a figure is missing.
    """
    rate, measured, nominal = record.get("flop_rate"), peak.get("measured_flops"), peak.get("nominal_flops")
    work = (record["flops_per_chip"] or 0) * record["n_chips"] * record["threads"]
    return {
        "peak_measured_flops": measured,
        "peak_nominal_flops": nominal,
        "fraction_of_measured_peak": rate / measured if rate and measured else None,
        "fraction_of_measured_cpu_peak": work / record["cpu_seconds"] / peak["measured_cpu_flops"]
        if work and peak.get("measured_cpu_flops") and record["cpu_seconds"] > 0 else None,
        "fraction_of_nominal_peak": rate / nominal if rate and nominal else None,
        # the network alone (forward_split): its FLOPs over its own time
        "network_fraction_of_measured_peak": (record["flops_per_chip"] * record["n_chips"]
                                              / record["network_seconds"] / measured)
        if record.get("network_seconds") and record["flops_per_chip"] and measured else None,
    }


#: Run in a fresh interpreter by :func:`compilation_across_processes`: builds the encoder,
#: then times its first ``encode`` (compilation, or a load from inductor's cache) and a second.
_FIRST_CALL_SCRIPT = """
import json, sys, time
start = time.perf_counter()
import numpy as np
from multimodal_seg.encoders import get_encoder
name, options, shape = json.loads(sys.argv[1])
encoder = get_encoder(name, **options)
chips = np.random.default_rng(0).random(shape, dtype=np.float32)
encoder.fit(chips)
built = time.perf_counter()
encoder.encode(chips)
first = time.perf_counter()
encoder.encode(chips)
second = time.perf_counter()
try:  # what inductor found in its cache, and what it compiled (torch's own counters, not public API)
    from torch._dynamo.utils import counters
    caches = {key: int(counters[group][key]) for group, key in
              [("aot_autograd", "autograd_cache_hit"), ("aot_autograd", "autograd_cache_miss"),
               ("inductor", "fxgraph_cache_hit"), ("inductor", "fxgraph_cache_miss")]}
except (ImportError, AttributeError, KeyError, TypeError):
    caches = None
print(json.dumps({"build_seconds": built - start, "first_call_seconds": first - built,
                  "second_call_seconds": second - first, "cache": caches,
                  "fallback": getattr(getattr(encoder, "runner", None), "fallback", None)}))
"""


def compilation_across_processes(encoder_name: str, options: dict[str, Any], chips_shape: tuple[int, ...],
                                 *, cache_dir: str | Path | None = None, timeout: float = 900.0) -> dict[str, Any]:
    """How long a compiled encoder's first call takes in a fresh process, cache cold and warm.

    Two fresh interpreters in turn build ``get_encoder(encoder_name, **options)``
    (``options`` with ``compile=True``) and call ``encode`` twice on random chips of
    ``chips_shape`` (``(n, *chip_shape)``; ``n`` one batch), both with
    ``TORCHINDUCTOR_CACHE_DIR`` set to one new, empty temporary folder (or to
    ``cache_dir``, which must be empty, and is kept): the first process compiles from
    nothing, the second finds what the first left on disk, as every later process of
    a batch, a Dask worker or a rerun does.

    Returns
    -------
    dict with ``cold`` and ``warm`` (each ``build_seconds``: interpreter start,
    imports and building the encoder, s; ``first_call_seconds``: the first ``encode``,
    compilation included, s; ``second_call_seconds``: the next, s; ``cache``: torch's
    counts of AOTAutograd and FX graph cache hits and misses in that process,
    ``autograd_cache_hit``, ``autograd_cache_miss``, ``fxgraph_cache_hit``,
    ``fxgraph_cache_miss``, or None where this torch does not keep them; ``fallback``:
    why compilation was given up, or None),
    ``chips_shape`` and ``method`` (a sentence).

    Raises
    ------
    RuntimeError
        If a process fails or runs past ``timeout`` seconds (its last output lines).
    """
    if not options.get("compile"):
        raise ValueError(f"options {options!r} do not compile the network; pass compile=True")
    argument = json.dumps([encoder_name, options, [int(s) for s in chips_shape]])
    if cache_dir is not None and any(Path(cache_dir).iterdir()):
        raise ValueError(f"cache_dir {cache_dir} is not empty; the first process must start from no cache")
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mmseg-inductor-") as scratch:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache_dir or scratch)}
        for name in ("cold", "warm"):
            try:
                done = subprocess.run([sys.executable, "-c", _FIRST_CALL_SCRIPT, argument], env=env,
                                      capture_output=True, text=True, timeout=timeout, check=False)
            except subprocess.TimeoutExpired as error:
                raise RuntimeError(f"the {name}-cache process ran past {timeout:.0f} s") from error
            if done.returncode != 0:
                tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
                raise RuntimeError(f"the {name}-cache process failed (exit {done.returncode}):\n{tail}")
            runs[name] = json.loads(done.stdout.strip().splitlines()[-1])
    return {**runs, "chips_shape": [int(s) for s in chips_shape],
            "method": ("two fresh Python processes one after the other, sharing one new, empty "
                       "TORCHINDUCTOR_CACHE_DIR: each builds the encoder and times its first encode "
                       "(compilation, or a load from the cache the first process left) and a second")}


# --------------------------------------------------------------------------- graph and Leiden


def planted_mixture(
    n: int, *, dim: int = 64, n_clusters: int = 5, separation: float = 1.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic embeddings with planted clusters: an isotropic Gaussian mixture.

    Cluster ``c`` has centre ``mu_c ~ N(0, separation^2 I)`` and its points are
    ``mu_c + N(0, I)``; clusters are of equal size (within one), labels shuffled.
    Centres then lie about ``separation * sqrt(2 dim)`` apart, against a noise of
    1 per dimension, so the default is well separated once PCA keeps the
    ``n_clusters - 1`` directions that carry the centres.

    Returns
    -------
    ``(embeddings (n, dim) float32, labels (n,) int64)``.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=separation, size=(n_clusters, dim))
    labels = rng.permutation(np.arange(n) % n_clusters)
    x = centres[labels] + rng.normal(size=(n, dim))
    return x.astype(np.float32), labels.astype(np.int64)


def _stage(fn: Any, rss: bool) -> tuple[Any, float, float | None]:
    """``fn()``, its wall time (s) and, if ``rss``, its peak-RSS rise over the start (MiB)."""
    before = current_rss_mib() if rss else None
    reset = rss and before is not None and reset_peak_rss()
    t0 = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - t0
    peak = peak_rss_mib() if reset else None
    delta = max(0.0, peak - before) if peak is not None and before is not None else None
    return value, seconds, delta


def knn_recall(graph: Any, features: np.ndarray, *, k: int, seed: int = 0, sample: int = 1000) -> float:
    """Recall of a kNN graph against exact search on a sample of chips.

    For ``sample`` chips drawn at random (seeded), the share of their exact ``k`` nearest
    neighbours by cosine distance (:func:`multimodal_seg.graphs.knn.cosine_neighbours`,
    themselves left out) that are their neighbours in ``graph``.  The graph is symmetrised,
    so a neighbour found in either direction counts.
    """
    from ..graphs.knn import cosine_neighbours

    rng = np.random.default_rng(seed)
    picked = rng.choice(features.shape[0], size=min(sample, features.shape[0]), replace=False)
    _, exact = cosine_neighbours(features, features[picked], k + 1)
    graph = graph.tocsr()
    found = 0
    for row, neighbours in zip(picked, exact):
        true = [j for j in neighbours if j != row][:k]
        found += np.isin(true, graph.indices[graph.indptr[row]:graph.indptr[row + 1]]).sum()
    return float(found / (len(picked) * k))


def graph_scaling(
    n_chips_list: list[int],
    *,
    dim: int = 64,
    k: int = 15,
    seed: int = 0,
    n_clusters: int = 5,
    n_pcs: int = 30,
    exact_max: int | None = None,
    resolution: float = 1.0,
    measure_rss: bool = True,
) -> list[dict[str, Any]]:
    """Seconds of the graph stage and of Leiden against the number of chips.

    For each ``n`` a planted Gaussian mixture (:func:`planted_mixture`, seeded)
    goes through :func:`multimodal_seg.graphs.knn.reduce_features` (standardise + PCA
    to ``n_pcs``) and :func:`multimodal_seg.graphs.knn.knn_graph` (cosine kNN, timed
    together as the graph stage, and each alone), then
    :func:`multimodal_seg.graphs.communities.partition_graph` (Leiden, timed alone).
    The partition is scored against the planted clusters (ARI), so a benchmark
    that is fast because it is wrong shows.  Data generation is not timed, and
    one untimed warm-up on 300 points runs first (see
    ``pynndescent_warmup_seconds``).

    Parameters
    ----------
    n_chips_list
        Numbers of chips (rows), one result row each, in this order.
    dim
        Embedding length.
    k
        Neighbours per chip.
    seed
        Seed of the mixture, PCA, kNN (pynndescent) and Leiden.
    n_clusters
        Planted clusters.
    n_pcs
        Principal components kept (the pipeline's default, 30).
    exact_max
        Largest ``n`` searched exactly; default
        :data:`multimodal_seg.graphs.knn.EXACT_MAX` (above: pynndescent).
    resolution
        Leiden resolution.
    measure_rss
        Record the peak-RSS rise of each stage (Linux; needs
        ``/proc/self/clear_refs``, else ``None``).

    Returns
    -------
    One dict per ``n``: ``n_chips``, ``dim``, ``k``, ``n_pcs``, ``n_clusters``,
    ``knn_search`` (``"exact"`` or ``"pynndescent"``), ``knn_recall`` (:func:`knn_recall`
    on 1000 chips; 1 for exact search),
    ``pynndescent_warmup_seconds`` (s, the untimed first pynndescent search of
    300 points, mostly numba compilation, once per call; ``None`` for exact
    rows), ``reduce_seconds``,
    ``knn_seconds``, ``graph_seconds`` (the whole stage, about their sum),
    ``leiden_seconds`` (all s),
    ``n_edges`` (undirected), ``n_communities``, ``modularity``, ``ari``
    (against the planted clusters), and ``graph_peak_rss_delta_mib``,
    ``leiden_peak_rss_delta_mib`` (peak RSS during the stage minus RSS before
    it, MiB; ``None`` where the peak mark cannot be reset).
    """
    from ..graphs.communities import partition_graph
    from ..graphs.knn import EXACT_MAX, knn_graph, reduce_features
    from ..metrics import adjusted_rand

    limit = EXACT_MAX if exact_max is None else int(exact_max)
    # Warm-up, untimed: imports, BLAS and igraph start-up; and, when some n is
    # searched approximately, pynndescent's numba compilation (over a minute on
    # a cold cache), which is a one-off cost per process, reported on its own.
    x, _ = planted_mixture(300, dim=dim, n_clusters=n_clusters, seed=seed)
    feats = reduce_features(x, n_pcs=n_pcs, seed=seed)
    partition_graph(knn_graph(feats, k=k, seed=seed, exact_max=len(x)), seed=seed)
    compile_s = None
    if any(int(n) > limit for n in n_chips_list):
        t0 = time.perf_counter()
        knn_graph(feats, k=k, seed=seed, exact_max=0)
        compile_s = time.perf_counter() - t0
    rows = []
    for n in n_chips_list:
        n = int(n)
        x, truth = planted_mixture(n, dim=dim, n_clusters=n_clusters, seed=seed)

        def graph_stage(x: np.ndarray = x) -> tuple[Any, float, float, np.ndarray]:
            t0 = time.perf_counter()
            feats = reduce_features(x, n_pcs=n_pcs, seed=seed)
            t1 = time.perf_counter()
            g = knn_graph(feats, k=k, seed=seed, exact_max=limit)
            return g, t1 - t0, time.perf_counter() - t1, feats

        (graph, reduce_s, knn_s, feats), graph_s, graph_rss = _stage(graph_stage, measure_rss)
        recall = knn_recall(graph, feats, k=k, seed=seed) if n > limit else 1.0
        part, leiden_s, leiden_rss = _stage(
            lambda g=graph: partition_graph(g, method="leiden", resolution=resolution, seed=seed),
            measure_rss)
        rows.append({
            "n_chips": n,
            "dim": int(dim),
            "k": int(k),
            "n_pcs": int(n_pcs),
            "n_clusters": int(n_clusters),
            "knn_search": "exact" if n <= limit else "pynndescent",
            "knn_recall": recall,
            "pynndescent_warmup_seconds": compile_s if n > limit else None,
            "reduce_seconds": reduce_s,
            "knn_seconds": knn_s,
            "graph_seconds": graph_s,
            "leiden_seconds": leiden_s,
            "n_edges": int(graph.nnz // 2),
            "n_communities": int(part.n_communities),
            "modularity": float(part.modularity),
            "ari": adjusted_rand(part.labels, truth),
            "graph_peak_rss_delta_mib": graph_rss,
            "leiden_peak_rss_delta_mib": leiden_rss,
        })
    return rows
