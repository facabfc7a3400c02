"""Language models: llama.cpp in process (one context, continuous batching), a remote
OpenAI-compatible endpoint, and the pure policy beside them (see README.md).
"""
