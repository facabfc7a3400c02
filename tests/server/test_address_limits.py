"""Per-address limits (pure, fake clock): the connection cap and the growing delay after wrong tokens."""

from __future__ import annotations

import pytest

from voicechat.server.address_limits import AuthBackoff, ConnectionCap, TrustedProxies, address_of
from voicechat.server.tls import is_loopback


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_cap_counts_per_address_and_frees_on_release():
    cap = ConnectionCap(2)
    assert cap.admit("10.0.0.1", "a") and cap.admit("10.0.0.1", "b")
    assert not cap.admit("10.0.0.1", "c")
    assert cap.admit("10.0.0.2", "d")  # another host is not affected
    cap.release("10.0.0.1", "a")
    assert cap.admit("10.0.0.1", "c")
    assert cap.count("10.0.0.1") == 2 and cap.refused == 1
    for key in ("b", "c"):
        cap.release("10.0.0.1", key)
    cap.release("10.0.0.1", "never admitted")
    assert cap.count("10.0.0.1") == 0


def test_cap_forgets_connections_that_closed_without_release():
    """A handshake that failed after admission never reaches release: its slot must not leak."""
    cap = ConnectionCap(1)
    closed: set[str] = set()
    assert cap.admit("10.0.0.1", "failed-handshake")
    closed.add("failed-handshake")
    assert cap.admit("10.0.0.1", "next", is_open=lambda key: key not in closed)


def test_cap_must_allow_one():
    with pytest.raises(ValueError):
        ConnectionCap(0)


def test_backoff_doubles_up_to_the_cap_and_resets_on_success():
    clock = Clock()
    backoff = AuthBackoff(base_s=0.5, max_s=4.0, clock=clock)
    assert [backoff.failed("10.0.0.9") for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.failed("10.0.0.8") == 0.5  # per address
    backoff.succeeded("10.0.0.9")
    assert backoff.failures("10.0.0.9") == 0 and backoff.failed("10.0.0.9") == 0.5


def test_backoff_forgets_old_failures():
    clock = Clock()
    backoff = AuthBackoff(base_s=1.0, max_s=60.0, forget_after_s=600.0, clock=clock)
    for _ in range(3):
        backoff.failed("10.0.0.9")
    clock.now += 599
    assert backoff.failed("10.0.0.9") == 8.0  # still remembered: 4th failure
    clock.now += 601
    assert backoff.failures("10.0.0.9") == 0
    assert backoff.failed("10.0.0.9") == 1.0


def test_backoff_remembers_a_bounded_number_of_addresses():
    backoff = AuthBackoff(base_s=1.0, max_addresses=100, clock=Clock())
    for i in range(1000):
        backoff.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(backoff) == 100
    assert backoff.failures("10.0.3.231") == 1  # the most recent stay
    assert backoff.failures("10.0.0.0") == 0


def test_backoff_off_and_huge_counts():
    assert AuthBackoff(base_s=0).failed("x") == 0
    backoff = AuthBackoff(base_s=0.5, max_s=10.0)
    assert backoff.delay_for(10_000) == 10.0  # no overflow


def test_address_of():
    assert address_of(("192.168.1.5", 51234)) == "192.168.1.5"
    assert address_of(("::1", 1, 0, 0)) == "::1"
    assert address_of(None) == "unknown"


# -- behind a reverse proxy ------------------------------------------------------------------------------
def test_without_trusted_proxies_the_peer_is_the_client_whatever_the_header_says():
    assert TrustedProxies().client("203.0.113.7", "127.0.0.1") == "203.0.113.7"


def test_a_trusted_proxy_names_the_client_and_what_the_client_wrote_itself_is_not_believed():
    proxies = TrustedProxies.parse(["127.0.0.1", "10.0.0.0/8"])
    assert proxies.client("127.0.0.1", "192.168.1.23") == "192.168.1.23"
    # the client sent "X-Forwarded-For: 127.0.0.1" itself; the proxy appended its real address
    assert proxies.client("127.0.0.1", "127.0.0.1, 192.168.1.23") == "192.168.1.23"
    # two trusted hops (10.1.2.3 forwarded to the local proxy): the first untrusted from the right
    assert proxies.client("127.0.0.1", "198.51.100.4, 10.1.2.3") == "198.51.100.4"
    assert proxies.client("192.168.1.50", "127.0.0.1") == "192.168.1.50"  # an untrusted peer's header: ignored
    assert proxies.client("127.0.0.1", None) == "127.0.0.1"  # the proxy itself (its health checks)


def test_a_forwarded_hop_that_is_no_address_can_pass_for_neither_loopback_nor_a_real_address():
    proxies = TrustedProxies.parse(["127.0.0.1"])
    client = proxies.client("127.0.0.1", "localhost")
    assert client.startswith("invalid:") and not is_loopback(client)
    assert len(proxies.client("127.0.0.1", "x" * 1000)) <= len("invalid:") + 64


def test_a_bad_trusted_proxy_entry_is_named():
    with pytest.raises(ValueError, match="'proxy.lan' is not an IP address or network"):
        TrustedProxies.parse(["127.0.0.1", "proxy.lan"])
