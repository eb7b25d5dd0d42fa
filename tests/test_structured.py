"""Structured outputs: every schema of the suite yields JSON that parses and validates.

Validity is judged by the independent ``jsonschema`` validator (formats included), never
by refllm's own code. Three layers:

* the schema front door: each API's spelling, and a 400 naming every unsupported feature;
* objects as llama.cpp reads them (no extra keys unless additionalProperties allows them,
  required keys first), byte by byte against the grammar alone;
* the token mask under adversarial logits: a model whose logits are random noise, with the
  real SmolLM2 and Gemma 3 vocabularies, must still produce valid JSON for every schema
  (the grammar alone carries validity; cheap, so many seeds);
* the real models behind the REST API, driven by the official ``ollama`` and ``openai``
  clients: SmolLM2 on the whole suite (streamed greedy through Ollama's API, and
  sampled non-streamed through OpenAI's), Gemma 3 on a part of it, plus pydantic
  round trips through both clients' structured-output helpers.
"""

from __future__ import annotations

import json
from decimal import Decimal

import jsonschema
import numpy as np
import ollama
import openai
import pydantic
import pytest

import refllm
from refllm.constrain import ANY_JSON_OBJECT, TokenConstraint, json_schema_grammar, ollama_format, openai_response_format, token_table
from refllm.constrain.grammar import llguidance
from refllm.errors import InvalidRequest
from structured_schemas import OPEN_ENDED, SCHEMAS, UNSUPPORTED

GEMMA_PART = ["object", "nested", "array-objects", "enum", "pattern", "one-of", "ref-defs", "format-date"]


def assert_valid(text: str, schema: dict) -> None:
    # decimals, not binary floats: 594.31 is a multiple of 0.01 (as floats it is not)
    value, schema = json.loads(text, parse_float=Decimal), json.loads(json.dumps(schema), parse_float=Decimal)
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    errors = [e.message for e in validator.iter_errors(value)]
    assert not errors, f"{text!r} does not follow the schema: {errors}"


# -- the front door: the APIs' spellings, unsupported features named


def test_format_spellings():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert ollama_format(None) is None and ollama_format("") is None
    assert ollama_format("json") == ANY_JSON_OBJECT
    assert ollama_format(schema) == schema
    assert openai_response_format({"type": "text"}) is None
    assert openai_response_format({"type": "json_object"}) == ANY_JSON_OBJECT
    assert openai_response_format({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}) == schema
    assert openai_response_format({"type": "json_schema", "name": "x", "schema": schema}, "text.format") == schema
    for bad in ("yaml", 5, ["json"]):
        with pytest.raises(InvalidRequest, match="format"):
            ollama_format(bad)
    for bad in ({"type": "xml"}, {"type": "json_schema"}, "json"):
        with pytest.raises(InvalidRequest, match="response_format"):
            openai_response_format(bad)


@pytest.mark.parametrize("schema, feature", UNSUPPORTED, ids=[f for _, f in UNSUPPORTED])
def test_unsupported_features_are_named(schema, feature):
    with pytest.raises(InvalidRequest, match=feature) as err:
        ollama_format(schema)
    assert "format" in str(err.value)
    with pytest.raises(InvalidRequest, match=feature):
        openai_response_format({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})


# -- objects as llama.cpp's json-schema-to-grammar reads them: the grammar alone, byte by byte


class ByteVocabulary(llguidance.TokenizerWrapper):
    """256 one-byte tokens and an end token: a grammar accepts a text iff it takes its bytes."""

    def __init__(self):  # noqa: no super().__init__, as in refllm.constrain.grammar
        self.eos_token_id, self.bos_token_id, self.special_token_ids = 256, None, []
        self.is_tokenizer_wrapper = True
        self.tokens = [bytes([b]) for b in range(256)] + [b"\xff<end>"]

    def __call__(self, text: bytes | str) -> list[int]:
        return list(text.encode() if isinstance(text, str) else text)


BYTES = llguidance.LLTokenizer(ByteVocabulary(), n_vocab=257, eos_token=256)


def accepts(schema: dict, text: str) -> bool:
    constraint = TokenConstraint(BYTES, json_schema_grammar(schema))
    data = list(text.encode())
    return constraint.matcher.validate_tokens(data) == len(data) and constraint.matcher.consume_tokens(data) \
        and constraint.matcher.is_accepting()


INT = {"type": "integer"}
A_REQUIRED = {"type": "object", "properties": {"a": INT}, "required": ["a"]}
B_REQUIRED = {"type": "object", "properties": {"a": INT, "b": INT}, "required": ["b"]}
LLAMACPP_OBJECTS = [  # (schema, text, allowed by llama.cpp's grammar)
    (A_REQUIRED, '{"a": 1}', True),
    (A_REQUIRED, '{"a": 1, "b": {"c": 2}}', False),  # additionalProperties absent: no extra keys
    (A_REQUIRED | {"additionalProperties": True}, '{"a": 1, "b": {"c": 2}, "d": "x"}', True),
    (A_REQUIRED | {"additionalProperties": {}}, '{"a": 1, "b": [null]}', True),
    (A_REQUIRED | {"additionalProperties": INT}, '{"a": 1, "b": 2}', True),
    (A_REQUIRED | {"additionalProperties": INT}, '{"a": 1, "b": "x"}', False),
    (A_REQUIRED | {"additionalProperties": True}, '{"b": 2, "a": 1}', False),  # extra keys come last
    (A_REQUIRED | {"additionalProperties": True}, '{"a": 1, "a": 2}', False),  # ... and are not named properties
    (B_REQUIRED, '{"b": 2, "a": 1}', True),  # required keys first, then the optional ones
    (B_REQUIRED, '{"a": 1, "b": 2}', False),
    (B_REQUIRED, '{"b": 2}', True),
    (B_REQUIRED, '{"a": 1}', False),
    ({"type": "object", "properties": {"a": INT}, "required": ["zz"]}, "{}", True),  # a required non-property is ignored
    ({"type": "object"}, '{"x": [1, {"y": null}]}', True),  # no properties: any object
    ({"type": "object", "properties": {}}, "{}", True),
    ({"type": "object", "properties": {}}, '{"x": 1}', False),
    ({"type": "object", "additionalProperties": False}, '{"x": 1}', False),
    ({"properties": {"a": INT}}, "5", False),  # properties without a type: an object
    ({"properties": {"a": INT}}, '{"a": 5}', True),
    ({"type": "object", "properties": {"o": {"type": "object", "properties": {"c": INT}}}}, '{"o": {"c": 1, "d": 2}}', False),
    ({"type": "array", "items": A_REQUIRED}, '[{"a": 1, "z": 0}]', False),
    ({"anyOf": [A_REQUIRED, {"type": "null"}]}, '{"a": 1, "z": 0}', False),
    ({"allOf": [{"type": "object", "properties": {"id": INT}}, {"$ref": "#/$defs/l"}],
      "$defs": {"l": {"type": "object", "properties": {"l": INT}}}}, '{"id": 1, "l": 2}', True),
    ({"allOf": [{"type": "object", "properties": {"id": INT}}, {"type": "object", "properties": {"l": INT}}]},
     '{"id": 1, "l": 2, "z": 3}', False),  # allOf: one object, no extra keys
    ({"allOf": [{"type": "object", "properties": {"id": INT}}, {"type": "object", "properties": {"l": INT}}]},
     '{"l": 2}', False),  # ... where every part's properties are required
]


@pytest.mark.parametrize("schema, text, allowed", LLAMACPP_OBJECTS, ids=[f"{t}-{a}" for _, t, a in LLAMACPP_OBJECTS])
def test_objects_follow_llamacpp(schema, text, allowed):
    assert accepts(schema, text) is allowed


def test_json_mode_is_any_object():
    assert accepts(ANY_JSON_OBJECT, '{"a": {"b": [1, "x", null]}, "c": true}')
    assert not accepts(ANY_JSON_OBJECT, "[1]")


# -- the mask alone: random logits over the real vocabularies


class NoiseModel:
    """The real tokenizer and sizes of a model, but logits of pure noise: only the grammar
    decides what comes out. Runs through the real generation loop (refllm.generate)."""

    def __init__(self, real, seed: int):
        self.name, self.tokenizer, self.n_vocab = real.name, real.tokenizer, real.n_vocab
        self.n_ctx_train = 4096
        self.rng = np.random.default_rng(seed)

    def new_cache(self, n_ctx: int):
        return _Cache(n_ctx)

    def forward(self, ids, cache):
        cache.n_past += len(ids)
        return self.rng.normal(0.0, 3.0, self.n_vocab).astype(np.float32)  # [n_vocab]


class _Cache:
    def __init__(self, n_ctx: int):
        self.n_ctx, self.n_past = n_ctx, 0

    def truncate(self, n: int) -> None:
        self.n_past = min(self.n_past, n)


@pytest.fixture(scope="module", params=["smollm2", "gemma3"])
def real_model(request, smollm2_gguf, gemma3_gguf):
    model = refllm.load(str(smollm2_gguf if request.param == "smollm2" else gemma3_gguf))
    token_table(model.tokenizer, model.n_vocab)  # built once per vocabulary (seconds for Gemma's 262k)
    return model


def test_every_schema_holds_under_random_logits(real_model):
    from refllm.generate import GenerationResult, generate

    table = token_table(real_model.tokenizer, real_model.n_vocab)
    prompt = [real_model.tokenizer.bos_id or 0]
    for seed, (name, _, schema) in enumerate(SCHEMAS):
        if name in OPEN_ENDED:
            continue
        noise = NoiseModel(real_model, seed)
        constraint = TokenConstraint(table, json_schema_grammar(schema))
        pieces = list(generate(noise, prompt, stream=True, constraint=constraint, temperature=1.0, top_k=0, seed=seed, num_predict=600))
        result = pieces[-1]
        assert isinstance(result, GenerationResult) and result.done_reason == "stop", (name, result.text)
        assert "".join(pieces[:-1]) == result.text
        assert_valid(result.text, schema)


def test_constraint_mask_bits(real_model):
    """The mask forbids exactly what the grammar forbids: for a const schema, only the
    tokens that spell a prefix of the constant are allowed at the start."""
    table = token_table(real_model.tokenizer, real_model.n_vocab)
    constraint = TokenConstraint(table, json_schema_grammar({"const": "yes"}))
    allowed = np.flatnonzero(constraint.allowed()[: real_model.n_vocab])
    assert len(allowed) > 0
    for token in allowed:
        piece = real_model.tokenizer.token_bytes(int(token))
        assert b'"yes"'.startswith(piece), piece
    masked = constraint.mask(np.zeros(real_model.n_vocab, dtype=np.float32))
    assert np.isneginf(masked).sum() == real_model.n_vocab - len(allowed)


# -- the real models behind the API, through the official clients


def messages(prompt: str) -> list[dict]:
    return [{"role": "user", "content": prompt}]


@pytest.mark.parametrize("model, names", [("smollm2", [n for n, _, _ in SCHEMAS]), ("gemma3", GEMMA_PART)])
def test_schema_suite_on_real_models(oclient, aclient, model, names):
    for name, prompt, schema in SCHEMAS:
        if name not in names:
            continue
        # streamed, greedy, Ollama's API
        chunks = list(oclient.chat(model=model, messages=messages(prompt), format=schema, stream=True,
                                   options={"temperature": 0, "num_predict": 200}))
        assert chunks[-1].done_reason == "stop", (name, chunks[-1])
        assert_valid("".join(c.message.content for c in chunks), schema)
        # not streamed, sampled, OpenAI's API
        reply = aclient.chat.completions.create(
            model=model, messages=messages(prompt), temperature=0.8, seed=7, max_tokens=200,
            response_format={"type": "json_schema", "json_schema": {"name": name.replace("-", "_"), "schema": schema}})
        assert reply.choices[0].finish_reason == "stop", (name, reply)
        assert_valid(reply.choices[0].message.content, schema)


class Pet(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=16)
    species: str = pydantic.Field(max_length=16)
    age: int = pydantic.Field(ge=0, le=100)


@pytest.mark.parametrize("model", ["smollm2", "gemma3"])
def test_official_clients_parse_structured_outputs(oclient, aclient, model):
    prompt = messages("Invent a pet.")
    reply = oclient.chat(model=model, messages=prompt, format=Pet.model_json_schema(), options={"temperature": 0, "num_predict": 80})
    Pet.model_validate_json(reply.message.content)
    parsed = aclient.chat.completions.parse(model=model, messages=prompt, response_format=Pet, temperature=0, max_tokens=80)
    assert isinstance(parsed.choices[0].message.parsed, Pet)
    # the Responses API, streamed: text.format, output_text deltas that add up to valid JSON
    with aclient.responses.stream(model=model, input="Invent a pet.", text_format=Pet, temperature=0, max_output_tokens=80) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert isinstance(final.output_parsed, Pet)
    assert Pet.model_validate_json("".join(deltas)) == final.output_parsed


def test_json_mode(oclient, aclient):
    for model in ("smollm2", "gemma3"):
        reply = oclient.generate(model=model, prompt="Give a JSON object with a key ok set to true.", format="json",
                                 options={"temperature": 0, "num_predict": 60})
        assert reply.done_reason == "stop" and isinstance(json.loads(reply.response), dict)
        reply = aclient.chat.completions.create(model=model, messages=messages("Give a JSON object with a key ok set to true."),
                                                response_format={"type": "json_object"}, temperature=0, max_tokens=60)
        assert isinstance(json.loads(reply.choices[0].message.content), dict)


def test_no_extra_keys_through_the_api(oclient):
    """The reported case: smollm2 added "b" to an object that only names "a"."""
    reply = oclient.generate(model="smollm2", prompt="Give a JSON object.", format=A_REQUIRED,
                             options={"temperature": 0, "num_predict": 40})
    assert reply.done_reason == "stop" and list(json.loads(reply.response)) == ["a"]


def test_unsupported_schema_is_a_400_on_every_api(oclient, aclient):
    schema = {"type": "array", "uniqueItems": True}
    with pytest.raises(ollama.ResponseError) as err:
        oclient.chat(model="smollm2", messages=messages("hi"), format=schema)
    assert err.value.status_code == 400 and "uniqueItems" in err.value.error
    with pytest.raises(openai.BadRequestError, match="uniqueItems"):
        aclient.chat.completions.create(model="smollm2", messages=messages("hi"),
                                        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    with pytest.raises(openai.BadRequestError, match="uniqueItems"):
        aclient.responses.create(model="smollm2", input="hi", text={"format": {"type": "json_schema", "name": "x", "schema": schema}})
