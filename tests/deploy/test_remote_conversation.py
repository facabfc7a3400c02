"""A spoken conversation where speech recognition, the language model and the voice all run in other
processes: real servers (the OpenAI audio API, llama.cpp's server, Wyoming) with the starter models.

voicechat itself runs as ``run.py --no-tui`` with only its listening front end in-process; the client
streams a Piper-spoken question as a browser would and hears the reply.
"""

from __future__ import annotations

import json
import secrets
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from support.real import same_words, spoken
from support.server import run

from voicechat.deploy.engine_servers import Kind, engine_servers, settings_of
from voicechat.deploy.processes import ServerProcess
from voicechat.server.client import VoiceClient

pytestmark = pytest.mark.slow

QUESTION = "What is the capital of France?"


def voicechat_on(servers_settings: dict[str, str], data_dir: Path, token: str) -> ServerProcess:
    return ServerProcess("voicechat", {
        "server.host": "127.0.0.1", "server.port": "0", "server.tls": "off", "server.token": token,
        "server.data_dir": str(data_dir), "models.set": "starter", "llm.seed": "7", "logging.level": "WARNING",
        **servers_settings,
    })


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("stt", "tts"), [("openai", "wyoming"), ("wyoming", "openai")])
def test_a_spoken_question_is_heard_answered_and_spoken_by_remote_engines(tmp_path: Path, stt: Kind, tts: Kind):
    token = secrets.token_urlsafe(12)

    async def talk(url: str):
        async with VoiceClient(url, token, output_sample_rate=16000) as c:
            await c.wait_type("session")
            await c.stream(spoken(QUESTION), realtime=2.0)
            silence = c.keep_streaming_silence()
            try:
                done = (await c.wait_type("reply_done", timeout=120))[-1]
            finally:
                silence.cancel()
            return c.received, done

    with engine_servers(tmp_path / "engines", stt=stt, tts=tts) as servers:
        with voicechat_on(settings_of(servers), tmp_path / "voicechat", token) as server:
            received, done = run(talk(server.ws_url))
            with urllib.request.urlopen(server.http_url + "health/detailed", timeout=30) as response:
                engines = json.loads(response.read())["engines"]
    finals = [m["text"] for m in received.of_type("final_transcript")]
    assert len(finals) == 1 and same_words(finals[0], QUESTION), finals
    assert done["text"].strip(), done
    audio = np.concatenate([np.frombuffer(a.pcm, np.int16) for _t, a in received.audio
                            if a.generation == done["generation"]] or [np.zeros(0, np.int16)])
    assert len(audio) >= 0.5 * 16000 and np.abs(audio.astype(np.int32)).max() > 1000, len(audio)
    assert not received.of_type("error"), received.of_type("error")
    for stage, endpoint in (("stt", servers["stt"].settings["stt.endpoint"]),
                            ("tts", servers["tts"].settings["tts.endpoint"]),
                            ("llm", servers["llm"].settings["llm.endpoint"])):
        remote = engines[stage]["remote"]  # /health/detailed shows where each stage runs and that it answers
        assert remote["reachable"] is True and str(remote["endpoint"]).startswith(endpoint.rstrip("/")), remote
