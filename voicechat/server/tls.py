"""TLS for the LAN server: when to use it, a self-signed certificate, the SSL context.

Browsers only allow the microphone in a secure context, so any address other
than loopback needs HTTPS. Without a configured certificate the server makes a
self-signed one (EC P-256) whose subject alternative names cover this host's
names and LAN addresses, and reuses it across restarts: every new certificate
makes each browser ask its user to accept it again.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import socket
import ssl
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

CERT_NAME = "cert.pem"
KEY_NAME = "key.pem"
RENEW_BEFORE = dt.timedelta(days=30)
ALWAYS_NAMES = ("localhost",)
ALWAYS_ADDRESSES = ("127.0.0.1", "::1")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TlsError(Exception):
    """A certificate or key cannot be used; the message names the file and its config key."""


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach ("0.0.0.0" and "" mean all interfaces: not loopback)."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def tls_enabled(mode: str, host: str) -> bool:
    """Whether to serve HTTPS: "on"/"off" as told; "auto" everywhere except loopback."""
    if mode == "on":
        return True
    if mode == "off":
        return False
    if mode == "auto":
        return not is_loopback(host)
    raise ValueError(f"server.tls must be 'auto', 'on' or 'off', not {mode!r}")


def lan_addresses() -> list[str]:
    """This host's addresses other machines on the LAN could use (IPv4 first, sorted)."""
    return select_lan_addresses(psutil.net_if_addrs())


def select_lan_addresses(if_addrs: Mapping[str, Iterable[Any]]) -> list[str]:
    """Pick LAN addresses from ``psutil.net_if_addrs()``-shaped data.

    Loopback, link-local, multicast and unspecified addresses are left out;
    IPv6 keeps global-scope addresses (unique-local fd00::/8 included: that is
    what many home LANs use).
    """
    found: set[IPAddress] = set()
    for entries in if_addrs.values():
        for entry in entries:
            if entry.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            try:
                addr = ipaddress.ip_address(str(entry.address).split("%", 1)[0])
            except ValueError:
                continue
            if addr.is_loopback or addr.is_link_local or addr.is_multicast or addr.is_unspecified:
                continue
            found.add(addr)
    return [str(a) for a in sorted(found, key=lambda a: (a.version, int(a)))]


def host_names() -> list[str]:
    """DNS names this host may be reached by: its hostname and, for a bare one, its mDNS ``.local`` name."""
    name = socket.gethostname().strip().lower()
    if not name or name == "localhost":
        return []
    return [name] if "." in name else [name, f"{name}.local"]


def _normalise(names: Iterable[str], addresses: Iterable[str]) -> tuple[set[str], set[IPAddress]]:
    """Requested SANs as comparable sets; names that are IP literals count as addresses."""
    dns: set[str] = set(ALWAYS_NAMES)
    ips: set[IPAddress] = {ipaddress.ip_address(a) for a in ALWAYS_ADDRESSES}
    for name in names:
        name = name.strip().rstrip(".").lower()
        if not name:
            continue
        try:
            ips.add(ipaddress.ip_address(name.strip("[]").split("%", 1)[0]))
            continue
        except ValueError:
            pass
        try:
            dns.add(name.encode("idna").decode("ascii"))
        except UnicodeError:
            log.warning("host name %r cannot be put in a certificate; left out", name)
    for address in addresses:
        ips.add(ipaddress.ip_address(address.strip().strip("[]").split("%", 1)[0]))
    return dns, ips


def _sans(cert: x509.Certificate) -> tuple[set[str], set[IPAddress]]:
    """The DNS names and IP addresses a certificate is valid for."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    return {n.lower() for n in san.get_values_for_type(x509.DNSName)}, set(san.get_values_for_type(x509.IPAddress))


def _public_der(key: Any) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _load_pair(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, Any]:
    """Parse a PEM certificate and unencrypted key; ValueError says what is wrong."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{cert_path} is unreadable: {exc}") from exc
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"{key_path} is unreadable: {exc}") from exc
    if _public_der(cert.public_key()) != _public_der(key.public_key()):
        raise ValueError(f"{key_path} is not the key of {cert_path}")
    return cert, key


def _reuse_problem(
    cert_path: Path, key_path: Path, dns: set[str], ips: set[IPAddress], now: dt.datetime
) -> tuple[str | None, tuple[set[str], set[IPAddress]]]:
    """Why the existing pair cannot be reused (None: it can), and its SANs to carry over."""
    if not cert_path.exists() and not key_path.exists():
        return "none exists yet", (set(), set())
    try:
        cert, _ = _load_pair(cert_path, key_path)
    except ValueError as exc:
        return str(exc), (set(), set())
    old = _sans(cert)
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        return f"it expires on {cert.not_valid_after_utc:%Y-%m-%d}", old
    missing = sorted(dns - old[0]) + sorted(str(a) for a in ips - old[1])
    if missing:
        return f"it does not cover {', '.join(missing)}", old
    return None, old


def _write_private(path: Path, data: bytes, mode: int) -> None:
    """Write atomically with ``mode`` from the start (a key is never readable by others, even briefly)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _build(dns: set[str], ips: set[IPAddress], days: int, now: dt.datetime) -> tuple[bytes, bytes]:
    """A new self-signed leaf certificate and its key, both PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    common = next((n for n in sorted(dns) if n != "localhost"), "localhost")
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "voicechat (self-signed)"),
        x509.NameAttribute(NameOID.COMMON_NAME, common[:64]),
    ])
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in sorted(dns)]
    sans += [x509.IPAddress(a) for a in sorted(ips, key=lambda a: (a.version, int(a)))]
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def ensure_self_signed(
    data_dir: Path, names: Sequence[str], addresses: Sequence[str], *, days: int = 825
) -> tuple[Path, Path]:
    """Return (cert, key) in ``data_dir/tls``, reusing the existing pair when it still fits.

    "localhost", 127.0.0.1 and ::1 are always included. A pair is reused when it
    parses, the key matches, it is valid for 30 more days and its SANs cover
    everything requested; otherwise a new one is made (825 days: the most Apple
    accepts) with the old SANs kept, so a host moving between networks does not
    get a new certificate, and a new browser warning, on every change back.
    """
    dns, ips = _normalise(names, addresses)
    tls_dir = Path(data_dir) / "tls"
    cert_path, key_path = tls_dir / CERT_NAME, tls_dir / KEY_NAME
    now = dt.datetime.now(dt.timezone.utc)
    problem, (old_dns, old_ips) = _reuse_problem(cert_path, key_path, dns, ips, now)
    if problem is None:
        return cert_path, key_path
    log.info("creating a self-signed TLS certificate in %s: %s", tls_dir, problem)
    try:
        for directory in (Path(data_dir), tls_dir):
            if not directory.exists():
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.chmod(directory, 0o700)
        cert_pem, key_pem = _build(dns | old_dns, ips | old_ips, days, now)
        _write_private(key_path, key_pem, 0o600)
        _write_private(cert_path, cert_pem, 0o644)
    except OSError as exc:
        raise TlsError(f"cannot write the certificate in {tls_dir} (server.data_dir): {exc}") from exc
    return cert_path, key_path


def _check_readable(path: Path, config_key: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TlsError(f"{config_key} {path}: cannot read it ({exc.strerror or exc})") from exc


def server_ssl_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server-side context (TLS 1.2 at least); a bad file raises TlsError naming it."""
    cert_pem = _check_readable(cert_file, "server.cert_file")
    key_pem = _check_readable(key_file, "server.key_file")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert_file, key_file, password=lambda: b"")
    except (ssl.SSLError, ValueError, OSError) as exc:
        raise TlsError(_explain(cert_file, key_file, cert_pem, key_pem, exc)) from exc
    return ctx


def _explain(cert_file: Path, key_file: Path, cert_pem: bytes, key_pem: bytes, exc: Exception) -> str:
    """Say which file is at fault when OpenSSL refused the pair."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return f"server.cert_file {cert_file}: not a PEM certificate ({exc})"
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        return f"server.key_file {key_file}: the key is encrypted; give an unencrypted key"
    except (ValueError, UnsupportedAlgorithm):
        return f"server.key_file {key_file}: not a PEM private key ({exc})"
    if _public_der(cert.public_key()) != _public_der(key.public_key()):
        return f"server.key_file {key_file} is not the key of server.cert_file {cert_file}"
    return f"server.cert_file {cert_file} / server.key_file {key_file}: {exc}"


def cert_fingerprint(cert_file: Path) -> str:
    """SHA-256 of the certificate as colon-separated hex, as browsers show it, to check by eye."""
    try:
        cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    except (OSError, ValueError) as exc:
        raise TlsError(f"server.cert_file {cert_file}: cannot read the certificate ({exc})") from exc
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()
