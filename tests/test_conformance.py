"""``refllm conformance`` end to end: refllm's own server passes, a broken one fails.

One ``refllm serve`` (in-process waitress on 127.0.0.1) serves two models: SmolLM2, and
"broken", a copy of SmolLM2 with one weight tensor perturbed (blk.0.attn_norm.weight
negated, so layer 0's attention output flips sign). The numeric check must pass the first on
both APIs and fail the second, naming the first divergence. llama.cpp itself is scored by
tools/conformance_vs_llamacpp.py (the ``reference`` extra is not installed in CI).
Prompts are few and continuations short: every scored position costs a forward pass on 2 cores.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from refllm.cli.main import main
from refllm.conformance import ConformanceError, api_checks, remote
from refllm.conformance.numeric import PositionScore, PromptScore, VocabIndex, line_up, shared_support_kl
from refllm.conformance.report import Thresholds, print_report, summarize
from refllm.conformance.tokens import check_tokenizer
from refllm.conformance.remote import RemoteCompletion, entry_from_dict
from refllm.engine import Engine, EngineSettings
from refllm.engine.engine import ModelRecipe
from refllm.errors import ModelNotFound
from refllm.gguf import read
from refllm.server import ServerThread, create_app

PROMPT = ["--prompts", "prose-story", "--n-predict", "6"]


def write_broken_copy(source: Path, target: Path, tensor: str = "blk.0.attn_norm.weight") -> None:
    """A copy of a GGUF with one F32 tensor negated (same size: nothing else moves)."""
    info = read(source).tensors[tensor]
    data = bytearray(source.read_bytes())
    weights = np.frombuffer(bytes(data[info.offset : info.offset + info.n_bytes]), dtype=np.float32)
    data[info.offset : info.offset + info.n_bytes] = (-weights).tobytes()
    target.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def server(smollm2_gguf, tmp_path_factory):
    broken = tmp_path_factory.mktemp("broken") / "broken.gguf"
    write_broken_copy(Path(smollm2_gguf), broken)
    paths = {"smollm2": Path(smollm2_gguf), "smollm2-raw": Path(smollm2_gguf), "broken": broken}

    def resolver(name: str) -> ModelRecipe:
        base = name.split(":")[0]
        if base not in paths:
            raise ModelNotFound(f"model '{name}' not found")
        template = "{{ .Prompt }}" if base == "smollm2-raw" else None  # a Modelfile TEMPLATE that adds nothing
        return ModelRecipe(name=base, gguf_path=paths[base], template=template, source="file")

    engine = Engine(EngineSettings(num_parallel=1, max_queue=8), resolver=resolver)
    with ServerThread(create_app(engine)) as url:
        yield url
    engine.close()


def conformance(capsys, *args: str) -> tuple[int, str]:
    code = main(["conformance", *args])
    return code, capsys.readouterr().out


def test_refllm_serve_conforms_on_the_ollama_api(server, smollm2_gguf, capsys):
    code, out = conformance(capsys, str(smollm2_gguf), "--endpoint", server, "--api", "ollama",
                            "--endpoint-model", "smollm2", *PROMPT, "--json")  # fmt: skip
    result = json.loads(out)
    summary = result["summary"]
    assert code == 0 and summary["passed"], summary
    assert summary["positions_scored"] == 6 and summary["top1_exact"] == 1.0
    assert summary["mean_kl"] < 1e-6 and summary["first_divergence"] is None  # the same engine, the same numbers
    prompt = result["prompts"][0]
    assert prompt["remote_prompt_tokens"] == prompt["prompt_tokens"]
    # llama.cpp's greedy continuation of this prompt begins " was calm, but the" (tools/conformance_vs_llamacpp.py)
    assert prompt["continuation"].startswith(" was calm, but the")


def test_refllm_serve_conforms_on_the_openai_api(server, smollm2_gguf, capsys):
    """/v1/completions applies the chat template (as Ollama's does): served with TEMPLATE {{ .Prompt }} it passes.
    The endpoint is given as OpenAI clients take it, ending in /v1."""
    code, out = conformance(capsys, str(smollm2_gguf), "--endpoint", server + "/v1", "--api", "openai",
                            "--endpoint-model", "smollm2-raw", *PROMPT)  # fmt: skip
    assert code == 0, out
    assert f"openai API at {server}\n" in out and "prose-story" in out and out.splitlines()[-1] == "PASS"


def test_a_templated_route_is_caught_by_its_prompt_token_count(server, smollm2_gguf, capsys):
    code, out = conformance(capsys, str(smollm2_gguf), "--endpoint", server, "--api", "openai",
                            "--endpoint-model", "smollm2", "--prompts", "prose-story", "--n-predict", "1")  # fmt: skip
    assert code == 1 and "the server read a different prompt (token count) on prose-story" in out.splitlines()[-1]
    assert "chat template on this route?" in out


def test_a_broken_runtime_fails_at_its_first_divergence(server, smollm2_gguf, capsys):
    code, out = conformance(capsys, str(smollm2_gguf), "--endpoint", server, "--endpoint-model", "broken", *PROMPT)
    assert code == 1
    verdict = out.splitlines()[-1]
    assert verdict.startswith("FAIL") and "top-1 agreement" in verdict and "mean KL" in verdict
    first = next(line for line in out.splitlines() if line.startswith("first divergence:"))
    assert "prompt prose-story, generated token 0" in first and "refllm ' was'" in first  # llama.cpp also says " was"
    assert "<- diverges" in out


def test_api_only_passes_refllm_serve(server, capsys):
    code, out = conformance(capsys, "--api-only", server, "--endpoint-model", "smollm2")
    assert code == 0, out
    assert "FAIL" not in out and out.count("PASS") == 15


@contextlib.contextmanager
def serving(handler: type[BaseHTTPRequestHandler]):
    """A throwaway HTTP server on 127.0.0.1 with ``handler``; yields its URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def send(handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str = "application/json") -> None:
    """A stub server's whole answer: status, the two headers, the body."""
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class WrongShapes(BaseHTTPRequestHandler):
    """A server that says 200 {"ok": true} to everything: right routes, wrong answers."""

    def answer(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        send(self, 200, b'{"ok": true}')

    do_GET = do_POST = answer

    def log_message(self, *args):
        pass


def test_api_only_fails_a_server_with_wrong_shapes(capsys):
    with serving(WrongShapes) as url:
        code, out = conformance(capsys, "--api-only", url, "--endpoint-model", "m")
    assert code == 1
    failed = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 15  # every check: no field is right
    assert any("unknown model -> 404" in line and "the server ignores the model name" in line for line in failed)
    assert any("NDJSON" in line and "application/x-ndjson" in line for line in failed)
    assert any("SSE" in line and "text/event-stream" in line for line in failed)


def test_unreachable_endpoint_is_a_one_line_error(smollm2_gguf, capsys):
    code = main(["conformance", str(smollm2_gguf), "--endpoint", "http://127.0.0.1:9", *PROMPT])
    err = capsys.readouterr().err
    assert code == 1 and err.splitlines()[-1].startswith("Error: cannot reach http://127.0.0.1:9") and "Traceback" not in err


class NotAnLLM(BaseHTTPRequestHandler):
    """A web server, as ``python -m http.server`` answers: HTML 404 to GET, HTML 501 to POST."""

    def answer(self, status: int):
        send(self, status, b"<!DOCTYPE HTML>\n<html>\n<body>\n<h1>Error response</h1>\n</body>\n</html>\n", "text/html")

    def do_GET(self):
        self.answer(404)

    def do_POST(self):
        self.answer(501)

    def log_message(self, *args):
        pass


def test_a_server_that_is_not_an_llm_server_is_a_one_line_error(smollm2_gguf, capsys):
    with serving(NotAnLLM) as url:
        code = main(["conformance", str(smollm2_gguf), "--endpoint", url, "--api", "llamacpp", *PROMPT])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert f"{url}/health: HTTP 404: not a JSON error (text/html)" in err and f"is the llamacpp API served at {url}?" in err


def test_a_server_that_never_answers_fails_fast(smollm2_gguf, capsys, monkeypatch):
    monkeypatch.setattr(remote, "PROBE_TIMEOUT", 0.5)
    monkeypatch.setattr(api_checks, "PROBE_TIMEOUT", 0.5)
    with socket.socket() as silent:  # listens (connections complete) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        code = main(["conformance", str(smollm2_gguf), "--endpoint", url, *PROMPT])
        assert code == 1 and f"Error: {url}/api/version: no answer within 0.5 s" in capsys.readouterr().err
        code, out = conformance(capsys, "--api-only", url)
    assert code == 1 and f"FAIL  ollama  GET /api/version: cannot reach {url}/api/version: timed out" in out


def test_the_report_says_which_differences_are_near_ties(capsys):
    def position(k: int, token: str, refllm_token: str, margin: float) -> PositionScore:
        return PositionScore(k, token, refllm_token, -1.0, -1.1, 1 if margin == 0 else 2, 0.001, margin == 0, margin, margin == 0)

    score = PromptScore("p", "prose", 5, 5, [position(0, " a", " a", 0.0), position(1, " air", " wind", 0.047),
                                             position(2, " heavy", " thick", 0.3),
                                             position(3, b"\xe3\x83".decode(errors="backslashreplace"), "x", 0.4)])  # fmt: skip
    lines = []
    print_report([score], summarize([score], Thresholds()), out=lines.append)
    assert "  refllm puts it 0.047 nats below its top, within --tie-margin 0.1: a near-tie, counted as top-1 agreement; " \
           "refllm's top is not in the other runtime's top-k" in lines
    assert "  top-1 differs beyond the 0.1-nat tie margin at generated token 2 (' heavy' vs refllm ' thick', 0.300 nats), " \
           "3 ('\\xe3\\x83' vs refllm 'x', 0.400 nats)" in lines  # undecodable bytes show as repr shows bytes
    assert lines[-1] == "FAIL: top-1 agreement 50.00% < 99.00%"


# -- llama.cpp's own numbers, replayed (recorded by tools/conformance_vs_llamacpp.py --record)

RECORDED = Path(__file__).resolve().parent.parent / "golden" / "conformance" / "smollm2.llamacpp.json"


class LlamaCppReplay(BaseHTTPRequestHandler):
    """llama.cpp's /completion, answered from recorded replies; other routes (/tokenize) are 404."""

    replies: dict[str, dict] = {}

    def do_GET(self):
        send(self, 200, b'{"status": "ok"}') if self.path == "/health" else send(self, 404, b'{"error": "no route"}')


    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        recorded = self.replies.get(body.get("prompt")) if self.path == "/completion" else None
        if recorded is None or recorded["request"] != body:  # asked differently from the recording
            status, payload = 404, b'{"error": "not recorded"}'
        else:
            status, payload = 200, json.dumps(recorded["reply"]).encode()
        send(self, status, payload)

    def log_message(self, *args):
        pass


def test_llama_cpp_conforms_on_recorded_replies(smollm2_gguf, capsys):
    """Both prompts: a near-tie where llama.cpp's greedy path leaves refllm's (prose-story, token 5), and
    Japanese, where llama.cpp merges tokens that end inside a character (ids come back with the reply)."""
    recorded = json.loads(RECORDED.read_text(encoding="utf-8"))
    LlamaCppReplay.replies = {r["request"]["prompt"]: r for r in recorded["replies"]}
    with serving(LlamaCppReplay) as url:
        code, out = conformance(capsys, str(smollm2_gguf), "--endpoint", url, "--api", "llamacpp",
                                "--prompts", "prose-story,multi-japanese", "--n-predict", "8", "--top-k", "5", "--json")  # fmt: skip
    result = json.loads(out)
    summary, (prose, japanese) = result["summary"], result["prompts"]
    assert code == 0 and summary["passed"], summary
    assert summary["mean_kl"] < 0.01 and summary["top1_agreement"] == 1.0 and summary["top1_exact"] < 1.0
    assert prose["first_divergence"] == 5 and prose["positions"][5]["token"] == " air"  # refllm: " wind", a near-tie
    assert prose["positions"][5]["refllm_token"] == " wind" and prose["positions"][5]["margin"] < 0.1
    assert 0 < prose["positions"][5]["other_margin"] < 0.1  # a near-tie for llama.cpp too, decided the other way
    assert japanese["positions_scored"] < len(japanese["positions"])  # merged entries leave positions unscored
    assert summary["tokenizer"] is None  # no /tokenize on the replay server: the check is skipped


# -- pieces, on recorded replies


# llama.cpp's /completion reply for "日本の首都は" on SmolLM2 (xllamacpp 2026.10.11549, n_probs 2): six
# tokens generated, three entries -- tokens that end inside a UTF-8 character are merged into the next.
LLAMACPP_ENTRIES = [
    {"id": 29917, "token": "、", "bytes": [227, 128, 129], "logprob": -1.6177895069122314, "top_logprobs": [
        {"id": 29917, "token": "、", "bytes": [227, 128, 129], "logprob": -1.6177895069122314},
        {"id": 11100, "token": "", "bytes": [227, 131], "logprob": -2.267108201980591}]},
    {"id": 112, "token": "ア", "bytes": [227, 130, 162], "logprob": -1.7044017314910889, "top_logprobs": [
        {"id": 112, "token": "�", "bytes": [162], "logprob": -1.7044017314910889},
        {"id": 130, "token": "�", "bytes": [181], "logprob": -2.1837680339813232}]},
    {"id": 241, "token": "プ", "bytes": [227, 131, 151], "logprob": -1.9719325304031372, "top_logprobs": [
        {"id": 241, "token": "�", "bytes": [151], "logprob": -1.9719325304031372},
        {"id": 229, "token": "�", "bytes": [139], "logprob": -2.1243908405303955}]},
]  # fmt: skip


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf):
    import refllm

    return refllm.load(smollm2_gguf)


@pytest.fixture(scope="module")
def vocab(smollm2):
    return VocabIndex(smollm2.tokenizer)


def test_merged_entries_are_split_back_into_tokens(vocab):
    completion = RemoteCompletion("、アプ", [entry_from_dict(e) for e in LLAMACPP_ENTRIES])
    ids, entries, notes = line_up(completion, vocab)
    assert not notes and b"".join(vocab.token_bytes(i) for i in ids) == "、アプ".encode()
    assert ids[0] == 29917 and ids[2] == 112 and ids[4] == 241 and len(ids) == 5  # 5 of the 6: the last has no entry yet
    assert [e is not None for e in entries] == [True, False, True, False, True]
    # the same reply with the generated ids (return_tokens) lines up the same way
    ids2, entries2, notes2 = line_up(RemoteCompletion("、アプ", completion.tokens, token_ids=ids + [ids[1]]), vocab)
    assert not notes2 and ids2[:5] == ids and [e is not None for e in entries2] == [True, False, True, False, True, False]


def test_ids_of_another_vocabulary_are_not_scored(vocab):
    """A server running another model returns ids that spell other bytes: nothing after the mismatch is scored."""
    completion = RemoteCompletion("、ア", [entry_from_dict(LLAMACPP_ENTRIES[0])], token_ids=[5, 29917])  # 5 is not "、"
    ids, entries, notes = line_up(completion, vocab)
    assert ids == [] and entries == [] and "does not match the returned token ids" in notes[0]


class ForeignTokenizer:
    """/tokenize answers other ids; /detokenize fails on refllm's, as llama.cpp's does on ids past its vocabulary."""

    def tokenize(self, text, add_special, parse_special):
        return [1]

    def detokenize(self, ids):
        raise ConformanceError("http://x/detokenize: HTTP 500: vector::_M_range_check")


def test_a_foreign_tokenizer_is_reported_not_raised(smollm2):
    result = check_tokenizer(smollm2, ForeignTokenizer(), ["Hello", "world"])
    assert result["tokenize_agree"] == result["detokenize_agree"] == 0 and result["texts"] == 2
    assert result["mismatches"][1]["other"] == "error: http://x/detokenize: HTTP 500: vector::_M_range_check"


def test_shared_support_kl_renormalises_both_sides():
    p, q = np.log([0.25, 0.25]), np.log([0.45, 0.05])  # renormalised: [.5, .5] and [.9, .1]
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert shared_support_kl(p, q) == pytest.approx(expected, rel=1e-12)
    assert shared_support_kl(np.log([0.7]), np.log([0.2])) == 0.0


def test_the_long_prompt_fills_the_context_without_passing_it(vocab):
    from refllm.conformance.suite import build_prompts, load_suite

    version, entries = load_suite("v1")
    tokenize = lambda text: vocab.tokenizer.encode(text, add_special=True, parse_special=True)  # noqa: E731
    (prompt,) = build_prompts(entries, tokenize, 300, only=["long-context"])
    assert version == "refllm-conformance-v1" and prompt.kind == "long"
    assert 300 - 60 < len(tokenize(prompt.text)) <= 300  # one more paragraph (< 60 tokens) would not fit
    assert {p.kind for p in build_prompts(entries, tokenize, 300)} == {"prose", "code", "numbers", "multilingual", "long"}


def test_a_bad_suite_is_a_one_line_error(tmp_path, smollm2_gguf, capsys):
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps({"version": "x", "prompts": [{"id": "a", "kind": "prose"}]}))
    code = main(["conformance", str(smollm2_gguf), "--endpoint", "http://127.0.0.1:9", "--suite", str(suite)])
    err = capsys.readouterr().err
    assert code == 1 and "prompts[0] needs string fields id, kind and text" in err and "Traceback" not in err
