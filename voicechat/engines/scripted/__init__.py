"""Scripted engines: deterministic doubles with controlled delays and injected faults,
for pipeline, concurrency and latency-overhead tests (never a stand-in for the real adapters' tests).
"""
