"""Chat templates: a list of messages -> the one prompt string the model was trained on.

    template = chat_template_for(gguf_file, tokenizer)
    prompt = template.render([{"role": "user", "content": "Hi"}])   # "<|im_start|>user\\nHi<|im_end|>\\n..."
    ids = tokenizer.encode_chat(prompt)                               # specials parsed, BOS once

Where the template comes from, first match wins:
  1. a Modelfile ``TEMPLATE`` override (Ollama's Go-template syntax, see ``go_template.py``),
  2. ``tokenizer.chat_template`` in the GGUF (Jinja, rendered exactly as HF transformers does),
  3. a built-in template for the model family (Gemma 3's GGUF has none), chosen from
     ``general.architecture`` and the vocabulary: gemma, llama3, chatml,
  4. raw mode ``{{ .Prompt }}``: the last user message as it is.

``render(messages, continue_final_message=True)`` ends the prompt inside the final message,
right after its content (HF's prefill): how a chat ending with an assistant message is continued.

Jinja runs in ``ImmutableSandboxedEnvironment`` configured like transformers'
``apply_chat_template`` (trim_blocks, lstrip_blocks, loopcontrols, raise_exception,
strftime_now, a tojson that keeps key order and does not HTML-escape). A template is
untrusted code: rendering is bounded in time and output size, and anything it raises
becomes a :class:`ChatTemplateError` with a one-line message.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
import jinja2.sandbox
import jinja2.utils

from refllm.errors import InvalidRequest

MAX_RENDER_SECONDS = 2.0
MAX_RENDER_CHARS = 8_000_000
MAX_REPEAT_CHARS = 1_000_000  # 'x' * n inside a template


class ChatTemplateError(InvalidRequest):
    """A template that does not parse, raises, loops, or reaches for what the sandbox forbids."""


# =========================================================================== messages


def normalize_messages(messages: Any) -> list[dict]:
    """OpenAI/Ollama-style messages -> plain dicts every template understands.

    * content given as parts ``[{"type": "text", "text": ...}, ...]`` -> the texts joined by "\\n"
    * ``content: null`` (an assistant turn that only calls tools) -> ""
    * tool calls: ``arguments`` given as a JSON string -> the decoded object (what HF templates expect)
    * tool results (role "tool") keep ``tool_call_id`` / ``name``; non-string content -> JSON text
    """
    if not isinstance(messages, (list, tuple)):
        raise InvalidRequest(f"messages must be a list, got {type(messages).__name__}")
    normalized = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRequest(f"message {index} must be an object with 'role' and 'content'")
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise InvalidRequest(f"message {index} has no 'role'")
        out = {key: value for key, value in message.items() if value is not None}
        out["role"] = role
        out["content"] = _content_text(message.get("content"), index)
        if message.get("tool_calls"):
            out["tool_calls"] = [_normalize_tool_call(call, index) for call in message["tool_calls"]]
        normalized.append(out)
    return normalized


def _content_text(content: Any, index: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type") in ("text", "input_text", None) and "text" in part:
                texts.append(str(part["text"]))
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise InvalidRequest(f"message {index}: content part of type '{kind}' is not supported (text only)")
        return "\n".join(texts)
    if isinstance(content, (dict, int, float, bool)):
        return json.dumps(content, ensure_ascii=False)
    raise InvalidRequest(f"message {index}: content must be a string or a list of text parts")


def _normalize_tool_call(call: Any, index: int) -> dict:
    if not isinstance(call, dict):
        raise InvalidRequest(f"message {index}: each tool call must be an object")
    call = dict(call)
    function = dict(call.get("function") or {})
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            function["arguments"] = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            pass  # keep the text; the template prints it as it is
    call["function"] = function
    call.setdefault("type", "function")
    return call


# =========================================================================== the Jinja sandbox


class _BoundedSandbox(jinja2.sandbox.ImmutableSandboxedEnvironment):
    """HF's sandbox, plus caps on ``'x' * n``, ``a ** b`` and ``list + list`` so that one
    expression (or a loop doubling a value) can't eat the memory before the time limit hits."""

    intercepted_binops = frozenset({"*", "**", "+"})

    def call_binop(self, context, operator, left, right):
        if operator == "**":
            if isinstance(right, int) and abs(right) > 1024:
                raise jinja2.sandbox.SecurityError("exponent too large in chat template")
            return left**right
        if operator == "+":
            if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
                if len(left) + len(right) > MAX_RENDER_CHARS:
                    raise jinja2.sandbox.SecurityError("value too large in chat template")
            return left + right
        for sequence, count in ((left, right), (right, left)):
            if isinstance(sequence, (str, list, tuple)) and isinstance(count, int):
                if len(sequence) * max(count, 0) > MAX_REPEAT_CHARS:
                    raise jinja2.sandbox.SecurityError("repetition too large in chat template")
        return left * right


class _Namespace(jinja2.utils.Namespace):
    """``namespace()`` that refuses underscore names (as transformers does)."""

    def __init__(*args, **kwargs):  # same signature trick as jinja2.utils.Namespace
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.sandbox.SecurityError(f"chat templates cannot set underscore attributes ({name!r})")


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


def jinja_environment(hf_whitespace: bool = True) -> jinja2.Environment:
    """The sandbox chat templates run in; ``hf_whitespace`` = transformers' trim_blocks/lstrip_blocks."""
    env = _BoundedSandbox(trim_blocks=hf_whitespace, lstrip_blocks=hf_whitespace,
                          extensions=[jinja2.ext.loopcontrols], undefined=jinja2.Undefined)
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["namespace"] = _Namespace
    return env


def compile_template(source: str, hf_whitespace: bool = True) -> jinja2.Template:
    if not isinstance(source, str):
        raise ChatTemplateError(f"chat template must be text, got {type(source).__name__}")
    try:
        return jinja_environment(hf_whitespace).from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise ChatTemplateError(f"chat template does not parse (line {e.lineno}): {e.message}") from None
    except (jinja2.TemplateError, RecursionError, MemoryError) as e:
        raise ChatTemplateError(f"chat template does not parse: {e}") from None


class _Deadline(Exception):
    pass


def render_bounded(template: jinja2.Template, context: dict) -> str:
    """Render with a wall-clock limit and an output cap; every failure -> ChatTemplateError.

    The time limit works by tracing only the template's own compiled code (filename
    "<template>"): each of its lines checks the clock, so even a loop with an empty body stops.
    """
    deadline = time.monotonic() + MAX_RENDER_SECONDS

    def trace(frame, event, arg):
        if time.monotonic() > deadline:
            raise _Deadline
        if event == "call" and frame.f_code.co_filename != "<template>":
            return None  # don't trace lines of jinja's or Python's own functions
        return trace

    previous = sys.gettrace()
    sys.settrace(trace)
    try:
        pieces, size = [], 0
        for piece in template.generate(**context):
            size += len(piece)
            if size > MAX_RENDER_CHARS:
                raise ChatTemplateError(f"chat template output exceeds {MAX_RENDER_CHARS} characters")
            pieces.append(piece)
        return "".join(pieces)
    except _Deadline:
        raise ChatTemplateError(f"chat template took longer than {MAX_RENDER_SECONDS:g} s to render (a loop?)") from None
    except jinja2.sandbox.SecurityError as e:
        raise ChatTemplateError(f"chat template was stopped by the sandbox: {e}") from None
    except jinja2.TemplateError as e:
        raise ChatTemplateError(f"chat template error: {e.message if getattr(e, 'message', None) else e}") from None
    except RecursionError:
        raise ChatTemplateError("chat template recursed too deeply") from None
    except MemoryError:
        raise ChatTemplateError("chat template ran out of memory") from None
    except ChatTemplateError:
        raise
    except Exception as e:  # a template is code: TypeError, KeyError, ... are its bugs, not ours
        raise ChatTemplateError(f"chat template failed: {type(e).__name__}: {e}") from None
    finally:
        sys.settrace(previous)


# =========================================================================== templates


@dataclass
class ChatTemplate:
    """A Jinja chat template (from the GGUF or built in) with the model's special token texts."""

    source: str
    name: str = "gguf"  # "gguf", "gemma", "llama3", "chatml" (built-ins) or "modelfile"
    bos_token: str = ""
    eos_token: str = ""

    def __post_init__(self):
        self._compiled = compile_template(self.source)

    def render(self, messages: list[dict], tools: list[dict] | None = None, add_generation_prompt: bool = True,
               continue_final_message: bool = False, **extra: Any) -> str:
        """The prompt for ``messages``; ``continue_final_message``: end it inside the final message,
        right after its content, for the model to continue (``add_generation_prompt`` is then ignored)."""
        messages = normalize_messages(messages)
        if continue_final_message and messages:
            return self._render_continuing(messages, tools, extra)
        return self._render(messages, tools, add_generation_prompt, extra)

    def _render(self, messages: list[dict], tools: list[dict] | None, add_generation_prompt: bool, extra: dict) -> str:
        context = dict(extra)
        context.update(
            messages=messages,
            tools=tools or None,
            add_generation_prompt=bool(add_generation_prompt),
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )
        return render_bounded(self._compiled, context)

    def _render_continuing(self, messages: list[dict], tools: list[dict] | None, extra: dict) -> str:
        """HF transformers' ``continue_final_message``: mark the end of the final content, render
        without a generation prompt, cut at the mark (the end-of-turn text after it goes).

        A template that trims the content also trims the mark's trailing space: then the
        content's own trailing whitespace goes too, as the template would have dropped it.
        A template that leaves the final message out gets the ordinary generation prompt.
        """
        content = messages[-1]["content"]
        marked = [*messages[:-1], {**messages[-1], "content": content + _CONTINUE_MARK}]
        text = self._render(marked, tools, False, extra)
        at = text.rfind(_CONTINUE_MARK.rstrip())
        if at < 0:
            return self._render(messages, tools, True, extra)
        if text.startswith(_CONTINUE_MARK, at):
            return text[:at]
        return text[:at].removesuffix(content[len(content.rstrip()):])


_CONTINUE_MARK = "REFLLM_CONTINUE_FINAL_MESSAGE "  # the space tells whether the template trimmed the content


# Built-in templates for GGUFs that carry none. They never add BOS: the tokenizer does (add_bos).
GEMMA_TEMPLATE = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') + (message['content'] | trim) + '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)
CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)
LLAMA3_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + (message['content'] | trim) + '<|eot_id|>' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif -%}"
)
BUILTIN_TEMPLATES = {"gemma": GEMMA_TEMPLATE, "chatml": CHATML_TEMPLATE, "llama3": LLAMA3_TEMPLATE}
RAW_TEMPLATE = "{{ .Prompt }}"  # Ollama's raw form: the user's text as it is


def builtin_template_name(gguf_file, tokenizer) -> str | None:
    """Which built-in template fits a model that has none: by architecture, then by vocabulary."""
    architecture = str(gguf_file.metadata.get("general.architecture", ""))
    has = tokenizer.token_id
    if architecture.startswith("gemma") or has("<start_of_turn>") is not None:
        return "gemma"
    if has("<|start_header_id|>") is not None and has("<|eot_id|>") is not None:
        return "llama3"
    if has("<|im_start|>") is not None and has("<|im_end|>") is not None:
        return "chatml"
    return None


def chat_template_for(gguf_file, tokenizer, override: str | None = None):
    """The template a model renders chats with (see the module docstring for the order)."""
    bos = tokenizer.raw_token(tokenizer.bos_id) if tokenizer.bos_id is not None else ""
    eos = tokenizer.raw_token(tokenizer.eos_id) if tokenizer.eos_id is not None else ""
    if override is not None:
        from refllm.tokenizer.go_template import GoChatTemplate

        return GoChatTemplate(override, name="modelfile")
    source = gguf_file.metadata.get("tokenizer.chat_template")
    if isinstance(source, str) and source.strip():
        return ChatTemplate(source, "gguf", bos, eos)
    name = builtin_template_name(gguf_file, tokenizer)
    if name is not None:
        return ChatTemplate(BUILTIN_TEMPLATES[name], name, bos, eos)
    from refllm.tokenizer.go_template import GoChatTemplate

    return GoChatTemplate(RAW_TEMPLATE, name="raw")
