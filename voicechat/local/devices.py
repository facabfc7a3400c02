"""The sound devices PortAudio knows: listing them, and resolving a user's choice to one (sounddevice).

Kept apart from the audio endpoints (``audio_io``) so `run.py devices` and the
start-up checks need no stream; every failure is an ``AudioDeviceError`` whose
message says what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

LIST_HINT = "run `python run.py devices` to list the sound devices"


class AudioDeviceError(Exception):
    """A sound device is missing or refused to open; the message says which and what to do."""


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    max_input_channels: int
    max_output_channels: int
    default_samplerate: float
    is_default_input: bool
    is_default_output: bool


def load_sounddevice(sd_module: Any = None) -> Any:
    if sd_module is not None:
        return sd_module
    try:
        import sounddevice
    except (OSError, ImportError) as e:  # OSError: the PortAudio library itself is missing
        raise AudioDeviceError(f"sound is unavailable: PortAudio could not be loaded ({e})") from e
    return sounddevice


def _as_index(value: Any) -> int:
    """sounddevice's default device: an index, -1/None for none (a name set by the user counts as none here)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def list_devices(sd_module: Any = None) -> list[DeviceInfo]:
    """Every device PortAudio knows; AudioDeviceError if PortAudio cannot be used at all."""
    sd = load_sounddevice(sd_module)
    try:
        raw = list(sd.query_devices())
        default_in, default_out = (_as_index(sd.default.device[i]) for i in (0, 1))
    except Exception as e:  # sd.PortAudioError, or anything a broken host API throws
        raise AudioDeviceError(f"could not query the sound devices: {e}") from e
    return [
        DeviceInfo(
            index=int(d.get("index", i)), name=str(d["name"]),
            max_input_channels=int(d["max_input_channels"]), max_output_channels=int(d["max_output_channels"]),
            default_samplerate=float(d["default_samplerate"]),
            is_default_input=int(d.get("index", i)) == default_in,
            is_default_output=int(d.get("index", i)) == default_out,
        )
        for i, d in enumerate(raw)
    ]


def format_devices(devices: list[DeviceInfo]) -> str:
    """A table for `python run.py devices`; '>' marks the default input, '<' the default output."""
    if not devices:
        return "No sound devices found (a headless machine? WAV files can stand in for the microphone and speaker)."
    lines = [f"{'':2} {'#':>3}  {'name':<40} {'in':>3} {'out':>3} {'rate':>7}"]
    for d in devices:
        mark = (">" if d.is_default_input else " ") + ("<" if d.is_default_output else " ")
        lines.append(f"{mark} {d.index:>3}  {d.name[:40]:<40} {d.max_input_channels:>3} "
                     f"{d.max_output_channels:>3} {d.default_samplerate:>7.0f}")
    lines.append("> default input   < default output")
    return "\n".join(lines)


def device_channels(d: DeviceInfo, kind: str) -> int:
    return d.max_input_channels if kind == "input" else d.max_output_channels


def find_device(spec: str, kind: Literal["input", "output"], sd_module: Any = None) -> int | None:
    """Resolve a user's device choice: "" = the default (None if there is none), an index, or part of a name."""
    devices = list_devices(sd_module)
    candidates = [d for d in devices if device_channels(d, kind) > 0]
    spec = spec.strip()
    if not spec:
        default = next((d for d in candidates if (d.is_default_input if kind == "input" else d.is_default_output)),
                       None)
        return default.index if default is not None else None
    listing = ", ".join(f"{d.index}: {d.name}" for d in candidates) or "none"
    if spec.isdigit():
        match = next((d for d in devices if d.index == int(spec)), None)
        if match is None or device_channels(match, kind) == 0:
            raise AudioDeviceError(f"{kind} device {spec} does not exist or has no {kind} channels "
                                   f"({kind} devices: {listing}); {LIST_HINT}")
        return match.index
    matches = [d for d in candidates if spec.lower() in d.name.lower()]
    if not matches:
        raise AudioDeviceError(f"no {kind} device matches {spec!r} ({kind} devices: {listing}); {LIST_HINT}")
    return matches[0].index


def has_input_device(sd_module: Any = None) -> bool:
    """Whether a microphone can be used at all (False headless, or when PortAudio fails)."""
    try:
        return any(d.max_input_channels > 0 for d in list_devices(sd_module))
    except AudioDeviceError:
        return False
