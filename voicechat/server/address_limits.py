"""Per-address abuse limits: open connections, and a growing delay after wrong tokens (pure, clock injected).

Everything else the server limits is per connection (message rate, malformed
messages, frame size). These two need memory across connections, keyed by the
client's IP address:

- ``ConnectionCap``: one host cannot hold more than ``limit`` WebSocket
  connections at once (sockets, buffers and hello timers are per connection).
- ``AuthBackoff``: each wrong token from an address is refused only after a
  delay that doubles with every recent failure from that address, up to a cap.
  Together with the cap this bounds how fast one host can guess tokens, while
  the delay (``asyncio.sleep`` in that connection's handler) holds up no one else.

Both are used on the server's event loop only, so they need no locks.

Behind a reverse proxy (docs/deploy.md) every connection comes from the proxy's
address; ``TrustedProxies`` names the proxies whose ``X-Forwarded-For`` is
believed, so the limits (and the loopback-only pages) see the real client.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

MAX_ADDRESS_CHARS = 64  # a forwarded address is a key of the limits: garbage stays short


def address_of(remote: object) -> str:
    """The host part of a socket's peer address (``("192.168.1.5", 51234)`` -> ``"192.168.1.5"``)."""
    if isinstance(remote, tuple) and remote:
        return str(remote[0])
    return "unknown"


def _ip(text: str) -> object | None:
    try:
        return ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


@dataclass(frozen=True)
class TrustedProxies:
    """The reverse proxies whose ``X-Forwarded-For`` names the client (pure); none: the peer is the client.

    The header is read from the right (the hop nearest this server) and the first address that is not a
    trusted proxy is the client: what a client writes into the header itself stays to the left of what
    the proxy appended and is never believed. A hop that is not an IP address ends the walk and is the
    client's, marked ``invalid:`` and shortened, so it can neither pass for loopback nor share a real
    address's limits.
    """

    networks: tuple[IPv4Network | IPv6Network, ...] = ()

    @classmethod
    def parse(cls, entries: Sequence[str]) -> TrustedProxies:
        """From ``server.trusted_proxies``: IP addresses or networks (CIDR); ValueError names a bad entry."""
        networks = []
        for entry in entries:
            try:
                networks.append(ip_network(entry.strip(), strict=False))
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network (CIDR) such as 127.0.0.1 or "
                                 "10.0.0.0/8") from None
        return cls(tuple(networks))

    def trusts(self, address: str) -> bool:
        ip = _ip(address)
        return ip is not None and any(ip in network for network in self.networks)

    def client(self, peer: str, forwarded_for: str | None) -> str:
        """The client's address for a connection from ``peer`` that carried ``forwarded_for`` (or None)."""
        if not forwarded_for or not self.trusts(peer):
            return peer
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        for hop in reversed(hops):
            if _ip(hop) is None:  # marked, so that not even "localhost" passes for loopback
                return "invalid:" + hop[:MAX_ADDRESS_CHARS]
            if not self.trusts(hop):
                return hop
        return hops[0] if hops else peer


def client_address(connection: object, proxies: TrustedProxies) -> str:
    """The client's address for a WebSocket connection (its peer, or what a trusted proxy says)."""
    peer = address_of(getattr(connection, "remote_address", None))
    request = getattr(connection, "request", None)
    forwarded = request.headers.get("X-Forwarded-For") if request is not None else None
    return proxies.client(peer, forwarded)


class ConnectionCap:
    """Open connections per address; ``admit`` reserves a slot, ``release`` frees it.

    A connection admitted whose handshake then failed never reaches ``release``;
    ``is_open`` lets ``admit`` forget such entries instead of leaking the slot.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._open: dict[str, set[Hashable]] = {}
        self.refused = 0

    def admit(self, address: str, key: Hashable, is_open: Callable[[Hashable], bool] = lambda _key: True) -> bool:
        keys = self._open.setdefault(address, set())
        for stale in [k for k in keys if not is_open(k)]:
            keys.discard(stale)
        if len(keys) >= self.limit:
            self.refused += 1
            return False
        keys.add(key)
        return True

    def release(self, address: str, key: Hashable) -> None:
        keys = self._open.get(address)
        if keys is None:
            return
        keys.discard(key)
        if not keys:
            del self._open[address]

    def count(self, address: str) -> int:
        return len(self._open.get(address, ()))


@dataclass
class _Failures:
    count: int
    last: float


class AuthBackoff:
    """Delay before refusing a wrong token: ``base_s * 2**(n-1)`` for the n-th recent failure, at most ``max_s``.

    Failures are forgotten ``forget_after_s`` after an address's last one, or at
    once when it presents the right token. At most ``max_addresses`` addresses
    are remembered (the least recently failing are forgotten first), so a scan
    from many addresses cannot grow this without bound.
    """

    def __init__(
        self, base_s: float = 0.5, max_s: float = 10.0, forget_after_s: float = 600.0, max_addresses: int = 10000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_s, self.max_s, self.forget_after_s = base_s, max_s, forget_after_s
        self.max_addresses, self.clock = max_addresses, clock
        self._failures: OrderedDict[str, _Failures] = OrderedDict()

    def failed(self, address: str) -> float:
        """Count a wrong token from ``address``; the seconds to wait before refusing it."""
        now = self.clock()
        entry = self._failures.pop(address, None)
        if entry is None or now - entry.last > self.forget_after_s:
            entry = _Failures(0, now)
        entry.count += 1
        entry.last = now
        self._failures[address] = entry  # most recent last
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)
        return self.delay_for(entry.count)

    def delay_for(self, failures: int) -> float:
        if failures <= 0 or self.base_s <= 0:
            return 0.0
        return min(self.max_s, self.base_s * 2.0 ** min(failures - 1, 60))

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)

    def failures(self, address: str) -> int:
        entry = self._failures.get(address)
        if entry is None or self.clock() - entry.last > self.forget_after_s:
            return 0
        return entry.count

    def __len__(self) -> int:
        return len(self._failures)


@dataclass
class AddressGuard:
    """What connections share about addresses; ``sleep`` is injectable so tests need not wait."""

    cap: ConnectionCap
    backoff: AuthBackoff
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep)
    proxies: TrustedProxies = field(default_factory=TrustedProxies)

    def address_of(self, connection: object) -> str:
        """The client's address of ``connection`` (see ``TrustedProxies``)."""
        return client_address(connection, self.proxies)
