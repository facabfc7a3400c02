"""Text to speech: engine adapters (espeak-ng, Piper, Kokoro), the shared pool and its
pure job order (see README.md).
"""
