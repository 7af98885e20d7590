"""Generators: echo fake, stop handling, OpenAI-compatible HTTP backend, real SmolLM2 (slow)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from rag.config import GenerationConfig
from rag.errors import ConfigError, GenerationError
from rag.generation import (
    EchoGenerator,
    ExtractiveGenerator,
    GenerationOptions,
    LocalGenerator,
    OpenAICompatibleGenerator,
    TransformersGenerator,
    _stream_with_stop,
    make_generator,
)

MSGS = [{"role": "user", "content": "Sources:\n[1] T\nParis is the capital of France. It is big.\n\nQuestion: capital?"}]


def test_echo_returns_first_source_sentence_with_marker():
    g = EchoGenerator()
    assert g.generate(MSGS, GenerationOptions()) == "Paris is the capital of France. [1]"
    assert "".join(g.stream(MSGS, GenerationOptions())) == g.generate(MSGS, GenerationOptions())
    assert g.count_tokens("a b  c") == 3


def test_echo_scripted_and_stop():
    g = EchoGenerator("Answer one. STOP more")
    assert g.generate(MSGS, GenerationOptions(stop=("STOP",))) == "Answer one. "
    assert "".join(g.stream(MSGS, GenerationOptions(stop=("STOP",)))) == "Answer one. "


def test_stream_with_stop_holds_back_partial_stop_strings():
    pieces = ["Hel", "lo <", "|en", "d|> tail"]
    assert "".join(_stream_with_stop(iter(pieces), ("<|end|>",))) == "Hello "
    assert "".join(_stream_with_stop(iter(["a <", "b"]), ("<|end|>",))) == "a <b"


def test_make_generator_backends():
    assert isinstance(make_generator(GenerationConfig(backend="extractive")), ExtractiveGenerator)
    assert isinstance(make_generator(GenerationConfig(backend="echo")), EchoGenerator)
    t = make_generator(GenerationConfig())
    assert isinstance(t, LocalGenerator) and t.runtime == "auto" and t.runtime_name is None  # lazy
    assert make_generator(GenerationConfig(runtime="transformers")).runtime == "transformers"
    with pytest.raises(ConfigError):
        make_generator(GenerationConfig(backend="openai"))  # no base_url


class _Handler(BaseHTTPRequestHandler):
    requests: list = []

    def log_message(self, *a):  # keep test output quiet
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Handler.requests.append((self.path, dict(self.headers), body))
        if body["messages"][-1]["content"] == "fail":
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"internal boom\n")
            return
        if body.get("stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for piece in ["Paris", " is", " the capital [1]."]:
                ev = {"choices": [{"delta": {"content": piece}}]}
                self.wfile.write(f"data: {json.dumps(ev)}\n\n".encode())
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
            return
        data = {"choices": [{"message": {"role": "assistant", "content": "Paris is the capital [1]."}}]}
        raw = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture()
def server():
    srv = HTTPServer(("127.0.0.1", 0), _Handler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    _Handler.requests = []
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
    srv.server_close()


def test_openai_compatible_generate_and_stream(server, monkeypatch):
    monkeypatch.setenv("TEST_RAG_KEY", "sekret")
    g = OpenAICompatibleGenerator(server, "tiny", api_key_env="TEST_RAG_KEY", timeout_s=5)
    assert g.generate(MSGS, GenerationOptions(max_new_tokens=7)) == "Paris is the capital [1]."
    path, headers, body = _Handler.requests[-1]
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == "Bearer sekret"
    assert body["model"] == "tiny" and body["max_tokens"] == 7 and body["stream"] is False
    pieces = list(g.stream(MSGS, GenerationOptions()))
    assert pieces == ["Paris", " is", " the capital [1]."]
    assert _Handler.requests[-1][2]["stream"] is True


def test_openai_compatible_without_key_and_http_error(server, monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    g = OpenAICompatibleGenerator(server, "tiny", api_key_env="NO_SUCH_KEY_VAR", timeout_s=5)
    assert g.generate(MSGS, GenerationOptions()) == "Paris is the capital [1]."
    assert "Authorization" not in _Handler.requests[-1][1]
    with pytest.raises(GenerationError) as e:
        g.generate([{"role": "user", "content": "fail"}], GenerationOptions())
    assert "HTTP 500" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(GenerationError):
        list(g.stream([{"role": "user", "content": "fail"}], GenerationOptions()))


def test_openai_compatible_unreachable_is_generation_error():
    g = OpenAICompatibleGenerator("http://127.0.0.1:9", "tiny", timeout_s=2)
    with pytest.raises(GenerationError):
        g.generate(MSGS, GenerationOptions())


@pytest.fixture(scope="module")
def smollm2():
    """One SmolLM2 load (20-50 s) shared by the slow tests of this module."""
    return TransformersGenerator()


@pytest.mark.slow
def test_smollm2_stream_equals_generate_and_scores(smollm2):
    g = smollm2
    opts = GenerationOptions(max_new_tokens=12)
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    text = g.generate(msgs, opts)
    assert "Paris" in text
    assert "".join(g.stream(msgs, opts)) == text
    assert g.count_tokens("Paris is nice") >= 3
    good, bad = g.score_continuations(msgs, ["The capital of France is Paris", "The capital of France is Berlin"])
    assert good > bad


@pytest.mark.slow
def test_smollm2_prompt_prefix_reuse_gives_identical_logprobs(smollm2):
    """token_logprobs reuses the KV cache of the previous prompt's common prefix; the numbers
    must equal a cold computation, and a prompt sharing nothing must not reuse it."""
    g = smollm2
    sys_msg = {"role": "system", "content": "You answer questions using only the numbered sources, briefly."}
    a = [sys_msg, {"role": "user", "content": "Sources:\n[1] T\nParis is the capital of France.\n\nQuestion: capital?"}]
    b = [sys_msg, {"role": "user", "content": "Sources:\n[1] U\nThe Loire is a long river.\n\nQuestion: longest river?"}]
    texts = ["Paris", "the capital of France", "Loire"]
    g._prompt_cache = None
    cold = g.token_logprobs(b, texts, end_text=" [")
    g.token_logprobs(a, texts, end_text=" [")  # leaves a's cache; b shares the system prefix
    ids_b = g.tokenizer(g.render(b), add_special_tokens=False)["input_ids"]
    shared = sum(1 for _ in __import__("itertools").takewhile(lambda p: p[0] == p[1], zip(g._prompt_cache[0], ids_b)))
    assert shared >= 16  # the reuse path is really taken
    warm = g.token_logprobs(b, texts, end_text=" [")
    for c, w in zip(cold, warm):
        assert c[0] == w[0]
        assert c[1] == pytest.approx(w[1], abs=1e-4) and c[2] == pytest.approx(w[2], abs=1e-4)


@pytest.mark.slow
def test_smollm2_packed_scoring_equals_padded_batches(smollm2):
    """token_logprobs packs all texts into one sequence (block-diagonal mask, per-text
    positions); every log-probability must equal the padded-batch computation."""
    g = smollm2
    msgs = [{"role": "user", "content": "Sources:\n[1] T\nThe Loire, 1,006 km long, is the longest river in France.\n\n"
                                        "Question: How long is the Loire?"}]
    texts = ["1,006 km", "1,006 km long, is the longest", "the longest river in France", "Loire", "France"]
    g._packing = None
    packed = g.token_logprobs(msgs, texts, end_text=" [")
    assert g._packing is True  # the first-call check passed and the packed path is in use
    g._packing = False
    padded = g.token_logprobs(msgs, texts, end_text=" [", batch_size=2)
    for p, q in zip(packed, padded):
        assert p[0] == q[0] and len(p[1]) == len(q[1]) == len(p[0])
        assert p[1] == pytest.approx(q[1], abs=1e-4) and p[2] == pytest.approx(q[2], abs=1e-4)
    # a pack limit smaller than the texts splits them over several packs with the same result
    import rag.generation.transformers as gen_mod

    old = gen_mod.PACK_MAX_TOKENS
    gen_mod.PACK_MAX_TOKENS = 6
    try:
        g._packing = True
        split = g.token_logprobs(msgs, texts, end_text=" [")
    finally:
        gen_mod.PACK_MAX_TOKENS = old
    for p, q in zip(split, padded):
        assert p[1] == pytest.approx(q[1], abs=1e-4) and p[2] == pytest.approx(q[2], abs=1e-4)


def test_derived_copy_is_keyed_by_the_source_file(tmp_path, monkeypatch):
    """A GGUF with other content maps to a new derived folder (a touched one keeps its copy); an incomplete folder (no marker)
    is never used."""
    import os

    from rag.generation.derived import MARKER, derived_folder, find_derived

    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "m.gguf"
    src.write_bytes(b"GGUF" + b"\0" * 4096)
    first = derived_folder(src)
    assert first.parent == tmp_path / "cache" / "generator" and first.name.startswith("m-")
    first.mkdir(parents=True)
    (first / "model.safetensors").write_bytes(b"x")
    assert find_derived(src) is None  # no marker: a crash mid-write, never used
    (first / MARKER).write_text("{}")
    assert find_derived(src) == first
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert find_derived(src) == first  # touched only (or the same file in another venv): same copy
    src.write_bytes(b"GGUF" + b"\1" * 4096)
    assert derived_folder(src) != first and find_derived(src) is None  # the content changed: rebuild


@pytest.mark.slow
def test_derived_float32_copy_matches_the_gguf_and_is_rebuilt_when_it_changes(tmp_path, monkeypatch):
    """First load of a GGUF writes the float32 copy; a new generator loads the copy, whose
    log-probabilities equal the GGUF-loaded model's; changing the GGUF makes a new copy."""
    import json
    import os
    import shutil

    import torch

    from rag.generation import default_generator_path
    from rag.generation.derived import MARKER, derive, find_derived

    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "cache"))
    folder, name = default_generator_path()
    src = tmp_path / name
    shutil.copy(os.path.join(folder, name), src)
    first = TransformersGenerator(str(src))
    first._load()  # the GGUF path (20-50 s), which writes the copy
    copy_dir = find_derived(src)
    assert copy_dir is not None and json.loads((copy_dir / MARKER).read_text())["max_logprob_diff"] <= 1e-4
    second = TransformersGenerator(str(src))
    second._load()
    assert second._derived == str(copy_dir)
    ids = torch.tensor([second.tokenizer(second.render(MSGS), add_special_tokens=False)["input_ids"]])
    assert ids.tolist() == [first.tokenizer(first.render(MSGS), add_special_tokens=False)["input_ids"]]
    with torch.inference_mode():
        a = torch.log_softmax(first.model(input_ids=ids).logits.float(), dim=-1)
        b = torch.log_softmax(second.model(input_ids=ids).logits.float(), dim=-1)
    assert float((a - b).abs().max()) <= 1e-4
    assert second.generate(MSGS, GenerationOptions(max_new_tokens=12)) == first.generate(MSGS, GenerationOptions(max_new_tokens=12))
    with open(src, "ab") as fh:  # a changed GGUF (trailing bytes: the loaded model stays usable)
        fh.write(b"\0" * 8)
    assert find_derived(src) is None
    rebuilt = derive(first.model, first.tokenizer, src)  # what the next GGUF load does
    assert rebuilt is not None and rebuilt != copy_dir and find_derived(src) == rebuilt
