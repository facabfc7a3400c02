"""The models served by their own servers, as a GPU box would run them: real engine servers, started here.

Each ``EngineServer`` is one child process (owned, stopped and reaped) on a
loopback port, with the settings that point a voicechat replica at it:

- LLM: ``llama_cpp.server`` (OpenAI chat completions) -> ``llm.backend = "openai"``;
- STT: ``faster-whisper-server`` (OpenAI audio API) or ``wyoming-faster-whisper`` (Wyoming)
  -> ``stt.engine = "openai" | "wyoming"``;
- TTS: ``local-tts-studio`` (OpenAI audio API) or ``wyoming-piper`` (Wyoming)
  -> ``tts.engine = "openai" | "wyoming"``.

They serve the starter set's files (``starter_files``: SmolLM2, Whisper tiny.en, Piper joe, found
where ``python3 run.py`` with ``models.set = "starter"`` finds them) offline,
so ``run.py layout --remote-engines``, ``bench load --remote`` and the tests run the same
servers a user would. On a real GPU server, start them by hand: docs/deploy.md.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from voicechat.deploy.processes import ChildProcess, free_port, wait_for_port
from voicechat.models.store import PROJECT_ROOT

Kind = Literal["openai", "wyoming"]
READY_S = 120.0  # loading a model on 2 busy cores


@dataclass(frozen=True)
class StarterFiles:
    llm: Path  # the GGUF file
    whisper: Path  # the CTranslate2 directory
    voice_dir: Path  # the Piper voice's directory
    voice: str  # the Piper voice's name


def starter_files(root: Path = PROJECT_ROOT) -> StarterFiles:
    """The starter set's files, resolved as ``run.py`` resolves them (MissingModelError names what to fetch)."""
    from voicechat.config.loading import load_config
    from voicechat.models.store import resolve_llm_model, resolve_piper_voice, resolve_stt_model

    settings = load_config(root / "config.toml", env={}, overrides={"models.set": "starter"}).settings
    voice_onnx, _config = resolve_piper_voice(settings, root)
    return StarterFiles(Path(resolve_llm_model(settings, root)), Path(resolve_stt_model(settings, root)),
                        Path(voice_onnx).parent, settings.tts.voice)


@dataclass
class EngineServer:
    """A started-or-not engine server; ``settings`` point a replica at it (``--set`` form)."""

    name: str  # its stage: "llm", "stt", "tts"
    process: ChildProcess
    port: int
    settings: dict[str, str] = field(default_factory=dict)
    kind: str = "openai"  # the protocol it speaks: "openai" or "wyoming"

    @property
    def endpoint(self) -> str:
        """Where it listens, as ``<stage>.endpoint`` takes it."""
        return self.settings[f"{self.name}.endpoint"]

    def start(self, timeout_s: float = READY_S) -> EngineServer:
        """Start (or start again on the same port) and wait until it accepts connections."""
        self.process.start()
        wait_for_port("127.0.0.1", self.port, timeout_s, alive=self.process)
        return self

    def kill(self) -> None:
        """SIGKILL: its clients' calls break mid-reply, as when the GPU box crashes."""
        self.process.kill()

    def stop(self) -> None:
        self.process.stop()


def _python(name: str, module: str, args: Sequence[str], env: dict[str, str] | None = None) -> ChildProcess:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    return ChildProcess(name, [sys.executable, "-m", module, *args], env=environment, merge_stderr=True)


def llm_server(model: Path | None = None, threads: int = 2, n_ctx: int = 4096) -> EngineServer:
    model = model or starter_files().llm
    port = free_port()
    process = _python("llm-server", "llama_cpp.server", [
        "--model", str(model), "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx),
        "--n_threads", str(threads), "--interrupt_requests", "False",
    ])
    return EngineServer("llm", process, port, {
        "llm.backend": "openai", "llm.endpoint": f"http://127.0.0.1:{port}/v1", "llm.model": model.stem,
    })


def stt_server(kind: Kind, work_dir: Path, model_dir: Path | None = None, threads: int = 2) -> EngineServer:
    model_dir = model_dir or starter_files().whisper
    port = free_port()
    work_dir.mkdir(parents=True, exist_ok=True)
    if kind == "openai":  # faster-whisper-server 0.0.3: a local model directory as its one model
        process = _python("stt-server", "faster_whisper_server", [
            str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
        ])
        endpoint = f"http://127.0.0.1:{port}"
    else:  # wyoming-faster-whisper 3.8: the same directory, never a download
        process = _python("stt-server", "wyoming_faster_whisper", [
            "--uri", f"tcp://127.0.0.1:{port}", "--model", str(model_dir), "--data-dir", str(work_dir),
            "--stt-library", "faster-whisper", "--local-files-only", "--language", "en",
            "--cpu-threads", str(threads),
        ])
        endpoint = f"tcp://127.0.0.1:{port}"
    return EngineServer("stt", process, port, {"stt.engine": kind, "stt.endpoint": endpoint}, kind)


def tts_server(kind: Kind, work_dir: Path, voice_dir: Path | None = None, voice: str = "") -> EngineServer:
    if voice_dir is None or not voice:
        starter = starter_files()
        voice_dir, voice = voice_dir or starter.voice_dir, voice or starter.voice
    port = free_port()
    work_dir.mkdir(parents=True, exist_ok=True)
    if kind == "openai":  # local-tts-studio 1.0: its settings name the voice folder and the default voice
        data = work_dir / "local-tts"
        data.mkdir(parents=True, exist_ok=True)
        (data / "settings.json").write_text(json.dumps({"voices_dir": str(voice_dir), "api_default_voice": voice,
                                                        "device": "cpu"}))
        process = _python("tts-server", "local_tts.cli", ["--host", "127.0.0.1", "--port", str(port)],
                          env={"LOCAL_TTS_DATA_DIR": str(data)})
        endpoint = f"http://127.0.0.1:{port}"
    else:  # wyoming-piper 2.5: --data-dir holds the voice files, so nothing is downloaded
        process = _python("tts-server", "wyoming_piper", [
            "--uri", f"tcp://127.0.0.1:{port}", "--voice", voice, "--data-dir", str(voice_dir),
            "--download-dir", str(work_dir),
        ])
        endpoint = f"tcp://127.0.0.1:{port}"
    return EngineServer("tts", process, port, {"tts.engine": kind, "tts.endpoint": endpoint}, kind)


@contextmanager
def engine_servers(work_dir: Path, stt: Kind = "openai", tts: Kind = "wyoming",
                   llm: bool = True) -> Iterator[dict[str, EngineServer]]:
    """Start the LLM, STT and TTS servers (``work_dir`` for their files); stop them all on exit."""
    with ExitStack() as stack:
        servers: dict[str, EngineServer] = {}
        makers = [("llm", lambda: llm_server())] if llm else []
        makers += [("stt", lambda: stt_server(stt, work_dir / "stt")), ("tts", lambda: tts_server(tts, work_dir))]
        for name, make in makers:
            server = make()
            stack.callback(server.stop)
            servers[name] = server.start()
        yield servers


def settings_of(servers: dict[str, EngineServer]) -> dict[str, str]:
    """Every server's replica settings, merged."""
    merged: dict[str, str] = {}
    for server in servers.values():
        merged.update(server.settings)
    return merged
