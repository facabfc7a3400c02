"""What of the registry is on disk: states for `models list`, sha256 checks for `models verify`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from voicechat.models import checks as checks
from voicechat.models import registry as registry
from voicechat.models import store as store
from voicechat.models.registry import ModelSpec


def spec_state(spec: ModelSpec, root: Path, manifest: store.Manifest) -> str:
    """present / missing / incomplete / corrupt, from existence, recorded sizes and headers."""
    paths = [(store.models_dir(root) / f.local_path, f.local_path) for f in spec.files]
    present = [(p, rel) for p, rel in paths if p.is_file()]
    if not present:
        return "missing"
    for path, rel in present:
        reason = checks.readable_reason(path) or checks.size_reason(path, manifest.expected_size(rel))
        if reason is None and path.suffix == ".gguf":
            reason = checks.gguf_reason(path)
        if reason:
            return "corrupt"
    return "present" if len(present) == len(paths) else "incomplete"


@dataclass(frozen=True)
class VerifyResult:
    ok: list[str]
    problems: list[str]
    notes: list[str]


def verify(specs: Iterable[ModelSpec], root: Path = store.PROJECT_ROOT) -> VerifyResult:
    """Recompute sha256 of each spec's files and compare with the registry's pin (PyPI files) or
    else the manifest; each line names the model and its source."""
    manifest = store.Manifest(store.models_dir(root))
    ok: list[str] = []
    problems: list[str] = []
    notes: list[str] = []
    for spec in specs:
        about = f"{spec.name}, {spec.source_label()}"
        for f in spec.files:
            path = store.models_dir(root) / f.local_path
            shown = store.shown_path(path, root)
            entry = manifest.get(f.local_path)
            expected, by = (f.sha256, "the registry's") if f.sha256 else (entry and entry["sha256"], "the recorded")
            if f.convert is not None:  # made here from the pinned file: compare with what was recorded then
                made_from_pinned = entry is not None and entry.get("source_sha256") == f.sha256
                expected, by = (entry["sha256"], "the recorded") if made_from_pinned and entry else (None, "")
            if not path.is_file():
                problems.append(f"MISSING {shown} ({about}): {store.download_fix(spec)}")
            elif f.convert is not None and expected is None:
                problems.append(f"UNVERIFIED {shown} ({about}): not recorded as converted from the pinned file; "
                                f"make it again with: {store.DOWNLOAD_COMMAND} --force {spec.name}")
            elif expected is None:
                notes.append(f"UNRECORDED {shown} ({about}): no checksum recorded; "
                             f"{store.DOWNLOAD_COMMAND} {spec.name} records one")
            else:
                actual = store.sha256_file(path)
                if actual != expected:
                    problems.append(f"CORRUPT {shown} ({about}): sha256 {actual[:16]}… differs from {by} "
                                    f"{str(expected)[:16]}…; re-download with: "
                                    f"{store.DOWNLOAD_COMMAND} --force {spec.name}")
                else:
                    ok.append(f"OK {shown} ({about})")
    return VerifyResult(ok, problems, notes)


def recorded_specs(root: Path = store.PROJECT_ROOT) -> list[ModelSpec]:
    """Registry entries with at least one file recorded in the manifest or present on disk."""
    manifest = store.Manifest(store.models_dir(root))
    names = {str(e.get("model")) for e in manifest.entries.values()}
    out = [spec for spec in registry.RECOMMENDED
           if spec.name in names or any((store.models_dir(root) / f.local_path).exists() for f in spec.files)]
    for name in sorted(names - {s.name for s in out}):
        spec = registry.lookup(name)
        if spec is not None:
            out.append(spec)
    return out
