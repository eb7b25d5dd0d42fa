"""Tools: offered to the model in the prompt, called by the model in its output.

1. Offering. A chat template that knows tools (its source uses ``tools``) renders them
   itself. Otherwise (SmolLM2, Gemma 3, the built-in templates) a system message describes
   them in the Hermes/Qwen style the family fallback uses, and earlier tool calls and tool
   results in the conversation are written out as text the model can read:

       <tool_call>
       {"name": "get_weather", "arguments": {"city": "Paris"}}
       </tool_call>                                    (an assistant turn that called a tool)
       <tool_response>
       {"temperature": 21}
       </tool_response>                                (a ``role: tool`` message, sent as user)

2. Calling. ``parse_tool_calls`` finds the calls in the output, in any family's shape:
       Hermes / Qwen / ChatML   <tool_call>{"name": ..., "arguments": {...}}</tool_call>
       Llama 3                  {"name": ..., "parameters": {...}}  (optionally <|python_tag|>)
       generic JSON             {"name": ..., "arguments": {...}} or a list of such objects
   Only functions the request offered count as calls; anything else stays content.

3. Forcing. ``tool_choice`` "required" or a function name is honoured by constrained
   decoding: ``tool_call_grammar`` only allows one or more ``<tool_call>`` blocks whose JSON
   names an offered function and whose arguments follow its parameter schema.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field

from refllm.errors import InvalidRequest

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
MAX_PARALLEL_CALLS = 4  # a forced call with parallel calls allowed: at most this many blocks


@dataclass
class ToolCall:
    name: str
    arguments: dict
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")

    def ollama(self, index: int) -> dict:
        return {"function": {"index": index, "name": self.name, "arguments": self.arguments}}

    def openai(self, index: int | None = None) -> dict:
        call = {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": json.dumps(self.arguments, ensure_ascii=False)}}
        return call if index is None else {"index": index, **call}


# --------------------------------------------------------------------------- request fields


def check_tools(value, where: str = "tools") -> list[dict]:
    """``tools`` in any API's shape -> [{"type": "function", "function": {name, description, parameters}}]."""
    if value is None or value == []:
        return []
    if not isinstance(value, list):
        raise InvalidRequest(f"field {where!r} must be an array of tools")
    tools = []
    for i, tool in enumerate(value):
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise InvalidRequest(f"{where}[{i}] must be a function tool ({{\"type\": \"function\", ...}})")
        spec = tool.get("function", tool)  # chat nests it; the Responses API has it flat
        name = spec.get("name") if isinstance(spec, dict) else None
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", name):
            raise InvalidRequest(f"{where}[{i}] needs a function 'name' (letters, digits, _ . -; at most 64)")
        parameters = spec.get("parameters")
        if parameters is None:
            parameters = {"type": "object", "properties": {}}
        if not isinstance(parameters, dict):
            raise InvalidRequest(f"{where}[{i}].parameters must be a JSON schema object")
        description = spec.get("description") or ""
        if not isinstance(description, str):
            raise InvalidRequest(f"{where}[{i}].description must be a string")
        tools.append({"type": "function", "function": {"name": name, "description": description, "parameters": parameters}})
    names = [t["function"]["name"] for t in tools]
    if len(set(names)) != len(names):
        raise InvalidRequest(f"field {where!r} names a function twice")
    return tools


def check_tool_choice(value, tools: list[dict]) -> str:
    """``tool_choice`` -> "none", "auto", "required" or the name of the function to call."""
    if value is None:
        return "auto" if tools else "none"
    if value in ("none", "auto", "required"):
        choice = value
    elif isinstance(value, dict) and value.get("type") == "function":
        spec = value.get("function", value)
        choice = spec.get("name") if isinstance(spec, dict) else None
        if not isinstance(choice, str):
            raise InvalidRequest("field 'tool_choice' of type function needs the function's 'name'")
        if choice not in tool_names(tools):
            raise InvalidRequest(f"field 'tool_choice' names function {choice!r}, which is not in 'tools'")
    else:
        raise InvalidRequest("field 'tool_choice' must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", ...}")
    if choice == "required" and not tools:
        raise InvalidRequest("field 'tool_choice' is \"required\" but no 'tools' were given")
    return choice


def tool_names(tools: list[dict]) -> list[str]:
    return [t["function"]["name"] for t in tools]


# --------------------------------------------------------------------------- offering tools in the prompt


def template_knows_tools(template_source: str | None) -> bool:
    return bool(template_source) and "tools" in template_source


def tools_instructions(tools: list[dict]) -> str:
    """The family-fallback system text that offers ``tools`` (Hermes / Qwen 2.5 style)."""
    lines = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    return (
        "You can call functions. These are the functions, as JSON schemas:\n"
        f"<tools>\n{lines}\n</tools>\n"
        "To call a function, answer with one block per call, exactly like this:\n"
        f'{CALL_OPEN}\n{{"name": "<function name>", "arguments": {{<arguments as a JSON object>}}}}\n{CALL_CLOSE}'
    )


def messages_with_tools_as_text(messages: list[dict], tools: list[dict]) -> list[dict]:
    """For templates without tool support: offer ``tools`` in the system message; write past
    tool calls and tool results as text (see the module docstring)."""
    out = []
    for message in messages:
        role, content = message.get("role"), message.get("content") or ""
        if role == "assistant" and message.get("tool_calls"):
            blocks = [f"{CALL_OPEN}\n{json.dumps(call_as_json(c), ensure_ascii=False)}\n{CALL_CLOSE}" for c in message["tool_calls"]]
            out.append({"role": "assistant", "content": "\n".join(([content] if content else []) + blocks)})
        elif role == "tool":
            out.append({"role": "user", "content": f"<tool_response>\n{content}\n</tool_response>"})
        else:
            out.append({"role": role, "content": content})
    if tools:
        text = tools_instructions(tools)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + text}
        else:
            out.insert(0, {"role": "system", "content": text})
    return out


def call_as_json(call: dict) -> dict:
    """A tool call from a request message (OpenAI's or Ollama's shape) -> {"name", "arguments": object}."""
    function = call.get("function", call) if isinstance(call, dict) else {}
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            pass
    return {"name": function.get("name"), "arguments": arguments}


# --------------------------------------------------------------------------- forcing a call


def tool_call_grammar(tools: list[dict], choice: str, parallel: bool = True) -> str:
    """A Lark grammar (llguidance dialect) for "only tool calls": ``choice`` is "required"
    (any offered function) or one function's name. Each block's JSON is held to its schema."""
    chosen = tools if choice == "required" else [t for t in tools if t["function"]["name"] == choice]
    schemas = [{"type": "object", "properties": {"name": {"const": t["function"]["name"]},
                                                 "arguments": t["function"]["parameters"]},
                "required": ["name", "arguments"], "additionalProperties": False} for t in chosen]
    call_schema = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    more = f'("\\n" call){{0,{MAX_PARALLEL_CALLS - 1}}}' if parallel else ""
    return (
        f"start: call {more}\n"
        f'call: "{CALL_OPEN}\\n" body "\\n{CALL_CLOSE}"\n'
        f"body: %json {json.dumps(call_schema)}\n"
    )


# --------------------------------------------------------------------------- finding calls in the output


_HERMES_BLOCK = re.compile(re.escape(CALL_OPEN) + r"\s*(.*?)\s*(?:" + re.escape(CALL_CLOSE) + r"|$)", re.DOTALL)


def parse_tool_calls(text: str, tools: list[dict]) -> tuple[str, list[ToolCall]]:
    """Output text -> (the content left, the tool calls), for functions in ``tools``."""
    names = set(tool_names(tools))
    if CALL_OPEN in text:  # Hermes / Qwen blocks, anywhere in the text
        calls, kept = [], []
        position = 0
        for match in _HERMES_BLOCK.finditer(text):
            found = _calls_in_json(match.group(1), names)
            if found:
                kept.append(text[position:match.start()])
                calls += found
                position = match.end()
        kept.append(text[position:])
        return ("".join(kept).strip() if calls else text), calls
    body = text.strip()
    if body.startswith("<|python_tag|>"):  # Llama 3.1
        body = body[len("<|python_tag|>"):]
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", body, re.DOTALL)
    if fenced:
        body = fenced.group(1)
    calls = _calls_in_json(body, names)
    return ("" if calls else text), calls


def _calls_in_json(text: str, names: set[str]) -> list[ToolCall]:
    """A JSON object or list of objects naming offered functions -> calls ([] if it is not that)."""
    try:
        value = json.loads(text)
    except ValueError:
        return []
    items = value if isinstance(value, list) else [value]
    calls = []
    for item in items:
        if not isinstance(item, dict):
            return []
        function = item.get("function", item) if isinstance(item.get("function"), dict) else item
        name = function.get("name")
        arguments = function.get("arguments", function.get("parameters", {}))
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError:
                return []
        if name not in names or not isinstance(arguments, dict):
            return []
        calls.append(ToolCall(name, arguments))
    return calls


class ToolCallStream:
    """Streamed output -> content pieces and tool calls, as soon as each is certain.

    Text that may be (the start of) a tool call is held back: a ``<tool_call>`` block until
    it closes; an answer that begins with ``{``, ``[``, a code fence or ``<|python_tag|>``
    until the end (a Llama-style JSON call is only known when the JSON is complete).
    """

    def __init__(self, tools: list[dict]):
        self.tools = tools
        self.pending = ""
        self.whole_answer_held = False
        self.started = False
        self.calls_seen = 0

    def push(self, text: str) -> tuple[str, list[ToolCall]]:
        self.pending += text
        if self.whole_answer_held:
            return "", []
        if not self.started:
            head = self.pending.lstrip()
            openers = ("```", "<|python_tag|>")
            if not head or any(o.startswith(head) and o != head for o in openers):
                return "", []  # not decided yet: whitespace, or the first characters of an opener
            self.started = True
            if head[0] in "{[" or head.startswith(openers):
                self.whole_answer_held = True
                return "", []
        content, calls = [], []
        while True:
            at = self.pending.find(CALL_OPEN)
            if at < 0:
                keep = _possible_start(self.pending, CALL_OPEN)
                content.append(self.pending[: len(self.pending) - keep])
                self.pending = self.pending[len(self.pending) - keep:]
                break
            end = self.pending.find(CALL_CLOSE, at)
            if end < 0:  # a block has begun: wait for its end
                content.append(self.pending[:at])
                self.pending = self.pending[at:]
                break
            block_end = end + len(CALL_CLOSE)
            left, found = parse_tool_calls(self.pending[at:block_end], self.tools)
            content.append(self.pending[:at] + left)
            calls += found
            self.calls_seen += len(found)
            self.pending = self.pending[block_end:]
        released = "".join(content)
        if not released.strip():  # only whitespace (e.g. between two calls): wait for real text
            self.pending, released = released + self.pending, ""
        return released, calls

    def flush(self) -> tuple[str, list[ToolCall]]:
        rest, self.pending = self.pending, ""
        if not rest.strip():  # whitespace held back: text if no call came, else the gap around calls
            return ("" if self.calls_seen else rest), []
        return parse_tool_calls(rest, self.tools)


def _possible_start(text: str, marker: str) -> int:
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0
