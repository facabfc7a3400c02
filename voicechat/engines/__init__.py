"""Engine interfaces and adapters (scripted, RealtimeSTT, faster-whisper, llama.cpp, TTS)."""
