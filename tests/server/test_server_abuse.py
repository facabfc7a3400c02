"""Abuse over real sockets: per-address connection cap, rate limits on every kind of frame, wrong-token delay."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest
import websockets
from support.server import client, http_get, http_json, run, running_server

from voicechat.server.connection import ConnectionLimits
from voicechat.server.protocol import encode_client_audio


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for a condition on the server's side (no event to wait on from the test's loop)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


class GatedSleep:
    """Stands in for asyncio.sleep in the server: records each delay and holds it until the test opens the gate."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.waiting = threading.Event()
        self.gate = threading.Event()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self.waiting.set()
        await asyncio.to_thread(self.gate.wait, 30)


def test_connections_per_address_are_capped_with_429(make_manager, tmp_path):
    async def scenario(server):
        async with client(server) as first:
            await first.wait_type("session")
            idle = client(server, token=None)
            await idle.connect(hello=False)  # connections that have not said hello count too
            with pytest.raises(websockets.InvalidStatus) as refused:
                await client(server).connect()
            assert refused.value.response.status_code == 429
            assert b"too many connections" in refused.value.response.body
            assert await asyncio.to_thread(http_json, server, "/health") == {"status": "ok"}  # HTTP still served
            await first.send_json(type="text", text="still here")  # the admitted ones are unaffected
            await first.wait_type("reply_done")
            await idle.close()
            await until(lambda: server.guard.cap.count("127.0.0.1") == 1)
            async with client(server) as again:  # the slot came back
                await again.wait_type("session")
        await until(lambda: server.guard.cap.count("127.0.0.1") == 0)
        detailed = await asyncio.to_thread(http_json, server, "/health/detailed")
        assert detailed["server"]["refused_per_address_cap"] == 1

    with running_server(make_manager(), tmp_path, max_connections_per_address=2) as server:
        run(scenario(server))


def test_wrong_tokens_wait_longer_each_time_without_holding_up_others(make_manager, tmp_path):
    sleep = GatedSleep()

    async def wrong_token(server) -> int | None:
        c = client(server, token="wrong-token")
        await c.connect()
        code = await c.wait_closed(timeout=30)
        assert c.received.of_type("error")[-1]["code"] == "unauthorized"
        return code

    async def scenario(server):
        async with client(server) as bystander:
            await bystander.wait_type("session")
            held = asyncio.create_task(wrong_token(server))
            assert await asyncio.to_thread(sleep.waiting.wait, 10)
            # While the wrong token waits out its delay, everyone else is served.
            await bystander.send_json(type="text", text="are you there")
            (done,) = await bystander.wait_type("reply_done")
            assert done["text"].startswith("You said: are you there")
            async with client(server) as newcomer:
                await newcomer.wait_type("session")
            assert not held.done()
            sleep.gate.set()
            assert await held == 1008
            for _ in range(4):
                assert await wrong_token(server) == 1008
            async with client(server) as right:  # the right token is not delayed, and forgives the address
                await right.wait_type("session")
            assert await wrong_token(server) == 1008

    with running_server(make_manager(), tmp_path, auth_delay_s=0.5, auth_delay_max_s=2.0) as server:
        server.guard.sleep = sleep
        run(scenario(server))
    # The newcomer's right token (same address) forgave the first failure; then 0.5, 1, 2, 2 (the cap); forgiven
    # again by the right token.
    assert sleep.delays == [0.5, 0.5, 1.0, 2.0, 2.0, 0.5]


def test_a_missing_null_empty_or_wrong_token_is_refused_alike_after_a_growing_delay(make_manager, tmp_path):
    """Before, a hello without a token (or with null) got bad_message and the connection stayed open, undelayed."""
    delays: list[float] = []

    async def record(delay: float) -> None:  # the delay the server asked for, without waiting it out
        delays.append(delay)

    async def refused(hello: dict[str, object]) -> tuple[int | None, list[str]]:
        c = client(server, token=None)
        await c.connect(hello=False)
        await c.send_json(**hello)
        code = await c.wait_closed()
        return code, [e["code"] for e in c.received.of_type("error")]

    hellos = [{"type": "hello"}, {"type": "hello", "token": None}, {"type": "hello", "token": ""},
              {"type": "hello", "token": "wrong-token"}]
    limits = ConnectionLimits(hello_timeout_s=3)
    with running_server(make_manager(), tmp_path, limits=limits, auth_delay_s=0.5, auth_delay_max_s=10) as server:
        server.guard.sleep = record
        results = [run(refused(hello)) for hello in hellos]
    assert results == [(1008, ["unauthorized"])] * 4
    assert delays == [0.5, 1.0, 2.0, 4.0], "each counts as a recent wrong token of the address"


def test_wrong_token_delay_really_waits(make_manager, tmp_path):
    async def scenario(server):
        c = client(server, token="wrong-token")
        start = time.monotonic()
        await c.connect()
        assert await c.wait_closed() == 1008
        return time.monotonic() - start

    with running_server(make_manager(), tmp_path, auth_delay_s=0.3) as server:
        assert run(scenario(server)) >= 0.3


@pytest.mark.parametrize("before_hello", [False, True], ids=["after-hello", "before-hello"])
@pytest.mark.parametrize("kind", ["binary", "text"])
def test_rate_limit_covers_binary_and_text_before_and_after_hello(make_manager, tmp_path, kind, before_hello):
    # A flooder's close frame answer waits behind its unread flood; close_timeout_s bounds that wait.
    limits = ConnectionLimits(max_messages_per_second=20, malformed_in_a_row=10_000, close_timeout_s=0.3)
    frame = encode_client_audio(0, 0, bytes(640)) if kind == "binary" else '{"type":"ping"}'

    async def scenario(server):
        async with client(server) as bystander:
            await bystander.wait_type("session")
            flood = client(server) if not before_hello else client(server, token=None)
            await flood.connect(hello=not before_hello)
            if not before_hello:
                await flood.wait_type("session")
            for _ in range(500):
                try:
                    await flood.send_raw(frame)
                except websockets.ConnectionClosed:
                    break
            assert await flood.wait_closed() == 1008
            assert flood.received.of_type("error")[-1]["code"] == "rate_limited"
            await bystander.send_json(type="text", text="unaffected")
            await bystander.wait_type("reply_done")

    with running_server(make_manager(), tmp_path, limits=limits) as server:
        run(scenario(server))


def test_malformed_frames_before_hello_close_too(make_manager, tmp_path):
    """Before this was fixed a client could send anything but a hello for the whole hello timeout."""
    limits = ConnectionLimits(malformed_in_a_row=5)

    async def scenario(server):
        c = client(server, token=None)
        await c.connect(hello=False)
        for frame in ("{", b"\x01", '{"type":"ping"}', "[]", '{"type":"mute","muted":true}'):
            await c.send_raw(frame)
        assert await c.wait_closed() == 1008
        codes = [e["code"] for e in c.received.of_type("error")]
        # One error per message: the 5th's is not followed by a second one for the close (there was, before).
        assert codes == ["bad_json", "not_ready", "not_ready", "bad_message", "not_ready"]

    with running_server(make_manager(), tmp_path, limits=limits) as server:
        run(scenario(server))


def test_behind_a_trusted_proxy_limits_and_loopback_pages_go_by_the_forwarded_client(make_manager, tmp_path):
    """Every connection through a local proxy comes from 127.0.0.1: the forwarded address is the client's."""
    lan_a, lan_b = {"X-Forwarded-For": "192.168.1.23"}, {"X-Forwarded-For": "192.168.1.24"}

    async def scenario(server):
        async with client(server, headers=lan_a) as first:
            await first.wait_type("session")
            with pytest.raises(websockets.InvalidStatus) as refused:  # the same LAN client again: its cap is 1
                await client(server, headers=lan_a).connect()
            assert refused.value.response.status_code == 429
            async with client(server, headers=lan_b) as other:  # another one through the same proxy
                await other.wait_type("session")
            await until(lambda: server.guard.cap.count("192.168.1.24") == 0)
        await until(lambda: server.guard.cap.count("192.168.1.23") == 0)
        # the loopback-only pages are not open to a LAN client just because the proxy is local
        assert (await asyncio.to_thread(http_get, server, "/metrics", lan_a))[0] == 401
        assert (await asyncio.to_thread(http_get, server, "/metrics"))[0] == 200  # the proxy host itself

    with running_server(make_manager(), tmp_path, max_connections_per_address=1,
                        trusted_proxies=("127.0.0.1",)) as server:
        run(scenario(server))
