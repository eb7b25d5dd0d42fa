"""Tool calling: offered in the prompt, parsed from the output per family, forced by tool_choice.

The parsing cases are written in each family's documented format (Hermes/Qwen 2.5
``<tool_call>`` blocks, Llama 3.1 JSON with ``parameters`` and ``<|python_tag|>``, a plain
JSON list). On the real models a forced ``tool_choice`` must always yield a call to the
right function whose arguments pass the independent ``jsonschema`` validator, and the
official clients must parse those calls (Ollama's ``message.tool_calls`` with an arguments
object; OpenAI's ``tool_calls`` with a JSON string and an id; Responses' function_call items
and argument events).
"""

from __future__ import annotations

import json

import jsonschema
import ollama
import pytest

import refllm
from refllm.chat.tools import ToolCallStream, check_tool_choice, check_tools, parse_tool_calls
from refllm.chat.turn import OutputRules, plan_turn
from refllm.errors import InvalidRequest

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
ADD = {"type": "function", "function": {
    "name": "add", "description": "Add two integers",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer", "minimum": -999, "maximum": 999},
                                                    "b": {"type": "integer", "minimum": -999, "maximum": 999}},
                   "required": ["a", "b"], "additionalProperties": False}}}
TOOLS = [WEATHER, ADD]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def assert_valid_call(name: str, arguments: dict, expected: str | None = None) -> None:
    assert name in SCHEMAS and (expected is None or name == expected), name
    jsonschema.validate(arguments, SCHEMAS[name])


# -- parsing, per family


@pytest.mark.parametrize("text, content, calls", [
    ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>',
     "", [("get_weather", {"city": "Paris", "unit": "celsius"})]),
    ('Let me check.\n<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>\n'
     '<tool_call>\n{"name": "add", "arguments": {"a": 3, "b": 4}}\n</tool_call>',
     "Let me check.", [("add", {"a": 1, "b": 2}), ("add", {"a": 3, "b": 4})]),
    ('{"name": "get_weather", "parameters": {"city": "Oslo", "unit": "celsius"}}', "",
     [("get_weather", {"city": "Oslo", "unit": "celsius"})]),
    ('<|python_tag|>{"name": "add", "parameters": {"a": 5, "b": 6}}', "", [("add", {"a": 5, "b": 6})]),
    ('[{"name": "add", "arguments": {"a": 1, "b": 1}}, {"name": "add", "arguments": "{\\"a\\": 2, \\"b\\": 2}"}]', "",
     [("add", {"a": 1, "b": 1}), ("add", {"a": 2, "b": 2})]),
    ('```json\n{"name": "add", "arguments": {"a": 7, "b": 8}}\n```', "", [("add", {"a": 7, "b": 8})]),
    ('{"name": "send_email", "arguments": {}}', '{"name": "send_email", "arguments": {}}', []),  # not offered
    ('{"city": "Paris"}', '{"city": "Paris"}', []),
    ("Just text, no call.", "Just text, no call.", []),
    ('<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}', "", [("add", {"a": 1, "b": 2})]),  # cut at the end
])
def test_parse_tool_calls(text, content, calls):
    left, found = parse_tool_calls(text, TOOLS)
    assert left == content
    assert [(c.name, c.arguments) for c in found] == calls
    for size in (1, 2, 5, 1000):  # streamed in pieces of any size: the same calls, the same content
        stream = ToolCallStream(TOOLS)
        pieces = [stream.push(text[i:i + size]) for i in range(0, len(text), size)] + [stream.flush()]
        assert [(c.name, c.arguments) for _, cs in pieces for c in cs] == calls
        assert "".join(p for p, _ in pieces).strip() == content.strip() or not calls


def test_tool_fields_are_checked():
    assert check_tools([{"type": "function", "name": "f", "parameters": {"type": "object"}}])[0]["function"]["name"] == "f"
    for bad in ([{"type": "function"}], [{"type": "retrieval"}], "f", [WEATHER, WEATHER],
                [{"type": "function", "function": {"name": "f", "parameters": "x"}}]):
        with pytest.raises(InvalidRequest, match="tools"):
            check_tools(bad)
    assert check_tool_choice(None, TOOLS) == "auto" and check_tool_choice(None, []) == "none"
    assert check_tool_choice({"type": "function", "function": {"name": "add"}}, TOOLS) == "add"
    assert check_tool_choice({"type": "function", "name": "add"}, TOOLS) == "add"  # the Responses spelling
    for bad in ("always", {"type": "function", "function": {"name": "nope"}}):
        with pytest.raises(InvalidRequest, match="tool_choice"):
            check_tool_choice(bad, TOOLS)
    with pytest.raises(InvalidRequest, match="required"):
        check_tool_choice("required", [])


def test_tools_and_results_reach_the_prompt(smollm2_gguf):
    """SmolLM2's template knows no tools: the family fallback offers them in the system
    message and writes the earlier call and its result as text the model can read."""
    model = refllm.load(str(smollm2_gguf))
    conversation = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21}'},
    ]
    turn = plan_turn(model, conversation, rules=OutputRules(tools=TOOLS, tool_choice="auto"))
    prompt = model.tokenizer.decode(turn.prompt)
    assert '"name": "get_weather"' in prompt and '"name": "add"' in prompt  # both offered
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>' in prompt
    assert '<tool_response>\n{"temperature": 21}\n</tool_response>' in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


# -- the real models, forced calls, through the official clients


def ollama_chat(client: ollama.Client, tool_choice, stream: bool = False, **fields):
    """A chat through the official client's transport and response type (``ChatResponse``),
    plus refllm's ``tool_choice``, which the client has no parameter for (Ollama ignores it)."""
    from ollama._types import ChatResponse

    return client._request(ChatResponse, "POST", "/api/chat", json={**fields, "stream": stream, "tool_choice": tool_choice}, stream=stream)


ASK = [{"role": "user", "content": "What's the weather like in Paris? And what is 2 + 3?"}]


@pytest.mark.parametrize("model", ["smollm2", "gemma3"])
def test_forced_tool_choice(oclient, aclient, model):
    options = {"temperature": 0, "num_predict": 120}
    # Ollama's API, a named function, not streamed
    reply = ollama_chat(oclient, {"type": "function", "function": {"name": "add"}}, model=model, messages=ASK, tools=TOOLS, options=options)
    assert reply.message.tool_calls, reply
    for call in reply.message.tool_calls:
        assert_valid_call(call.function.name, dict(call.function.arguments), "add")
    # Ollama's API, "required", streamed: calls arrive whole in the chunks
    chunks = list(ollama_chat(oclient, "required", stream=True, model=model, messages=ASK, tools=TOOLS, options=options))
    calls = [call for chunk in chunks for call in (chunk.message.tool_calls or [])]
    assert calls and chunks[-1].done
    for call in calls:
        assert_valid_call(call.function.name, dict(call.function.arguments))
    # OpenAI chat, a named function, not streamed, sampled: still always that call
    reply = aclient.chat.completions.create(model=model, messages=ASK, tools=TOOLS, temperature=1.0, seed=3, max_tokens=120,
                                            tool_choice={"type": "function", "function": {"name": "get_weather"}})
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    for call in choice.message.tool_calls:
        assert call.id and call.type == "function"
        assert_valid_call(call.function.name, json.loads(call.function.arguments), "get_weather")
    # OpenAI chat, "required", streamed, one call only
    deltas = list(aclient.chat.completions.create(model=model, messages=ASK, tools=TOOLS, tool_choice="required",
                                                  parallel_tool_calls=False, temperature=0, max_tokens=120, stream=True))
    streamed = [tc for d in deltas if d.choices for tc in (d.choices[0].delta.tool_calls or [])]
    assert len(streamed) == 1 and deltas[-1].choices[0].finish_reason == "tool_calls"
    assert_valid_call(streamed[0].function.name, json.loads(streamed[0].function.arguments))


@pytest.mark.parametrize("model", ["smollm2", "gemma3"])
def test_responses_function_calls_streamed_and_fed_back(aclient, model):
    tools = [{"type": "function", "name": "add", "description": "Add two integers", "parameters": SCHEMAS["add"]}]
    with aclient.responses.stream(model=model, input="What is 2 + 3?", tools=tools, tool_choice="required",
                                  parallel_tool_calls=False, temperature=0, max_output_tokens=120) as stream:
        events = list(stream)
        final = stream.get_final_response()
    calls = [item for item in final.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "add"
    for call in calls:
        jsonschema.validate(json.loads(call.arguments), SCHEMAS["add"])
    argument_deltas = [e for e in events if e.type == "response.function_call_arguments.delta"]
    assert "".join(e.delta for e in argument_deltas) == "".join(c.arguments for c in calls)
    # the call and its result fed back: the model answers in text (tool_choice none)
    follow_up = aclient.responses.create(
        model=model, tools=tools, tool_choice="none", temperature=0, max_output_tokens=8,
        input=[{"role": "user", "content": "What is 2 + 3?"},
               {"type": "function_call", "call_id": calls[0].call_id, "name": "add", "arguments": calls[0].arguments},
               {"type": "function_call_output", "call_id": calls[0].call_id, "output": "5"}])
    assert follow_up.output_text and not [item for item in follow_up.output if item.type == "function_call"]
    # and on chat completions, the assistant's tool_calls and the tool message
    chat = aclient.chat.completions.create(model=model, tools=TOOLS, temperature=0, max_tokens=8, tool_choice="none", messages=[
        *ASK, {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "5"}])
    assert chat.choices[0].message.content and not chat.choices[0].message.tool_calls
