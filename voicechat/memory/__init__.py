"""Process memory: pressure levels (``monitor``), glibc arenas and garbage-collector pauses."""
