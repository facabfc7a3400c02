"""What one `bench load` run is: the clients' plan, the server settings it implies, and the variants
a run alternates (front ends, process counts, values of one compared setting)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from voicechat.bench.load_stats import Delays


@dataclass(frozen=True)
class LoadPlan:
    """The clients' behaviour and the server's settings for one variant of a run."""

    engines: str = "scripted"
    seconds: float = 20.0  # each client starts new turns until this much time has passed...
    min_turns: int = 3  # ...but speaks at least this many
    barge_every: int = 2  # every second reply is interrupted
    stt_delay_s: float = 0.0
    llm_delay_s: float = 0.0
    tts_delay_s: float = 0.0
    silence_s: float = 0.6  # vad.post_speech_silence_s
    extra: tuple[str, ...] = ()  # more KEY=VALUE settings for the server
    shards: int = 1  # server processes the sessions are spread over (``load_server.ServerGroup``)
    frontend: str = "batched"  # vad.frontend

    def server_settings(self, max_sessions: int) -> dict[str, str]:
        settings = {
            "sessions.max_sessions": str(max_sessions), "sessions.resume_grace_s": "0",
            # Every simulated browser comes from 127.0.0.1: the per-address cap is for the LAN.
            "server.max_connections_per_address": str(max_sessions + 8),
            "vad.post_speech_silence_s": str(self.silence_s),
            "vad.frontend": self.frontend,
        }
        if self.engines == "scripted":
            settings |= {
                "stt.scripted_delay_s": str(self.stt_delay_s), "llm.scripted_first_token_s": str(self.llm_delay_s),
                "tts.scripted_first_chunk_s": str(self.tts_delay_s),
            }
        elif self.engines == "starter":
            settings["models.set"] = "starter"
        else:
            from voicechat.selftest import tiny_overrides

            settings |= tiny_overrides()
        for item in self.extra:
            key, _, value = item.partition("=")
            settings[key] = value
        return settings

    @property
    def delays(self) -> Delays:
        return Delays(self.end_of_turn_silence_s, self.stt_delay_s, self.llm_delay_s, self.tts_delay_s)

    @property
    def onset_rules(self) -> tuple[float, float, bool]:
        """The batched front end's onset probability, quiet gate (dBFS) and whether it probes between chunks,
        under these settings."""
        return 1.0 - self._vad("silero_sensitivity"), self._vad("quiet_dbfs"), self._vad("probe_onsets")

    @property
    def end_of_turn_silence_s(self) -> float:
        """The least silence the server's end-of-turn rule waits: ``vad.min_silence_s`` where the batched
        front end ends turns on the signals (``vad.end_of_turn = smart``), else the fixed silence."""
        if self.frontend == "batched" and self._vad("end_of_turn") == "smart":
            return self._vad("min_silence_s")
        return self._vad("post_speech_silence_s")

    def _vad(self, name: str) -> Any:
        """The server's ``vad.<name>``: as these settings give it (read as the schema reads it), else the
        schema's default."""
        from pydantic import TypeAdapter

        from voicechat.config.stages import VadSettings

        field = VadSettings.model_fields[name]
        raw = self.server_settings(1).get(f"vad.{name}")
        return field.default if raw is None else TypeAdapter(field.annotation).validate_python(raw)


def plan_variants(plan: LoadPlan, frontends: list[str], compare: tuple[str, list[str]] | None,
                  shards: list[int] | None = None) -> dict[str, LoadPlan]:
    """Label -> plan, for every front end times every process count times every value of the compared
    setting."""
    variants = {fe: replace(plan, frontend=fe) for fe in frontends}
    if shards and len(shards) > 1:
        variants = {f"{label} {k} proc": replace(v, shards=k) for label, v in variants.items() for k in shards}
    elif shards:
        variants = {label: replace(v, shards=shards[0]) for label, v in variants.items()}
    if compare is None:
        return variants
    key, values = compare
    return {
        (f"{label} {key}={value}" if len(variants) > 1 else f"{key}={value}"):
            replace(variant, extra=(*variant.extra, f"{key}={value}"))
        for label, variant in variants.items() for value in values
    }
