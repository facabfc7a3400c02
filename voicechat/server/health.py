"""System figures for ``GET /health/detailed``: CPU, memory, disk, threads, GPU memory.

Calls block (psutil, and ``nvidia-smi`` for up to two seconds on a cache
miss): run them off the event loop. Keep one ``psutil.Process`` and one
``GpuProbe`` for the server's life and pass them in: CPU percentages are
measured between calls on the same Process, and the GPU figures are cached.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

MB = 1024 * 1024
GB = 1024 * MB
NVIDIA_SMI = (
    "nvidia-smi", "--query-gpu=index,name,memory.used,memory.total", "--format=csv,noheader,nounits",
)
# An id part of a thread name: a number, or 4+ hex digits with at least one digit (session ids).
_ID = r"(?:\d+|(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{4,})"
_LEADING_ID = re.compile(rf"^{_ID}[-_](?=.)")
_INNER_ID = re.compile(rf"[-_]{_ID}(?=$|[-_ ])")


class GpuProbe:
    """GPU memory from ``nvidia-smi``, cached for ``ttl_s`` so frequent health checks stay cheap.

    The command and clock are injectable for tests. Any failure gives None (and
    a debug log): health reporting must never break on a driver problem.
    """

    def __init__(
        self, command: Sequence[str] = NVIDIA_SMI, *, ttl_s: float = 5.0, timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._command = list(command)
        self._ttl_s = ttl_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: list[dict[str, object]] | None = None
        self._expires = float("-inf")

    def memory(self) -> list[dict[str, object]] | None:
        """One entry per GPU (index, name, used_mb, total_mb), or None without a GPU or on failure."""
        with self._lock:
            now = self._clock()
            if now >= self._expires:
                self._cached = self._query()
                self._expires = now + self._ttl_s
            return self._cached

    def _query(self) -> list[dict[str, object]] | None:
        executable = shutil.which(self._command[0])
        if executable is None:
            return None
        try:
            done = subprocess.run(
                [executable, *self._command[1:]], capture_output=True, text=True, timeout=self._timeout_s,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            log.debug("GPU query %s failed: %s", self._command[0], exc)
            return None
        if done.returncode != 0:
            log.debug("GPU query exited %d: %s", done.returncode, done.stderr.strip()[:200])
            return None
        try:
            return parse_nvidia_smi(done.stdout)
        except ValueError as exc:
            log.debug("GPU query output not understood: %s", exc)
            return None


def _mb(field: str) -> int | None:
    field = field.strip()
    return None if field.strip("[]").upper() == "N/A" else int(field)


def parse_nvidia_smi(text: str) -> list[dict[str, object]] | None:
    """Parse ``index, name, used, total`` CSV lines (MiB); None when there are none, ValueError when garbled."""
    gpus: list[dict[str, object]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        index, _, rest = line.partition(",")
        fields = rest.rsplit(",", 2)  # a name with commas keeps them
        if len(fields) != 3:
            raise ValueError(f"expected 4 fields: {line!r}")
        gpus.append({
            "index": int(index),
            "name": fields[0].strip(),
            "used_mb": _mb(fields[1]),
            "total_mb": _mb(fields[2]),
        })
    return gpus or None


def gpu_memory(probe: GpuProbe | None = None) -> list[dict[str, object]] | None:
    """GPU memory per GPU, or None without a GPU (an uncached query when no probe is given)."""
    return (probe or GpuProbe()).memory()


def thread_group(name: str) -> str:
    """A thread name without its ids, so per-session threads group by stage.

    Parts separated by "-" or "_" that are numbers, or hex ids of 4+ characters
    containing a digit, are dropped: "capture-1a2b3c4d" -> "capture",
    "tts-pool-3" -> "tts-pool", "ThreadPoolExecutor-0_2" -> "ThreadPoolExecutor",
    "Thread-7 (run)" -> "Thread (run)". A name that is all ids stays as it is.
    """
    stripped = _INNER_ID.sub("", _LEADING_ID.sub("", name))
    return stripped or name


def thread_summary() -> dict[str, object]:
    """Python threads: how many, and how many per group (sorted by group name)."""
    threads = threading.enumerate()
    groups = Counter(thread_group(t.name) for t in threads)
    return {"count": len(threads), "names": dict(sorted(groups.items()))}


def _disk(path: Path) -> dict[str, object] | None:
    """Usage of the file system holding ``path`` (its nearest existing parent, if it is not made yet)."""
    target = Path(path).expanduser().absolute()
    while not target.exists() and target != target.parent:
        target = target.parent
    try:
        usage = psutil.disk_usage(str(target))
    except OSError as exc:
        log.debug("disk usage of %s failed: %s", target, exc)
        return None
    return {
        "path": str(path),
        "total_gb": round(usage.total / GB, 2),
        "free_gb": round(usage.free / GB, 2),
        "percent": usage.percent,
    }


def system_health(
    disk_path: Path, *, gpu_probe: GpuProbe | None = None, process: psutil.Process | None = None
) -> dict[str, object]:
    """CPU, memory, disk, threads and GPU memory of this process and machine, JSON-ready.

    ``cpu_percent`` is this process's CPU since the previous call on the same
    ``process`` (0.0 on the first; over 100 when several cores are busy);
    ``system_cpu_percent`` likewise for the whole machine.
    """
    proc = process or psutil.Process()
    vm = psutil.virtual_memory()
    threads = thread_summary()
    threads["os_count"] = proc.num_threads()  # native threads too (llama.cpp, ONNX, CTranslate2)
    return {
        "cpu_percent": proc.cpu_percent(None),
        "system_cpu_percent": psutil.cpu_percent(None),
        "memory": {
            "rss_mb": round(proc.memory_info().rss / MB, 1),
            "system_total_mb": round(vm.total / MB, 1),
            "system_available_mb": round(vm.available / MB, 1),
            "system_percent": vm.percent,
        },
        "disk": _disk(disk_path),
        "threads": threads,
        "gpu": gpu_memory(gpu_probe),
    }
