"""A session's stage workers: one daemon thread each, queue in, events out."""
