"""One simulated browser for `bench load`: an open microphone and a scripted user.

The microphone sends a 20 ms frame on every tick of its own real-time clock,
speech when the user is talking and silence otherwise, exactly as the web
page's capture worklet does. The user speaks a sentence, waits for the reply
(or interrupts it on purpose), pauses, and speaks again; every turn becomes a
``TurnRecord``. Waiting is on the received messages, never on sleeps.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import websockets

from voicechat.audio import frame_rms
from voicechat.bench.load_stats import TurnRecord
from voicechat.server.client import Received, VoiceClient
from voicechat.server.protocol import encode_client_audio

RATE = 16000
FRAME = RATE // 50  # 20 ms
# A barge-in that begins this close to (or after) the end of the reply's audio may find the reply already over.
LATE_BARGE_SLACK_S = 0.3


@dataclass(frozen=True)
class Utterance:
    text: str
    pcm: np.ndarray  # int16 at 16 kHz
    voiced_end: int  # index just past the last voiced sample
    voiced_start: int = 0  # index of the first voiced 10 ms frame (espeak-ng leads with up to 50 ms of silence)


def utterance(text: str, pcm: np.ndarray, gain: float = 1.0) -> Utterance:
    """Speech with its voiced start and end found from 10 ms energy frames (espeak-ng pads its WAVs with silence)."""
    scaled = np.clip(pcm.astype(np.float32) * gain, -32768, 32767).astype(np.int16)
    hop = 160
    energy = frame_rms(scaled, hop)
    voiced = np.flatnonzero(energy > 0.01 * energy.max())  # -40 dB: where the sound really ends
    end = (int(voiced[-1]) + 1) * hop if len(voiced) else len(scaled)
    return Utterance(text, scaled, end, int(voiced[0]) * hop if len(voiced) else 0)


class Microphone:
    """One client's open microphone: a frame per 20 ms tick; ``say()`` queues speech and reports its timing."""

    def __init__(self, client: VoiceClient) -> None:
        self.client = client
        self._pending: deque[tuple[np.ndarray, tuple[asyncio.Future[float], ...]]] = deque()
        self._seq = 0
        self._silence = np.zeros(FRAME, np.int16)
        self.closed = False

    def say(self, speech: Utterance) -> tuple[asyncio.Future[float], asyncio.Future[float]]:
        """Queue an utterance; the futures resolve with the send times of its first and last voiced frame.

        A frame is sent when its last sample is due, so a voiced sample is in the client's stream when
        the frame holding it leaves: the same moment for the onset as for the end."""
        loop = asyncio.get_running_loop()
        onset, end = loop.create_future(), loop.create_future()
        frames = [speech.pcm[i : i + FRAME] for i in range(0, len(speech.pcm), FRAME)]
        first_voiced, last_voiced = speech.voiced_start // FRAME, max(0, (speech.voiced_end - 1) // FRAME)
        for k, frame in enumerate(frames):
            markers = tuple(f for f, at in ((onset, first_voiced), (end, last_voiced)) if at == k)
            self._pending.append((frame, markers))
        return onset, end

    def send_frame(self) -> None:
        """Send the next frame now (speech if queued, else silence)."""
        ws = self.client.ws
        assert ws is not None
        frame, markers = self._pending.popleft() if self._pending else (self._silence, ())
        if len(frame) < FRAME:
            frame = np.concatenate([frame, self._silence[: FRAME - len(frame)]])
        payload = encode_client_audio(self._seq, int(time.time() * 1e6), frame.tobytes())
        try:
            # The sans-I/O protocol frames the message and the transport buffers it: the same bytes as
            # ``await ws.send()`` without a coroutine and context manager per frame. At 100 clients the
            # benchmark's own cost would otherwise crowd out the server it measures on a 2-core box.
            ws.protocol.send_binary(payload)
            ws.send_data()
        except (websockets.ConnectionClosed, websockets.InvalidState):
            self.closed = True
            return
        self._seq += 1
        for marker in markers:
            if not marker.done():
                marker.set_result(time.monotonic())


class MicrophoneBank:
    """Drives every client's microphone from one real-time clock, in ``groups`` staggered slots per 20 ms.

    One timer for all clients instead of one per client keeps the load generator cheap; the slots
    spread the clients' frames over the 20 ms as independent browsers would.
    """

    def __init__(self, groups: int = 4) -> None:
        self.groups = groups
        self.late_ticks = 0  # slots the load generator itself could not keep
        self._mics: list[list[Microphone]] = [[] for _ in range(groups)]

    def add(self, mic: Microphone, index: int) -> None:
        self._mics[index % self.groups].append(mic)

    def remove(self, mic: Microphone) -> None:
        for group in self._mics:
            if mic in group:
                group.remove(mic)

    async def run(self) -> None:
        slot = FRAME / RATE / self.groups
        start, tick = time.monotonic(), 0
        while True:
            delay = start + tick * slot - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -FRAME / RATE:
                self.late_ticks += 1
            for mic in list(self._mics[tick % self.groups]):
                if not mic.closed:
                    mic.send_frame()
            tick += 1


@dataclass
class ClientResult:
    turns: list[TurnRecord] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    audio_gaps: int = 0  # reply audio frames missing within a generation that was not flushed
    stalls_ms: list[float] = field(default_factory=list)  # per reply: silence heard inside it (playback_stalls)
    late_barges: int = 0  # planned barge-ins that began after the reply had played out: nothing to flush


def playback_stalls(received: Received, tolerance_ms: float = 10.0) -> dict[int, float]:
    """Per reply (generation), the ms a listener playing each frame on arrival heard nothing in the middle.

    Playback starts with the first frame and runs at real time; a frame that arrives after the audio before it
    has played out leaves a hole of the difference (stalls under ``tolerance_ms`` each are a client's jitter
    buffer and not counted). Replies cut by a flush count up to the cut.
    """
    ends: dict[int, float] = {}  # generation -> when its audio received so far has played out
    stalls: dict[int, float] = {}
    for at, frame in received.audio:
        gen = frame.generation
        if gen in ends and at - ends[gen] > tolerance_ms / 1000:
            stalls[gen] = stalls.get(gen, 0.0) + (at - ends[gen]) * 1000
        ends[gen] = max(ends.get(gen, at), at) + len(frame.pcm) / 2 / frame.sample_rate
        stalls.setdefault(gen, 0.0)
    return {gen: round(ms, 1) for gen, ms in stalls.items()}


def audio_gaps(received: Received) -> int:
    """Holes in a generation's audio (each frame must start where the previous ended) unless it was flushed."""
    flushed = {m["generation"] for m in received.of_type("flush_playback")}
    expected: dict[int, int] = {}
    gaps = 0
    for _, frame in received.audio:
        gen = frame.generation
        if gen in expected and frame.start_sample != expected[gen] and (gen + 1) not in flushed:
            gaps += 1
        expected[gen] = frame.start_sample + len(frame.pcm) // 2
    return gaps


class Tracker:
    """What a client has received, digested incrementally (the load client must stay cheap at 100 sessions)."""

    def __init__(self, received: Received) -> None:
        self.received = received
        self._messages = self._audio = 0
        self.finals: list[str] = []
        self.first_audio: dict[int, float] = {}  # generation -> arrival of its first frame
        self.last_audio: dict[int, float] = {}
        self.audio_s: dict[int, float] = {}  # generation -> seconds of audio received
        self.flushes: list[tuple[float, int]] = []  # (arrival, generation)
        self.metrics: dict[int, dict[str, float]] = {}
        self.ends: dict[int, dict[str, float | None]] = {}  # generation -> its turn_metrics' end_of_turn
        self.replies: dict[int, str] = {}  # generation -> the reply's text so far
        self.state: tuple[str, int] = ("", 0)

    def update(self, _: Received | None = None) -> Tracker:
        r = self.received
        for at, message in zip(r.message_times[self._messages :], r.messages[self._messages :], strict=True):
            kind, gen = message.get("type"), message.get("generation") or 0
            if kind == "final_transcript":
                self.finals.append(message.get("text", ""))
            elif kind == "flush_playback":
                self.flushes.append((at, gen))
            elif kind == "assistant_text_delta":
                self.replies[gen] = self.replies.get(gen, "") + str(message.get("text", ""))
            elif kind == "turn_metrics":
                self.metrics[gen] = dict(message.get("stamps") or {})
                if message.get("end_of_turn"):
                    self.ends[gen] = dict(message["end_of_turn"])
            elif kind == "state_changed":
                self.state = (message.get("state", ""), gen)
        self._messages = len(r.messages)
        for at, frame in r.audio[self._audio :]:
            self.first_audio.setdefault(frame.generation, at)
            self.last_audio[frame.generation] = at
            self.audio_s[frame.generation] = self.audio_s.get(frame.generation, 0.0) + len(frame.pcm) / 2 / RATE
        self._audio = len(r.audio)
        return self

    def first_audio_after(self, generation: int) -> tuple[float, int] | None:
        newer = [(at, gen) for gen, at in self.first_audio.items() if gen > generation]
        return min(newer) if newer else None

    def flush_after(self, generation: int) -> float | None:
        return next((at for at, gen in self.flushes if gen > generation), None)

    def played_out_by(self, generation: int) -> float | None:
        """When the reply ``generation`` ends playing at real time from its first frame (None: no audio)."""
        if generation not in self.first_audio:
            return None
        return max(self.first_audio[generation] + self.audio_s[generation], self.last_audio[generation])

    def listening_after(self, generation: int) -> bool:
        return self.state[0] == "listening" and self.state[1] >= generation


class SimulatedUser:
    """Talks through one connection for ``turns`` turns; every ``barge_every``-th reply is interrupted."""

    def __init__(
        self, index: int, url: str, token: str, script: Sequence[Utterance], *, turns: int, min_turns: int = 1,
        deadline_s: float | None = None, barge_every: int = 3, phase_s: float = 0.0, start_delay_s: float = 0.0,
        pause_s: float = 0.8, barge_after_s: float = 0.3, check_text: bool = True, leave_mid_reply: bool = False,
        turn_timeout_s: float = 30.0,
    ) -> None:
        self.index, self.url, self.token, self.script = index, url, token, script
        self.turns, self.min_turns, self.deadline_s = turns, min_turns, deadline_s
        self.barge_every, self.start_delay_s = barge_every, start_delay_s
        self.pause_s, self.barge_after_s, self.check_text = pause_s, barge_after_s, check_text
        self.leave_mid_reply, self.turn_timeout_s = leave_mid_reply, turn_timeout_s
        self.result = ClientResult()
        self._rng = random.Random(index)  # reproducible, different per user

    async def run(
        self, connected: asyncio.Event | None = None, go: asyncio.Event | None = None,
        bank: MicrophoneBank | None = None,
    ) -> ClientResult:
        """Connect, say hello, (wait for ``go``), then speak the turns; errors are recorded, not raised."""
        client = VoiceClient(self.url, self.token, output_sample_rate=RATE)
        mic: Microphone | None = None
        bank_task: asyncio.Task[None] | None = None
        try:
            await client.connect()
            await client.wait_type("session", timeout=30)
            if connected is not None:
                connected.set()
            if go is not None:
                await go.wait()
            mic = Microphone(client)
            if bank is None:  # a lone client drives its own microphone
                bank = own_bank = MicrophoneBank(groups=1)
                bank_task = asyncio.create_task(own_bank.run())
            bank.add(mic, self.index)
            await self._converse(client, mic)
        except (TimeoutError, AssertionError, OSError, websockets.WebSocketException) as error:
            self.result.errors.append(f"session {self.index}: {type(error).__name__}: {error}"[:300])
        finally:
            if mic is not None and bank is not None:
                bank.remove(mic)
            if bank_task is not None:
                bank_task.cancel()
                await asyncio.gather(bank_task, return_exceptions=True)
            await client.close()
        received = client.received
        self.result.errors += [
            f"session {self.index}: server error {m.get('code')}: {m.get('message')}" for m in received.of_type("error")
        ]
        self.result.audio_gaps = audio_gaps(received)
        stalls = playback_stalls(received)
        self.result.stalls_ms = list(stalls.values())
        for turn in self.result.turns:
            turn.stall_ms = stalls.get(turn.generation) if turn.generation is not None else None
        return self.result

    def _more(self, t: int, started: float, interrupting: TurnRecord | None) -> bool:
        """Another turn? Always when a barge-in is due, else up to ``turns`` (past the deadline: ``min_turns``)."""
        if interrupting is not None:
            return True
        if t >= self.turns:
            return False
        return t < self.min_turns or self.deadline_s is None or time.monotonic() - started < self.deadline_s

    async def _wait(self, client: VoiceClient, predicate: Callable[[Received], bool], turn: int, what: str) -> None:
        """``client.wait_for`` whose timeout names the turn and what it waited for (the error sample says)."""
        try:
            await client.wait_for(predicate, self.turn_timeout_s)
        except TimeoutError:
            raise TimeoutError(f"turn {turn}: no {what} within {self.turn_timeout_s:.0f} s") from None

    def _barged(self, seen: Tracker, interrupted: TurnRecord, turn: TurnRecord, finals0: int) -> bool:
        """Whether the barge-in of ``turn`` into ``interrupted``'s reply is settled; records how when it is.

        Settled by the server's flush (the outbox is in order: no stale frame follows it), or, without one,
        by the turn's final transcript where the reply had played out (its audio at real time from its first
        frame, with ``LATE_BARGE_SLACK_S`` for the server's own estimate) before the barge-in began: then
        there was nothing to interrupt and the turn counts as an ordinary one. A final transcript with no
        flush while the reply was still playing is an error: the interruption was never acknowledged.
        """
        seen.update()
        stale = interrupted.generation or 0
        flushed = seen.flush_after(stale)
        if flushed is not None:
            interrupted.stale_until = max(flushed, seen.last_audio.get(stale, 0.0))
            return True
        if len(seen.finals) <= finals0:
            return False
        ended = seen.played_out_by(stale)
        if ended is None or turn.onset < ended - LATE_BARGE_SLACK_S:
            raise AssertionError(f"turn {turn.index}: the reply was playing and no flush came before the transcript")
        interrupted.interrupted_at, turn.barged = None, False
        self.result.late_barges += 1
        return True

    async def _converse(self, client: VoiceClient, mic: Microphone) -> None:
        seen = Tracker(client.received)
        interrupting: TurnRecord | None = None  # the turn whose reply the next utterance cuts off
        started = time.monotonic()
        await asyncio.sleep(self.start_delay_s)  # users do not all start at once; the microphone sends silence
        t = 0
        while self._more(t, started, interrupting):
            speech = self.script[(self.index + t) % len(self.script)]
            seen.update()
            # The last reply heard: this turn's reply is newer. (Not the newest generation seen: the turn's own
            # user events and the state change to listening after a reply already carry the next reply's.)
            gen0, finals0 = max(seen.first_audio, default=0), len(seen.finals)
            onset_f, end_f = mic.say(speech)
            onset = await onset_f
            if interrupting is not None:
                interrupting.interrupted_at = onset
            end = await end_f
            turn = TurnRecord(self.index, t, speech.text, onset, end, barged=interrupting is not None)
            self.result.turns.append(turn)
            if interrupting is not None:
                settled = partial(self._barged, seen, interrupting, turn, finals0)
                await self._wait(client, lambda _, settled=settled: settled(), t, "flush")
                interrupting = None
            await self._wait(client, lambda _, n=finals0: len(seen.update().finals) > n, t, "final transcript")
            turn.transcript = seen.finals[finals0]
            if self.check_text and turn.transcript != speech.text:
                self.result.errors.append(f"session {self.index} turn {t}: heard {turn.transcript!r}")
            await self._wait(client, lambda _, g=gen0: seen.update().first_audio_after(g) is not None, t, "reply audio")
            turn.first_audio, gen = seen.first_audio_after(gen0)  # type: ignore[misc]
            turn.generation = gen
            t += 1
            if self.leave_mid_reply:
                turn.completed = True
                return
            if self.barge_every and t % self.barge_every == 0 and self._more(t, started, None):
                # Speak again into the reply: the scheduled barge-in (the next utterance is its own turn).
                await asyncio.sleep(max(0.0, turn.first_audio + self.barge_after_s - time.monotonic()))
                turn.completed = True
                interrupting = turn
                continue
            await self._wait(client, lambda _, g=gen: g in seen.update().metrics, t, "turn metrics")
            turn.stamps, turn.end_of_turn = seen.metrics[gen], seen.ends.get(gen)
            turn.completed = True
            await self._wait(client, lambda _, g=gen: seen.update().listening_after(g), t, "end of the reply")
            await asyncio.sleep(self._rng.uniform(0.5, 1.5) * self.pause_s)  # the user's own pause, not in step
        seen.update()
        for turn in self.result.turns:  # the replies cut on purpose: their metrics came with the barge-in
            if not turn.stamps and turn.generation in seen.metrics:
                turn.stamps, turn.end_of_turn = seen.metrics[turn.generation], seen.ends.get(turn.generation)
            if turn.generation is not None:
                turn.reply = seen.replies.get(turn.generation, "")
