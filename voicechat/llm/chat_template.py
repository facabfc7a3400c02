"""Chat templates: render a conversation into the prompt text a model was trained on.

GGUF files carry their template as Jinja source (``tokenizer.chat_template``), written for
Hugging Face's renderer; it is rendered here the same way llama-cpp-python's
``Jinja2ChatFormatter`` does (sandboxed, ``trim_blocks``/``lstrip_blocks``, ``raise_exception``,
``bos_token``/``eos_token``), so templates that work there work here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from voicechat.core.history import ChatMessage

# Used when a GGUF has no template and none is configured (most instruction models understand it).
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


class ChatTemplateError(ValueError):
    """The template does not compile or fails to render; the message names its source."""


def _raise_exception(message: str) -> None:
    raise ChatTemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


class ChatTemplate:
    """A compiled Jinja chat template; ``source`` names where it came from for error messages."""

    def __init__(self, template: str, *, bos_token: str = "", eos_token: str = "", source: str = "template") -> None:
        env = ImmutableSandboxedEnvironment(
            loader=jinja2.BaseLoader(), trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
        )
        env.filters["tojson"] = _tojson
        try:
            self._template = env.from_string(template)
        except jinja2.TemplateSyntaxError as exc:
            raise ChatTemplateError(f"chat template from {source} does not compile: {exc}") from exc
        self.text = template
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token

    def render(self, messages: Sequence[ChatMessage], *, add_generation_prompt: bool = True) -> str:
        try:
            return self._template.render(
                messages=[m.as_dict() for m in messages],
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                add_generation_prompt=add_generation_prompt,
                raise_exception=_raise_exception,
                strftime_now=lambda fmt: datetime.now().strftime(fmt),
            )
        except ChatTemplateError:
            raise
        except jinja2.TemplateError as exc:
            raise ChatTemplateError(f"chat template from {self.source} failed to render: {exc}") from exc
