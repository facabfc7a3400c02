"""Health figures: system snapshot shape, thread grouping, GPU probe parsing, caching and failures."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import psutil
import pytest

from voicechat.server.health import GpuProbe, gpu_memory, parse_nvidia_smi, system_health, thread_group

H100_CSV = "0, NVIDIA H100 80GB HBM3, 1234, 81559\n1, NVIDIA A100-SXM4-40GB, 0, 40960\n"


def python_command(code: str) -> list[str]:
    """A stand-in for nvidia-smi: this Python running ``code``."""
    return [sys.executable, "-c", code]


def printing(text: str) -> list[str]:
    return python_command(f"import sys; sys.stdout.write({text!r})")


def test_system_health_keys_and_types(tmp_path: Path) -> None:
    process = psutil.Process()
    report = system_health(tmp_path, gpu_probe=GpuProbe(printing(H100_CSV)), process=process)
    json.dumps(report)  # served as JSON as is
    assert isinstance(report["cpu_percent"], float) and report["cpu_percent"] >= 0
    assert isinstance(report["system_cpu_percent"], float) and 0 <= report["system_cpu_percent"] <= 100
    memory = report["memory"]
    assert 0 < memory["rss_mb"] < memory["system_total_mb"]
    assert 0 < memory["system_available_mb"] <= memory["system_total_mb"]
    assert 0 <= memory["system_percent"] <= 100
    disk = report["disk"]
    assert disk["path"] == str(tmp_path)
    assert 0 <= disk["free_gb"] <= disk["total_gb"] and 0 <= disk["percent"] <= 100
    threads = report["threads"]
    assert threads["count"] == threading.active_count()
    assert sum(threads["names"].values()) == threads["count"]
    assert list(threads["names"]) == sorted(threads["names"])
    assert threads["os_count"] >= threads["count"]
    assert report["gpu"] == parse_nvidia_smi(H100_CSV)


def test_cpu_percent_is_measured_between_calls_on_the_same_process(tmp_path: Path) -> None:
    process = psutil.Process()
    probe = GpuProbe(["voicechat-no-such-command"])
    system_health(tmp_path, gpu_probe=probe, process=process)
    sum(i * i for i in range(300_000))  # some CPU work between the two readings
    assert system_health(tmp_path, gpu_probe=probe, process=process)["cpu_percent"] > 0


def test_disk_of_a_directory_not_made_yet_uses_its_parent(tmp_path: Path) -> None:
    report = system_health(tmp_path / "not" / "yet", gpu_probe=GpuProbe(["voicechat-no-such-command"]))
    assert report["disk"]["path"] == str(tmp_path / "not" / "yet")
    assert report["disk"]["total_gb"] > 0


def test_threads_of_many_sessions_group_by_stage() -> None:
    release = threading.Event()
    names = [f"{stage}-{sid}" for sid in ("1a2b3c4d", "9f8e7d6c", "00c0ffee") for stage in ("capture", "tts")]
    threads = [threading.Thread(target=release.wait, args=(10,), name=n, daemon=True) for n in names]
    for t in threads:
        t.start()
    try:
        groups = system_health(Path("."), gpu_probe=GpuProbe(["voicechat-no-such-command"]))["threads"]["names"]
        assert groups["capture"] == 3 and groups["tts"] == 3
        assert groups["MainThread"] == 1
    finally:
        release.set()
        for t in threads:
            t.join(timeout=10)


@pytest.mark.parametrize(
    ("name", "group"),
    [
        ("capture-1a2b3c4d", "capture"),
        ("tts-pool-3", "tts-pool"),
        ("stt-scheduler-0", "stt-scheduler"),
        ("llm-scheduler", "llm-scheduler"),
        ("ThreadPoolExecutor-0_2", "ThreadPoolExecutor"),
        ("asyncio_0", "asyncio"),
        ("Thread-7 (run)", "Thread (run)"),
        ("1a2b3c4d-capture", "capture"),
        ("s-ab12-capture", "s-capture"),
        ("session-reaper", "session-reaper"),
        ("MainThread", "MainThread"),
        ("12345", "12345"),
        ("dead-beef", "dead-beef"),  # hex-looking words without digits are words
    ],
)
def test_thread_group(name: str, group: str) -> None:
    assert thread_group(name) == group


def test_parse_nvidia_smi() -> None:
    assert parse_nvidia_smi(H100_CSV) == [
        {"index": 0, "name": "NVIDIA H100 80GB HBM3", "used_mb": 1234, "total_mb": 81559},
        {"index": 1, "name": "NVIDIA A100-SXM4-40GB", "used_mb": 0, "total_mb": 40960},
    ]
    assert parse_nvidia_smi("0, Odd, Name, 5, [N/A]\n") == [
        {"index": 0, "name": "Odd, Name", "used_mb": 5, "total_mb": None}
    ]
    assert parse_nvidia_smi("\n") is None
    with pytest.raises(ValueError):
        parse_nvidia_smi("No devices were found")
    with pytest.raises(ValueError):
        parse_nvidia_smi("x, name, 1, 2")


def test_probe_runs_the_command_and_parses_it() -> None:
    assert GpuProbe(printing(H100_CSV)).memory() == parse_nvidia_smi(H100_CSV)


@pytest.mark.parametrize(
    ("command", "logs"),
    [
        (["voicechat-no-such-command", "--query-gpu=index"], 0),  # no nvidia-smi: no GPU, nothing to say
        (python_command("import sys; sys.stderr.write('NVIDIA-SMI has failed'); sys.exit(9)"), 1),
        (python_command("print('garbled output')"), 1),
        (python_command(""), 0),  # nvidia-smi present, no GPU listed
        (python_command("import time; time.sleep(30)"), 1),
    ],
    ids=["missing", "exit-code", "garbled", "empty", "timeout"],
)
def test_probe_failures_give_none(command: list[str], logs: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="voicechat.server.health")
    assert GpuProbe(command, timeout_s=0.5).memory() is None
    records = [r for r in caplog.records if r.name == "voicechat.server.health"]
    assert len(records) == logs and all(r.levelname == "DEBUG" for r in records)


def test_probe_caches_for_its_ttl(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    command = python_command(
        f"open({str(runs)!r}, 'a').write('x'); print('0, GPU, ' + str(len(open({str(runs)!r}).read())) + ', 100')"
    )
    now = [100.0]
    probe = GpuProbe(command, ttl_s=5.0, clock=lambda: now[0])
    first = probe.memory()
    assert first is not None and first[0]["used_mb"] == 1
    now[0] = 104.9
    assert probe.memory() == first
    assert runs.read_text() == "x"
    now[0] = 105.0
    assert probe.memory()[0]["used_mb"] == 2
    assert runs.read_text() == "xx"


def test_gpu_memory_with_a_probe_and_without() -> None:
    assert gpu_memory(GpuProbe(printing(H100_CSV))) == parse_nvidia_smi(H100_CSV)
    result = gpu_memory()  # the real nvidia-smi, where there is one
    assert result is None or all({"index", "name", "used_mb", "total_mb"} <= set(gpu) for gpu in result)
