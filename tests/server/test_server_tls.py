"""TLS: loopback detection, LAN addresses, the self-signed certificate's life cycle, the server context."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import stat
import threading
from collections import namedtuple
from pathlib import Path

import psutil
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from voicechat.server.tls import (
    TlsError,
    cert_fingerprint,
    ensure_self_signed,
    host_names,
    is_loopback,
    lan_addresses,
    select_lan_addresses,
    server_ssl_context,
    tls_enabled,
)

Addr = namedtuple("Addr", "family address netmask broadcast ptp")


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(san.get_values_for_type(x509.DNSName)), {str(a) for a in san.get_values_for_type(x509.IPAddress)}


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)
    assert not tls_enabled("auto", host)


@pytest.mark.parametrize("host", ["0.0.0.0", "", "::", "192.168.1.5", "myhost", "10.0.0.1"])
def test_non_loopback_hosts_get_tls_in_auto(host: str) -> None:
    assert not is_loopback(host)
    assert tls_enabled("auto", host)


def test_explicit_tls_modes_win() -> None:
    assert tls_enabled("on", "127.0.0.1")
    assert not tls_enabled("off", "0.0.0.0")
    with pytest.raises(ValueError):
        tls_enabled("maybe", "0.0.0.0")


def test_lan_addresses_leave_out_loopback_and_link_local_ipv4_first() -> None:
    data = {
        "lo": [Addr(socket.AF_INET, "127.0.0.1", None, None, None), Addr(socket.AF_INET6, "::1", None, None, None)],
        "eth0": [
            Addr(socket.AF_INET, "192.168.1.20", None, None, None),
            Addr(socket.AF_INET6, "fe80::1%eth0", None, None, None),
            Addr(socket.AF_INET6, "2001:db8::5", None, None, None),
            Addr(psutil.AF_LINK, "aa:bb:cc:dd:ee:ff", None, None, None),
        ],
        "wlan0": [
            Addr(socket.AF_INET, "10.0.0.7", None, None, None),
            Addr(socket.AF_INET, "169.254.3.4", None, None, None),
            Addr(socket.AF_INET6, "fd00::7", None, None, None),
        ],
        "docker0": [Addr(socket.AF_INET, "192.168.1.20", None, None, None)],  # duplicates collapse
    }
    assert select_lan_addresses(data) == ["10.0.0.7", "192.168.1.20", "2001:db8::5", "fd00::7"]


def test_lan_addresses_of_this_host_are_valid_and_not_loopback() -> None:
    for address in lan_addresses():
        ip = ipaddress.ip_address(address)
        assert not ip.is_loopback and not ip.is_link_local


def test_certificate_created_with_sans_and_private_permissions(tmp_path: Path) -> None:
    cert_path, key_path = ensure_self_signed(tmp_path / "data", ["myhost", "myhost.local"], ["192.168.1.20"])
    assert cert_path == tmp_path / "data" / "tls" / "cert.pem"
    assert key_path == tmp_path / "data" / "tls" / "key.pem"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "data" / "tls").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
    cert = load(cert_path)
    dns, ips = sans(cert)
    assert dns == {"myhost", "myhost.local", "localhost"}
    assert ips == {"192.168.1.20", "127.0.0.1", "::1"}
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in eku
    now = dt.datetime.now(dt.timezone.utc)
    assert cert.not_valid_before_utc < now - dt.timedelta(hours=23)
    assert dt.timedelta(days=824) < cert.not_valid_after_utc - now <= dt.timedelta(days=825)


def test_existing_pair_is_reused_byte_for_byte(tmp_path: Path) -> None:
    cert_path, key_path = ensure_self_signed(tmp_path, ["myhost"], ["192.168.1.20"])
    before = cert_path.read_bytes(), key_path.read_bytes()
    # A subset of what it covers (in another order and spelling) still fits.
    again = ensure_self_signed(tmp_path, ["MYHOST", "localhost"], ["192.168.1.20", "127.0.0.1"])
    assert again == (cert_path, key_path)
    assert (cert_path.read_bytes(), key_path.read_bytes()) == before


def test_new_address_regenerates_and_keeps_the_old_ones(tmp_path: Path) -> None:
    cert_path, key_path = ensure_self_signed(tmp_path, ["myhost"], ["192.168.1.20"])
    old = cert_path.read_bytes()
    ensure_self_signed(tmp_path, ["myhost"], ["10.0.0.7"])
    assert cert_path.read_bytes() != old
    dns, ips = sans(load(cert_path))
    assert {"10.0.0.7", "192.168.1.20"} <= ips
    assert "myhost" in dns
    server_ssl_context(cert_path, key_path)  # the new key matches the new certificate


def test_new_name_regenerates(tmp_path: Path) -> None:
    cert_path, _ = ensure_self_signed(tmp_path, ["myhost"], [])
    old = cert_path.read_bytes()
    ensure_self_signed(tmp_path, ["otherhost"], [])
    assert cert_path.read_bytes() != old
    assert {"myhost", "otherhost"} <= sans(load(cert_path))[0]


@pytest.mark.parametrize("victim", ["cert.pem", "key.pem"])
def test_corrupt_file_regenerates(tmp_path: Path, victim: str) -> None:
    cert_path, key_path = ensure_self_signed(tmp_path, ["myhost"], [])
    (tmp_path / "tls" / victim).write_bytes(b"-----BEGIN GARBAGE-----\nnot base64\n")
    ensure_self_signed(tmp_path, ["myhost"], [])
    load(cert_path)
    server_ssl_context(cert_path, key_path)


def test_one_file_missing_regenerates(tmp_path: Path) -> None:
    cert_path, key_path = ensure_self_signed(tmp_path, ["myhost"], [])
    key_path.unlink()
    ensure_self_signed(tmp_path, ["myhost"], [])
    server_ssl_context(cert_path, key_path)


def test_key_of_another_certificate_regenerates(tmp_path: Path) -> None:
    cert_path, key_path = ensure_self_signed(tmp_path / "a", ["myhost"], [])
    _, other_key = ensure_self_signed(tmp_path / "b", ["myhost"], [])
    key_path.write_bytes(other_key.read_bytes())
    old = cert_path.read_bytes()
    ensure_self_signed(tmp_path / "a", ["myhost"], [])
    assert cert_path.read_bytes() != old
    server_ssl_context(cert_path, key_path)


def test_expiring_certificate_regenerates(tmp_path: Path) -> None:
    cert_path, _ = ensure_self_signed(tmp_path, ["myhost"], [], days=10)
    old = cert_path.read_bytes()
    ensure_self_signed(tmp_path, ["myhost"], [])
    assert cert_path.read_bytes() != old
    remaining = load(cert_path).not_valid_after_utc - dt.datetime.now(dt.timezone.utc)
    assert remaining > dt.timedelta(days=800)


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_hostname: str) -> bytes:
    """A real TLS handshake over a socket pair; the server echoes one message. Returns what came back."""
    server_sock, client_sock = socket.socketpair()
    server_sock.settimeout(10)
    client_sock.settimeout(10)
    failures: list[BaseException] = []

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(server_sock, server_side=True) as tls:
                tls.sendall(tls.recv(100))
        except (OSError, ssl.SSLError) as exc:
            failures.append(exc)

    thread = threading.Thread(target=serve, name="tls-test-server", daemon=True)
    thread.start()
    try:
        with client_ctx.wrap_socket(client_sock, server_hostname=server_hostname) as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            tls.sendall(b"hello")
            reply = tls.recv(100)
    finally:
        client_sock.close()
        thread.join(timeout=10)
        assert not thread.is_alive()
    assert not failures
    return reply


def client_context(cafile: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT  # Python 3.13's default: browsers-like strictness
    return ctx


@pytest.mark.parametrize("server_hostname", ["localhost", "127.0.0.1", "myhost", "192.168.1.20"])
def test_tls_handshake_verifies_against_the_certificate(tmp_path: Path, server_hostname: str) -> None:
    cert_path, key_path = ensure_self_signed(tmp_path, ["myhost"], ["192.168.1.20"])
    server_ctx = server_ssl_context(cert_path, key_path)
    assert server_ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert handshake(server_ctx, client_context(cert_path), server_hostname) == b"hello"


def test_tls_handshake_refuses_a_name_the_certificate_does_not_cover(tmp_path: Path) -> None:
    cert_path, key_path = ensure_self_signed(tmp_path, ["myhost"], [])
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server_ssl_context(cert_path, key_path), client_context(cert_path), "example.com")


def test_missing_files_are_named_with_their_config_keys(tmp_path: Path) -> None:
    cert_path, key_path = ensure_self_signed(tmp_path, [], [])
    with pytest.raises(TlsError, match=r"server\.cert_file") as err:
        server_ssl_context(tmp_path / "nope.pem", key_path)
    assert str(tmp_path / "nope.pem") in str(err.value)
    with pytest.raises(TlsError, match=r"server\.key_file") as err:
        server_ssl_context(cert_path, tmp_path / "nokey.pem")
    assert str(tmp_path / "nokey.pem") in str(err.value)


def test_bad_or_mismatched_files_are_named(tmp_path: Path) -> None:
    cert_a, key_a = ensure_self_signed(tmp_path / "a", [], [])
    _, key_b = ensure_self_signed(tmp_path / "b", [], [])
    with pytest.raises(TlsError, match=r"server\.key_file .*b/tls/key\.pem is not the key"):
        server_ssl_context(cert_a, key_b)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello")
    with pytest.raises(TlsError, match=r"server\.cert_file .*garbage\.pem"):
        server_ssl_context(garbage, key_a)
    with pytest.raises(TlsError, match=r"server\.key_file .*garbage\.pem"):
        server_ssl_context(cert_a, garbage)


def test_fingerprint_is_colon_separated_sha256(tmp_path: Path) -> None:
    cert_path, _ = ensure_self_signed(tmp_path, [], [])
    fingerprint = cert_fingerprint(cert_path)
    assert fingerprint == load(cert_path).fingerprint(hashes.SHA256()).hex(":").upper()
    assert len(fingerprint.split(":")) == 32
    with pytest.raises(TlsError, match=r"server\.cert_file"):
        cert_fingerprint(tmp_path / "missing.pem")


def test_encrypted_key_is_refused_without_prompting(tmp_path: Path) -> None:
    cert_path, key_path = ensure_self_signed(tmp_path, [], [])
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    ))
    with pytest.raises(TlsError, match=r"server\.key_file .*encrypted\.pem: the key is encrypted"):
        server_ssl_context(cert_path, encrypted)


def test_host_names_add_the_mdns_name_to_a_bare_hostname(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "MyHost")
    assert host_names() == ["myhost", "myhost.local"]
    monkeypatch.setattr(socket, "gethostname", lambda: "box.example.org")
    assert host_names() == ["box.example.org"]
    monkeypatch.setattr(socket, "gethostname", lambda: "localhost")
    assert host_names() == []
