"""One chat turn with output rules: a JSON ``format``, ``tools`` and ``tool_choice``, ``think``.

``plan_turn`` prepares the generation; ``Turn`` then sorts the streamed text:

    rules ──► prompt: the schema as guidance (Ollama #8162), tools offered (template or fallback),
    │                 the template told about thinking (enable_thinking / reasoning_effort)
    ├──► constraint:  format -> JSON schema grammar;  tool_choice required/name -> tool-call grammar
    └──► output:      text ─► ThinkingSplitter ─► thinking
                                     └─ content ─► ToolCallStream ─► content, tool_calls

Without rules, and for a model that does not think, the turn passes everything through.
A chat that ends with an assistant message (without tool calls) is a prefill, as in Ollama:
the prompt ends inside that message and the output, content only, continues it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from refllm.chat.tools import (
    ToolCall, ToolCallStream, messages_with_tools_as_text, template_knows_tools, tool_call_grammar,
)
from refllm.errors import InvalidRequest
from refllm.thinking import ThinkingSplitter, template_variables, thinking_markers


@dataclass
class OutputRules:
    """What a request asks of the answer's shape (already checked by the API codec)."""

    format: dict | None = None  # a JSON schema (refllm.constrain.schema), None = free text
    tools: list[dict] = field(default_factory=list)  # refllm.chat.tools.check_tools shape
    tool_choice: str = "none"  # "none" | "auto" | "required" | a function name
    parallel_tool_calls: bool = True
    think: bool | str | None = None  # None: the model's default

    @property
    def forced_tool(self) -> bool:
        return bool(self.tools) and self.tool_choice not in ("none", "auto")


@dataclass
class TurnPiece:
    content: str = ""
    thinking: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.content or self.thinking or self.tool_calls)


class Turn:
    """The prompt and constraint to generate with, and the sorter for what comes out."""

    def __init__(self, prompt, raw: bool, system, constraint=None, thinking: ThinkingSplitter | None = None,
                 keep_thinking: bool = True, tools: ToolCallStream | None = None):
        self.prompt, self.raw, self.system, self.constraint = prompt, raw, system, constraint
        self._thinking, self._keep_thinking, self._tools = thinking, keep_thinking, tools
        self.total = TurnPiece()

    def split(self, text: str) -> TurnPiece:
        """One streamed piece of output -> its content, thinking and completed tool calls."""
        return self._sort(*(self._thinking.push(text) if self._thinking else ("", text)), final=False)

    def finish(self) -> TurnPiece:
        """Whatever was held back, at the end of the generation."""
        thinking, content = self._thinking.flush() if self._thinking else ("", "")
        return self._sort(thinking, content, final=True)

    def _sort(self, thinking: str, content: str, final: bool) -> TurnPiece:
        calls: list[ToolCall] = []
        if self._tools is not None:
            content, calls = self._tools.push(content)
            if final:
                more_content, more_calls = self._tools.flush()
                content, calls = content + more_content, calls + more_calls
        piece = TurnPiece(content, thinking if self._keep_thinking else "", calls)
        self.total.content += piece.content
        self.total.thinking += piece.thinking
        self.total.tool_calls += piece.tool_calls
        return piece

    def finished(self, result):
        """The engine's ``Finished`` with the content, thinking and calls sorted apart."""
        if self._thinking is None and self._tools is None:
            return result
        return replace(result, text=self.total.content.strip() if self.total.tool_calls else self.total.content,
                       thinking=self.total.thinking, tool_calls=list(self.total.tool_calls))


def plan_turn(model, prompt, *, raw: bool = False, system: str | None = None, rules: OutputRules | None = None) -> Turn:
    """Prepare one generation for ``rules`` (see the module docstring)."""
    rules = rules or OutputRules()
    template = getattr(model, "chat_template", None)
    source = getattr(template, "source", None)
    markers = thinking_markers(source if isinstance(source, str) else None)
    if rules.think not in (None, False) and markers is None:
        raise InvalidRequest(f"model '{getattr(model, 'name', None) or 'this model'}' does not support thinking: "
                             "leave 'think' / 'reasoning_effort' unset or false")
    tools_on = bool(rules.tools) and rules.tool_choice != "none"
    prefill = None if raw else final_assistant_prefill(prompt)  # None, or the text the answer continues
    if (rules.format is None and not tools_on and rules.think is None and markers is None
            and not _has_tool_history(prompt) and prefill is None):
        return Turn(prompt, raw, system)  # nothing to do: the plain path

    inside_think = False
    if not raw and (isinstance(prompt, str) or (isinstance(prompt, list) and prompt and isinstance(prompt[0], dict))):
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
        if system and messages[0].get("role") != "system":
            messages.insert(0, {"role": "system", "content": system})
        if rules.format is not None:
            from refllm.constrain import schema_guidance

            messages = _with_system_text(messages, schema_guidance(rules.format))
        offered = rules.tools if tools_on else []
        native_tools = template_knows_tools(source)
        if not native_tools:
            messages = messages_with_tools_as_text(messages, offered)
        variables = template_variables(rules.think) if markers else {}
        if prefill is not None:  # the prompt ends inside the final assistant message
            variables["continue_final_message"] = True
        text = template.render(messages, tools=(offered or None) if native_tools else None,
                               add_generation_prompt=True, **variables)
        contents = [m["content"] for m in messages if isinstance(m.get("content"), str)]
        prompt, raw, system = model.tokenizer.encode_chat(text, contents), False, None
        inside_think = markers is not None and text.rstrip().endswith(markers.open)

    constraint = _constraint(model, rules)
    thinking = None
    if markers is not None and constraint is None and not prefill:  # a prefilled answer goes on as answer (Ollama)
        thinking = ThinkingSplitter(markers, inside=inside_think)
    tools = ToolCallStream(rules.tools) if tools_on else None
    return Turn(prompt, raw, system, constraint, thinking, keep_thinking=rules.think is not False, tools=tools)


def _constraint(model, rules: OutputRules):
    if rules.format is None and not rules.forced_tool:
        return None
    from refllm.constrain import TokenConstraint, json_schema_grammar, lark_grammar, token_table

    if rules.format is not None:
        grammar = json_schema_grammar(rules.format)
    else:
        grammar = lark_grammar(tool_call_grammar(rules.tools, rules.tool_choice, rules.parallel_tool_calls))
    return TokenConstraint(token_table(model.tokenizer, model.n_vocab), grammar)


def _with_system_text(messages: list[dict], text: str) -> list[dict]:
    if messages and messages[0].get("role") == "system":
        return [{**messages[0], "content": f"{messages[0].get('content') or ''}\n\n{text}".strip()}, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def final_assistant_prefill(prompt) -> str | None:
    """The content of a chat's final assistant message (without tool calls), which the answer continues.

    As Ollama renders it: the prompt ends inside that message, the model goes on from its last
    character, and the response holds only the continuation. None when the chat ends otherwise.
    """
    if not (isinstance(prompt, list) and prompt and isinstance(prompt[-1], dict)):
        return None
    last = prompt[-1]
    if last.get("role") != "assistant" or last.get("tool_calls"):
        return None
    content = last.get("content")
    return content if isinstance(content, str) else ""


def _has_tool_history(prompt) -> bool:
    return isinstance(prompt, list) and any(isinstance(m, dict) and (m.get("role") == "tool" or m.get("tool_calls")) for m in prompt)
