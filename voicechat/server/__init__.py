"""The LAN server: one port for the page, health, metrics and the WebSocket (see docs/protocol.md)."""

from voicechat.server.server import ServerConfig, ServerError, VoiceServer

__all__ = ["ServerConfig", "ServerError", "VoiceServer"]
