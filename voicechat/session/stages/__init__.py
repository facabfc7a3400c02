"""A session's stages: capture (in the receiving thread) and one daemon thread each for STT, LLM and TTS."""
