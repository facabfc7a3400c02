"""Two voicechat replicas behind haproxy with Redis: a replica killed mid-conversation loses no client.

Everything real and on loopback, started by the test (``voicechat.deploy.layout``): redis-server
with its append-only file, two ``run.py`` processes (scripted engines: this is about sessions, not
models) and haproxy with its sticky cookie. Clients behave as the page does: they load the page
through the proxy (which sets the cookie), open the WebSocket with that cookie, and after a dropped
connection reconnect with their resume token.
"""

from __future__ import annotations

import asyncio
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support.server import complete_turn, run
from support.services import need

from voicechat.deploy.haproxy import COOKIE
from voicechat.deploy.layout import Layout, LayoutPlan
from voicechat.server.client import VoiceClient

pytestmark = pytest.mark.slow

CLIENTS = 20
TURNS = 2


@dataclass
class Client:
    index: int
    cookie: str = ""
    token: str = ""
    seen: list[tuple[str, str]] = field(default_factory=list)  # (role, text) the client saw acknowledged
    conn: VoiceClient | None = None

    @property
    def replica(self) -> str:
        return self.cookie.partition("=")[2]


def page_cookie(url: str) -> str:
    """Load the page through the proxy, as a browser does first: the replica's cookie (``name=value``)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        cookie = response.headers.get("Set-Cookie", "")
    assert cookie.startswith(f"{COOKIE}="), cookie
    return cookie.split(";", 1)[0]


async def turn(c: Client, text: str) -> None:
    """One typed turn, its reply played out (the page reports that); both then belong to the history."""
    assert c.conn is not None
    reply = await complete_turn(c.conn, text)
    c.seen += [("user", text), ("assistant", reply["text"])]


async def connect(layout: Layout, c: Client, resume: str | None = None) -> dict:
    c.conn = VoiceClient(layout.ws_url, layout.plan.token, headers={"Cookie": c.cookie}, resume=resume,
                         playback_reports=True)
    await c.conn.connect()
    return (await c.conn.wait_type("session", timeout=30))[-1]


@pytest.mark.timeout(300)
def test_clients_of_a_killed_replica_resume_on_the_other_with_their_whole_history(tmp_path: Path):
    need("redis-server")
    need("haproxy")
    plan = LayoutPlan(replicas=2, scripted=True, work_dir=tmp_path, settings={
        "sessions.max_sessions": "40", "server.max_connections_per_address": "64",
    })

    async def scenario(layout: Layout) -> None:
        clients = [Client(i) for i in range(CLIENTS)]
        for c in clients:
            c.cookie = await asyncio.to_thread(page_cookie, layout.url)
            c.token = (await connect(layout, c))["resume_token"]
        for k in range(TURNS):
            await asyncio.gather(*(turn(c, f"Client {c.index} asks question {k}.") for c in clients))
        on = {r: [c for c in clients if c.replica == r] for r in ("r1", "r2")}
        assert len(on["r1"]) >= CLIENTS // 4 and len(on["r2"]) >= CLIENTS // 4, {r: len(v) for r, v in on.items()}

        layout.kill_replica(0)  # r1 dies: no goodbye, nothing flushed
        await asyncio.gather(*(c.conn.wait_closed(timeout=30) for c in on["r1"]))
        for c in on["r1"]:  # the page reconnects with its cookie and resume token; the proxy sends it to r2
            session = await connect(layout, c, resume=c.token)
            assert session["resumed"] is True, session
            history = [(m["role"], m["text"]) for m in session["history"]]
            assert history == c.seen, (c.index, history, c.seen)
        # everyone goes on: the moved clients on r2, and r2's own, which noticed nothing
        await asyncio.gather(*(turn(c, f"Client {c.index} asks again.") for c in clients))
        for c in on["r2"]:
            assert len(c.conn.received.of_type("session")) == 1  # never reconnected
        await asyncio.gather(*(c.conn.close() for c in clients))

    with Layout(plan) as layout:
        run(scenario(layout))
