"""Speech to text: the shared Whisper model and its scheduler, the per-session
recognizer over RealtimeSTT, and the pure policy beside them (see README.md).
"""
