"""The real page in headless Chromium over HTTPS, the microphone faked from an espeak-ng WAV.

Chromium loops the WAV: the user says a sample sentence, the reply (long, so it
is still playing) starts, then the sentence comes round again and barges in,
which must flush the page's playback. Needs Debian's chromium and Playwright;
``.ci/run`` installs both (VOICECHAT_BROWSER_TESTS=1).
"""

from __future__ import annotations

import os
import re
import wave
from pathlib import Path

import numpy as np
import pytest
import soxr
from support.engines import scripted_engines
from support.server import TOKEN, running_server
from support.services import need

from voicechat.engines.scripted.llm import ScriptedLLM
from voicechat.engines.scripted.stt import ScriptedTranscriber
from voicechat.speech_samples import SAMPLE_SENTENCES, speech_16k
from voicechat.tts.espeak_engine import EspeakEngine
from voicechat.tts.pool import TTSPool

pytestmark = pytest.mark.browser
ARTIFACTS = Path(os.environ.get("VOICECHAT_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))


def _browser_or_skip() -> str:
    """The chromium to drive (skips, or fails under VOICECHAT_BROWSER_TESTS=1, without it or Playwright)."""
    chromium = need("chromium", flag="VOICECHAT_BROWSER_TESTS")
    pytest.importorskip("playwright.sync_api")
    return chromium


def fake_mic_wav(path: Path, text: str, rate: int = 48000) -> Path:
    """0.5 s silence, the sentence, 6 s silence: looped by Chromium, the sentence recurs mid-reply."""
    voice = speech_16k(text).astype(np.float32) / 32768
    audio = np.concatenate([np.zeros(8000, np.float32), voice, np.zeros(16000 * 6, np.float32)])
    pcm = (np.clip(soxr.resample(audio, 16000, rate), -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def test_page_talks_plays_and_flushes_on_barge_in(make_manager, tmp_path):
    chromium = _browser_or_skip()
    from playwright.sync_api import expect, sync_playwright

    text = SAMPLE_SENTENCES[1]
    wav = fake_mic_wav(tmp_path / "mic.wav", text)
    engines = scripted_engines(
        llm=ScriptedLLM(reply_words=150, token_s=0.01),
        tts=TTSPool(lambda: EspeakEngine(chunk_ms=40), workers=1),
        transcriber=ScriptedTranscriber({t: speech_16k(t) for t in SAMPLE_SENTENCES}),
    )
    manager = make_manager(engines)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    console_errors: list[str] = []
    with running_server(manager, tmp_path / "data", tls="on") as server, sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium, headless=True,
            args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={wav}", "--autoplay-policy=no-user-gesture-required",
            ],
        )
        try:
            context = browser.new_context(ignore_https_errors=True, viewport={"width": 430, "height": 860})
            context.grant_permissions(["microphone"])
            page = context.new_page()
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: console_errors.append(str(e)))
            page.goto(f"https://localhost:{server.port}/#token={TOKEN}")
            page.click("#start")
            expect(page.locator("#status")).to_have_attribute("data-status", "connected", timeout=15000)

            user = page.locator("#conversation .msg.user").first
            expect(user).to_contain_text(text, timeout=30000)
            assistant = page.locator("#conversation .msg.assistant").first
            expect(assistant).to_contain_text("You said:", timeout=15000)
            playback = page.locator("#playback")
            expect(playback).to_have_attribute("data-playing", "true", timeout=15000)
            # (wait_for_function would need 'unsafe-eval', which the page's CSP rightly forbids)
            expect(playback).to_have_attribute("data-played", re.compile(r"^[1-9]\d{4,}$"), timeout=15000)
            page.screenshot(path=str(ARTIFACTS / "browser-conversation.png"), full_page=True)

            # The looped sentence comes back while the reply plays: barge-in flushes playback.
            expect(playback).to_have_attribute("data-flushes", re.compile(r"^[1-9]\d*$"), timeout=30000)
            expect(page.locator("#conversation .msg.user")).to_have_count(2, timeout=30000)
            expect(page.locator("#conversation .msg.user").nth(1)).to_contain_text(text, timeout=30000)
            page.screenshot(path=str(ARTIFACTS / "browser-barge-in.png"), full_page=True)
            stats = page.evaluate("window.voicechat.stats()")
        finally:
            browser.close()
    assert stats["framesSent"] > 100, stats
    assert stats["audioFramesReceived"] > 0, stats
    assert not console_errors, console_errors
