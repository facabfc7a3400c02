"""`bench load --plot`: the latency distribution and the capacity curve as one PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

OVERHEAD_TARGET_MS = 40.0
CAPACITY_BOUND_MS = 80.0


def plot(result: dict[str, Any], path: Path) -> None:
    """Left: CDFs of v2v, overhead and barge-in for the headline run. Right: overhead p95 and drops vs sessions."""
    import matplotlib

    matplotlib.use("Agg")  # no display; a file only
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    delays = float(result.get("delays_ms", 0.0))
    series = {
        "voice to voice": result.get("v2v_samples_ms", []),
        "overhead": [ms - delays for ms in result.get("v2v_samples_ms", [])],
        "barge-in": result.get("barge_in_samples_ms", []),
    }
    for label, values in series.items():
        if values:
            ordered = sorted(values)
            left.step(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], where="post",
                      label=f"{label} (n={len(ordered)})")
    left.axvline(OVERHEAD_TARGET_MS, color="grey", linestyle=":", linewidth=1)
    left.set_xscale("symlog", linthresh=100)
    left.set_xlabel("ms")
    left.set_ylabel("fraction of turns")
    left.set_title(f"{result['sessions']} sessions, {result['engines']} engines: latency distribution")
    left.legend(loc="lower right")
    left.grid(alpha=0.3)

    runs = sorted(result.get("sweep") or [result], key=lambda r: r["sessions"])
    sessions = [r["sessions"] for r in runs]
    right.plot(sessions, [r["overhead_ms"]["p95"] for r in runs], marker="o", label="overhead p95 (ms)")
    right.plot(sessions, [r["overhead_ms"]["p50"] for r in runs], marker=".", linestyle="--", label="overhead p50 (ms)")
    if all(r.get("server_path_ms", {}).get("p95") is not None for r in runs):
        right.plot(sessions, [r["server_path_ms"]["p95"] for r in runs], marker="s", linestyle=":",
                   label="server end of speech -> audio received, p95 (ms)")
    right.set_yscale("symlog", linthresh=10)
    right.axhline(CAPACITY_BOUND_MS, color="red", linestyle=":", linewidth=1, label=f"{CAPACITY_BOUND_MS:.0f} ms bound")
    right.set_xlabel("concurrent sessions")
    right.set_ylabel("ms")
    drops = right.twinx()
    drops.bar(sessions, [r["dropped_frames"] for r in runs], width=max(1.0, min(sessions) * 0.3), alpha=0.25,
              color="tab:red", label="dropped frames")
    drops.set_ylabel("dropped frames")
    drops.set_ylim(0, max(1, *(r["dropped_frames"] for r in runs)) * 1.1)  # no negative counts when none dropped
    title = "capacity curve"
    if result.get("capacity") is not None:
        title += f" (capacity {result['capacity']} sessions)"
    right.set_title(title)
    lines, labels = right.get_legend_handles_labels()
    bars, bar_labels = drops.get_legend_handles_labels()
    right.legend(lines + bars, labels + bar_labels, loc="upper left")
    right.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
