"""The LAN server: one port for the page, health, metrics and the WebSocket; its wire
protocol (``protocol``, pure) and a protocol client (``client``). See docs/protocol.md.
"""
