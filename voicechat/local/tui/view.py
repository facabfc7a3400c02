"""Rendering of the terminal UI with rich: header, conversation, status line, keys.

``render`` snapshots the model at once (so the owner can call it under its
lock and hand the result to ``rich.live.Live``), while the layout is decided
when rich draws it: the QR code only appears when the screen is wide and tall
enough, and the conversation shows the most recent lines that fit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.padding import Padding
from rich.panel import Panel
from rich.rule import Rule
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from voicechat.core.events import EndOfTurn, TurnState
from voicechat.local.tui.model import LATENCY_STAGES, HeaderInfo, Line, TuiModel

STATE_LOOK: dict[TurnState, tuple[str, str]] = {
    TurnState.LISTENING: ("listening", "green"),
    TurnState.USER_SPEAKING: ("you're speaking", "cyan"),
    TurnState.THINKING: ("thinking", "yellow"),
    TurnState.ASSISTANT_SPEAKING: ("speaking", "blue"),
}
ROLE_LOOK: dict[str, tuple[str, str]] = {
    "user": ("you", "bold cyan"),
    "assistant": ("assistant", "bold blue"),
    "error": ("error", "bold red"),
    "info": ("·", "dim"),
}
STAGE_LABELS: dict[str, str] = {
    "endpointing": "end",
    "stt": "stt",
    "llm_first_token": "llm",
    "first_sentence": "sentence",
    "tts_first_audio": "tts",
    "voice_to_voice": "voice→voice",
}
LABEL_WIDTH = 9
METER_CELLS = 12
METER_FLOOR_DBFS = -60.0
MIN_INFO_WIDTH = 44
"""Columns the header's text keeps beside the QR code; below that the QR code goes."""
MIN_CONVERSATION_ROWS = 6
"""Rows the conversation keeps under a header with a QR code; below that the QR code goes."""


def render(model: TuiModel, header: HeaderInfo, width: int | None = None) -> RenderableType:
    """The whole screen for ``model``; ``width`` overrides the console's width."""
    return _Screen(
        header=replace(header, models=dict(header.models), join_urls=list(header.join_urls)),
        conversation=[_line(line, first=i == 0) for i, line in enumerate(model.lines)],
        status=_status(model),
        footer=_footer(model),
        width=width,
    )


# -- layout --------------------------------------------------------------------------------
@dataclass
class _Screen:
    header: HeaderInfo
    conversation: list[RenderableType]
    status: RenderableType
    footer: RenderableType
    width: int | None

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = min(self.width, options.max_width) if self.width else options.max_width
        height = options.height or console.height
        opts = options.update(width=width, min_width=width, max_width=width, height=None)
        status = console.render_lines(self.status, opts)
        footer = console.render_lines(self.footer, opts)
        fixed = len(status) + len(footer)
        qr_lines = self.header.qr.rstrip("\n").splitlines() if self.header.qr.strip() else []
        qr_width = max((len(q) for q in qr_lines), default=0)
        show_qr = bool(qr_lines) and (
            width >= qr_width + MIN_INFO_WIDTH + 4 and height >= len(qr_lines) + 2 + fixed + MIN_CONVERSATION_ROWS
        )
        head = console.render_lines(_header(self.header, qr_lines if show_qr else []), opts)
        rows = max(0, height - len(head) - fixed)
        body = _last_rows(console, opts, self.conversation, rows)
        blank = [Segment(" " * width)]
        body += [blank] * (rows - len(body))
        new_line = Segment.line()
        for row in [*head, *body, *status, *footer]:
            yield from row
            yield new_line


def _last_rows(
    console: Console, options: ConsoleOptions, items: list[RenderableType], rows: int
) -> list[list[Segment]]:
    """The bottom ``rows`` rendered rows of ``items``, rendering only what can show."""
    out: list[list[Segment]] = []
    for item in reversed(items):
        if len(out) >= rows:
            break
        out[:0] = console.render_lines(item, options)
    return out[max(0, len(out) - rows):] if rows else []


# -- parts ---------------------------------------------------------------------------------
def _header(info: HeaderInfo, qr_lines: list[str]) -> RenderableType:
    text = Text()
    models = [(kind, name) for kind, name in info.models.items() if name]
    for i, (kind, name) in enumerate(models):
        text.append("  ·  " if i else "", "dim")
        text.append(f"{kind} ", "dim")
        text.append(name)
    gpu = info.gpu or "none"
    text.append("\n")
    text.append_text(_pairs([("cpu", f"{info.cpu_percent:.0f}%"), ("gpu", gpu), ("sessions", str(info.sessions))]))
    text.append("\n")
    text.append_text(_pairs([("mic", info.input_device or "default"), ("speaker", info.output_device or "default")]))
    text.append("\n\n")
    if info.join_urls:
        text.append("join  ", "dim")
        text.append(info.join_urls[0], "bold")
        for url in info.join_urls[1:3]:
            text.append("\n      ")
            text.append(url)
        if qr_lines:
            text.append("\n      scan the code with a phone on the same network", "dim")
    else:
        text.append("LAN server off", "dim")
    text.overflow = "fold"
    body: RenderableType = text
    if qr_lines:
        grid = Table.grid(expand=True, padding=(0, 2))
        grid.add_column(ratio=1, overflow="fold")
        grid.add_column(no_wrap=True, justify="right")
        grid.add_row(text, Text("\n".join(qr_lines), no_wrap=True, overflow="crop"))
        body = grid
    return Panel(body, title="voicechat", title_align="left", border_style="dim", padding=(0, 1))


def _pairs(pairs: Iterable[tuple[str, str]]) -> Text:
    text = Text()
    for i, (key, value) in enumerate(pairs):
        text.append("  ·  " if i else "", "dim")
        text.append(f"{key} ", "dim")
        text.append(value)
    return text


def _line(line: Line, first: bool) -> RenderableType:
    label, label_style = ROLE_LOOK[line.role]
    body = Text(overflow="fold")
    if line.role == "user" and not line.final:
        body.append(line.stable)
        body.append(line.text[len(line.stable):], "dim italic")
    elif line.role == "error":
        body.append(line.text, "red")
    elif line.role == "info":
        body.append(line.text, "dim")
    else:
        body.append(line.text)
    if line.interrupted:
        body.append(" …(interrupted)", "dim italic")
    elif line.role == "assistant" and not line.final:
        body.append(" ▍", "dim")
    grid = Table.grid(padding=(0, 1))
    grid.add_column(width=LABEL_WIDTH, justify="right", no_wrap=True)
    grid.add_column(ratio=1, overflow="fold")
    grid.add_row(Text(label, label_style), body)
    if line.latency:
        grid.add_row(Text(""), Text(_latency_text(line.latency, line.end_of_turn), "dim"))
    return grid if first or line.role != "user" else Padding(grid, (1, 0, 0, 0))


def _latency_text(latency: dict[str, float], end: EndOfTurn | None = None) -> str:
    """The turn's stages in ms; after "end", what the end-of-turn judges said (where they were asked)."""
    judged = [f"{name} {p:.2f}" for name, p in (("words", end and end.words), ("sound", end and end.audio))
              if p is not None]
    why = f" ({', '.join(judged)})" if judged else ""
    parts = [f"{STAGE_LABELS[s]} {latency[s]:.0f}" + (why if s == "endpointing" else "")
             for s in LATENCY_STAGES if s in latency]
    return " · ".join(parts) + " ms"


def _status(model: TuiModel) -> RenderableType:
    name, colour = STATE_LOOK.get(model.state, (str(model.state), "white"))
    line = Text(" ")
    line.append("● ", colour)
    line.append(f"{name:<17}")
    line.append_text(_meter(model.level_dbfs, model.muted))
    if model.muted:
        line.append("   muted", "bold red")
    if model.push_to_talk:
        line.append("   push-to-talk: ", "dim")
        line.append("talking" if model.talking else "space to talk", "bold" if model.talking else "")
    if model.notice:
        line.append(f"   {model.notice}", "italic")
    last, median = model.last_latency(), model.median_latency()
    if not last:
        latency: RenderableType = Text(" latency   no turns yet", "dim")
    else:
        latency = Table.grid(padding=(0, 2))
        latency.add_column(no_wrap=True)
        for _ in LATENCY_STAGES:
            latency.add_column(justify="right", no_wrap=True)
        latency.add_row(Text(" latency ms", "dim"), *(Text(STAGE_LABELS[s], "dim") for s in LATENCY_STAGES))
        latency.add_row(Text(" last turn"), *(_ms(last, s) for s in LATENCY_STAGES))
        latency.add_row(Text(f" median of {model.turns()}"), *(_ms(median, s) for s in LATENCY_STAGES))
    return Group(Rule(style="bright_black"), line, latency)


def _ms(latency: dict[str, float], stage: str) -> Text:
    return Text(f"{latency[stage]:.0f}") if stage in latency else Text("–", "dim")


def _meter(dbfs: float, muted: bool) -> Text:
    level = max(METER_FLOOR_DBFS, min(0.0, dbfs))
    filled = round((level - METER_FLOOR_DBFS) / -METER_FLOOR_DBFS * METER_CELLS)
    style = "dim" if muted else ("yellow" if level > -6.0 else "green")
    text = Text("mic ", "dim")
    text.append("━" * filled, style)
    text.append("━" * (METER_CELLS - filled), "bright_black")
    text.append(f" {level:>3.0f} dB" if dbfs > METER_FLOOR_DBFS else "   –  dB", "dim")
    return text


def _footer(model: TuiModel) -> RenderableType:
    keys = [("m", "unmute" if model.muted else "mute"), ("t", "push-to-talk")]
    if model.push_to_talk:
        keys.append(("space", "talk"))
    voice = f"voice {model.voice}" if model.voice else "voice"
    keys += [("c", "clear"), ("v", voice), ("+/-", f"speed {round(model.speed, 2):g}×"), ("q", "quit")]
    text = Text(" ", overflow="fold")
    for i, (key, what) in enumerate(keys):
        text.append("   " if i else "")
        text.append(key, "bold")
        text.append(f" {what}", "dim")
    return text
