"""Resume across processes through Redis: what one SessionManager saved, a fresh one elsewhere restores.

The writer is a process of its own, SIGKILLed mid-conversation (no shutdown, no
flush): every change it acknowledged must be in Redis, in order, for a
SessionManager in another process (this one) to resume with the same token.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support.engines import scripted_engines

from voicechat.session.manager import SessionLimits, SessionManager
from voicechat.session.redis_store import RedisConversationStore

pytestmark = pytest.mark.timeout(120)
TESTS = Path(__file__).resolve().parents[1]

# Talks as fast as it can, printing "ack N" once change N returned (was saved), until it is killed.
WRITER = """
import sys
from support.engines import scripted_engines
from voicechat.session.manager import SessionManager
from voicechat.session.redis_store import RedisConversationStore

manager = SessionManager(scripted_engines(), store=RedisConversationStore(sys.argv[1]))
manager.start()
session = manager.create("ws")
print("token", session.resume_token, flush=True)
history, n = session.pipeline.history, 0
while True:
    history.add_user(f"question {n}") if n % 2 == 0 else history.add_assistant(f"answer {n}")
    print("ack", n, flush=True)
    n += 1
"""


def expected(n: int) -> list[tuple[str, str]]:
    return [("user", f"question {i}") if i % 2 == 0 else ("assistant", f"answer {i}") for i in range(n)]


def test_a_sigkilled_writer_loses_nothing_it_acknowledged_and_another_process_resumes(redis_server):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    writer = subprocess.Popen([sys.executable, "-c", WRITER, redis_server.url], cwd=TESTS.parent, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None
        first = writer.stdout.readline().split()
        assert first[:1] == ["token"], first + [writer.stderr.read() if writer.stderr else ""]
        token = first[1]
        acked = -1
        for line in writer.stdout:  # blocks on the writer's own pace; the test timeout guards it
            acked = int(line.split()[1])
            if acked == 400:
                writer.send_signal(signal.SIGKILL)
                break
        rest, _err = writer.communicate(timeout=30)
        acked = max([acked] + [int(line.split()[1]) for line in rest.splitlines() if line.startswith("ack")])
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert writer.returncode == -signal.SIGKILL

    store = RedisConversationStore(redis_server.url)
    manager = SessionManager(scripted_engines(), SessionLimits(), store=store)
    manager.start()
    try:
        saved = store.load(token)
        assert saved is not None and saved.bad_lines == 0
        changes = [(c.kind, c.text) for c in saved.changes]
        # Everything acknowledged, in order; at most the one change in flight at the kill beyond it.
        assert acked + 1 <= len(changes) <= acked + 2 and changes == expected(len(changes))
        session = manager.resume(token)
        assert session.restored and session.resume_token == token
        assert session.pipeline.history.turns[-1].content == changes[-1][1]
        session.pipeline.history.add_user("and now from here")  # the conversation goes on in this process
        again = store.load(token)
        assert again is not None and again.changes[-1].text == "and now from here"
    finally:
        manager.shutdown()
        manager.engines.close()
