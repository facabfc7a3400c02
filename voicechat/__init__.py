"""voicechat: a local, multi-user voice assistant."""

__version__ = "0.1.0"
