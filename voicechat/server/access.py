"""Who may connect: the access token, the browser Origin check, the join URL and its QR code.

The token is a shared secret handed out in the join URL's fragment (browsers
never send fragments to servers or in ``Referer``). Pure functions apart from
the token file and the data directory lookup.
"""

from __future__ import annotations

import hmac
import io
import logging
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import segno

log = logging.getLogger(__name__)

TOKEN_FILE = "token"
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
ALL_INTERFACES = ("0.0.0.0", "::", "")


def default_data_dir(configured: str) -> Path:
    """``server.data_dir`` when set, else ``$XDG_DATA_HOME/voicechat``, else ``~/.local/share/voicechat``."""
    if configured.strip():
        return Path(configured.strip()).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME", "").strip()
    if xdg and Path(xdg).is_absolute():  # the XDG spec says relative values are to be ignored
        return Path(xdg) / "voicechat"
    return Path.home() / ".local" / "share" / "voicechat"


def load_or_create_token(data_dir: Path, configured: str) -> str:
    """The configured token, else the one saved in ``data_dir/token``, else a new one saved there (0600).

    Saving it keeps join URLs and bookmarks valid across restarts.
    """
    if configured.strip():
        return configured.strip()
    path = Path(data_dir) / TOKEN_FILE
    if path.exists():
        token = path.read_text(encoding="utf-8").strip()
        if token:
            if path.stat().st_mode & 0o077:
                log.warning("%s can be read by other users; chmod 600 it", path)
            return token
    token = secrets.token_urlsafe(18)
    if not Path(data_dir).exists():
        Path(data_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{TOKEN_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(token + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.info("created a new access token in %s", path)
    return token


def token_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison, so timing does not reveal how much of a guess was right."""
    if given is None or not expected:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))


def _host_port(host: str | None, port: int | None, scheme: str) -> tuple[str, int] | None:
    if not host:
        return None
    return host.lower().rstrip("."), port if port is not None else DEFAULT_PORTS[scheme]


def origin_allowed(origin: str | None, host_header: str | None, allowed: Sequence[str]) -> bool:
    """The browser Origin check of the WebSocket upgrade (cross-site WebSocket hijacking).

    No Origin (not a browser) passes. Otherwise the origin must be the server's
    own (same host and port as the Host header; default ports 80/443 filled in
    from the origin's scheme) or equal one of ``allowed`` (trailing "/" and
    letter case ignored). "null" and anything unparsable are refused.
    """
    if origin is None:
        return True
    try:
        origin = origin.strip()
        if not origin or origin.lower() == "null":
            return False
        wanted = origin.rstrip("/").lower()
        if any(wanted == a.strip().rstrip("/").lower() for a in allowed if a.strip()):
            return True
        parts = urlsplit(origin)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or parts.path not in ("", "/") or parts.query or parts.fragment:
            return False
        if parts.username is not None or parts.password is not None or not host_header:
            return False
        ours = urlsplit("//" + host_header.strip())
        if ours.path or ours.query or ours.fragment or ours.username is not None:
            return False
        theirs = _host_port(parts.hostname, parts.port, scheme)
        return theirs is not None and theirs == _host_port(ours.hostname, ours.port, scheme)
    except (ValueError, TypeError, AttributeError):
        return False


def request_token(path: str, authorization: str | None) -> str | None:
    """The token of an HTTP request: ``Authorization: Bearer X`` first, else ``?token=X`` in the target."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    try:
        values = parse_qs(urlsplit(path).query).get("token")
    except ValueError:
        return None
    return values[0] if values and values[0] else None


def _url_host(host: str) -> str:
    host = host.strip()
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def join_urls(scheme: str, host: str, port: int, token: str, addresses: Sequence[str]) -> list[str]:
    """The URLs to open in a browser, the token in the fragment.

    Listening on all interfaces gives one URL per LAN address ("0.0.0.0" is
    IPv4 only, so IPv6 addresses are left out for it), or "localhost" when
    there is none. The token is percent-encoded (a no-op for generated tokens).
    """
    if host.strip() in ALL_INTERFACES:
        hosts = [a for a in addresses if host.strip() != "0.0.0.0" or ":" not in a] or ["localhost"]
    else:
        hosts = [host]
    fragment = quote(token, safe="-_.~")
    return [f"{scheme}://{_url_host(h)}:{port}/#token={fragment}" for h in hosts]


def qr_text(url: str) -> str:
    """The URL as a QR code drawn with half-block characters, two modules per text line, for a terminal."""
    out = io.StringIO()
    segno.make_qr(url).terminal(out=out, compact=True)
    return out.getvalue()
