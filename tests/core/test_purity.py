"""The pure modules stay pure: no threads, sockets, event loops, subprocesses or engine libraries.

Pure logic (turn state, endpointing, sentence splitting, protocol parsing,
scheduling policy) is tested on plain values; that only holds while these
modules cannot reach a thread or an engine. Imports are read from the source
(function-level ones included) and followed through the project's own modules,
so a pure module cannot reach a forbidden one through a helper either.
"""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
from pathlib import Path

import pytest

import voicechat.core

FORBIDDEN = frozenset({
    "threading", "_thread", "socket", "asyncio", "subprocess", "multiprocessing", "concurrent", "selectors",
    # engine and I/O libraries
    "RealtimeSTT", "RealtimeTTS", "faster_whisper", "ctranslate2", "llama_cpp", "onnxruntime", "piper",
    "kokoro", "torch", "sounddevice", "websockets", "httpx", "huggingface_hub",
})

# Pure modules outside the core, beside the threads that use them (each package's README marks them).
PURE_ELSEWHERE = (
    "voicechat.stt.scheduling", "voicechat.stt.endpointing", "voicechat.stt.utterance_buffer",
    "voicechat.stt.partial_stabilizer", "voicechat.llm.batching", "voicechat.llm.text",
    "voicechat.llm.chat_template", "voicechat.tts.priority", "voicechat.engines.stall_watch",
    "voicechat.server.protocol", "voicechat.server.rate_limit", "voicechat.local.tui.model",
    "voicechat.stt.listening", "voicechat.stt.whisper_window", "voicechat.tts.pacing", "voicechat.bench.accuracy",
    "voicechat.stt.transcript_end", "voicechat.stt.turn_end", "voicechat.bench.turn_scoring",
    "voicechat.local.room", "voicechat.local.echo_delay", "voicechat.bench.echo_scenes",
)
CORE = tuple(m.name for m in pkgutil.iter_modules(voicechat.core.__path__, "voicechat.core."))


def imported_names(source: str, package: str) -> set[str]:
    """Absolute names of every module the source imports (relative imports resolved against ``package``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            relative = "." * node.level + (node.module or "")
            base = importlib.util.resolve_name(relative, package) if node.level else node.module
            assert base is not None
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return names


def forbidden_imports(module: str, source_of=None) -> list[str]:
    """Chains ``module -> ... -> forbidden`` reachable through the project's own modules."""
    def read(name: str) -> str | None:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, AttributeError, ValueError):  # ``from module import Name``: not a module
            return None
        if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            return None
        return Path(spec.origin).read_text()

    source_of = source_of or read
    found: list[str] = []
    seen: set[str] = set()
    stack = [(module, [module])]
    while stack:
        name, chain = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        source = source_of(name)
        if source is None:
            continue
        for imported in sorted(imported_names(source, name.rpartition(".")[0])):
            root = imported.split(".")[0]
            if root in FORBIDDEN:
                found.append(" -> ".join([*chain, imported]))
            elif root == "voicechat" and imported != "voicechat":
                stack.append((imported, [*chain, imported]))
    return found


def test_the_core_has_modules():
    assert {"voicechat.core.turn_state", "voicechat.core.history", "voicechat.core.events"} <= set(CORE)


@pytest.mark.parametrize("module", CORE + PURE_ELSEWHERE)
def test_pure_module_imports_nothing_forbidden(module):
    assert forbidden_imports(module) == []


@pytest.mark.parametrize("line", ["import threading", "from asyncio import Event", "import llama_cpp as l",
                                  "def f():\n    import subprocess", "from concurrent.futures import Future"])
def test_the_check_catches_a_forbidden_import(line):
    sources = {"voicechat.fake_pure": "from voicechat.fake_helper import x\n", "voicechat.fake_helper": line}
    chains = forbidden_imports("voicechat.fake_pure", sources.get)
    assert chains and chains[0].startswith("voicechat.fake_pure -> voicechat.fake_helper -> ")
