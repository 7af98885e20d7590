"""The default generator on ONNX Runtime (rag.generation.onnx_lm / onnx_export / local): the copy
is keyed by its source file, is checked against transformers before use, gives the same
log-probabilities and greedy text, and runs in a process that never imports torch."""

import json
import os
import subprocess
import sys

import pytest

from rag.config import RagConfig
from rag.errors import ConfigError
from rag.generation import GenerationOptions, LocalGenerator, TransformersGenerator, default_generator_path

MSGS = [{"role": "user", "content": "Sources:\n[1] T\nThe Loire, 1,006 km long, is the longest river in France.\n\n"
                                    "Question: How long is the Loire?"}]
TEXTS = ["1,006 km", "1,006 km long, is the longest", "the longest river in France", "Loire", "France"]


def test_runtime_is_validated():
    with pytest.raises(ConfigError, match="generation.runtime"):
        RagConfig.from_dict({"generation": {"runtime": "tensorflow"}})
    with pytest.raises(ValueError):
        LocalGenerator(runtime="tensorflow")


def test_onnx_copy_is_keyed_by_the_source_file_and_needs_its_marker(tmp_path, monkeypatch):
    from rag.generation.onnx_export import DATA_FILE, GRAPH_FILE, MARKER, find_onnx, onnx_folder

    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "m.gguf"
    src.write_bytes(b"GGUF" + b"\0" * 4096)
    folder = onnx_folder(src)
    folder.mkdir(parents=True)
    for name in (GRAPH_FILE, DATA_FILE, "tokenizer.json", "runtime.json"):
        (folder / name).write_bytes(b"x")
    assert find_onnx(src) is None  # no marker: an interrupted export is never used
    (folder / MARKER).write_text("{}")
    assert find_onnx(src) == folder
    src.write_bytes(b"GGUF" + b"\1" * 4096)
    assert find_onnx(src) is None and onnx_folder(src) != folder  # new content: a new copy


def test_onnx_runtime_without_a_gguf_is_a_model_error(tmp_path):
    from rag.errors import ModelError

    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match="GGUF"):
        LocalGenerator(str(tmp_path), runtime="onnx").load()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(transformers reference, ONNX runtime, cache dir): one export of the real SmolLM2 into a
    private cache (about 20 s)."""
    from rag.generation.onnx_export import export_onnx, find_onnx
    from rag.generation.onnx_lm import OnnxCausalLM

    cache = tmp_path_factory.mktemp("onnx-cache")
    folder, name = default_generator_path()
    ref = TransformersGenerator()
    ref._load()  # from the machine's float32 copy when there is one (the GGUF otherwise)
    old = os.environ.get("RAG_CACHE_DIR")
    os.environ["RAG_CACHE_DIR"] = str(cache)
    try:
        made = export_onnx(ref, os.path.join(folder, name))
        assert made is not None and find_onnx(os.path.join(folder, name)) == made
    finally:
        if old is None:
            os.environ.pop("RAG_CACHE_DIR", None)
        else:
            os.environ["RAG_CACHE_DIR"] = old
    return ref, OnnxCausalLM(made), cache


@pytest.mark.slow
def test_onnx_copy_scores_like_transformers(exported):
    ref, onnx, _ = exported
    marker = json.loads((onnx.folder / "rag-onnx.json").read_text())
    assert marker["max_logprob_diff"] <= 1e-3
    assert onnx.render(MSGS) == ref.render(MSGS)
    ref._prompt_cache = None
    onnx.reset_cache()
    for _ in range(2):  # the second round reuses each runtime's prompt KV cache
        a = ref.token_logprobs(MSGS, TEXTS, end_text=" [")
        b = onnx.token_logprobs(MSGS, TEXTS, end_text=" [")
        for ra, rb in zip(a, b):
            assert ra[0] == rb[0]
            assert ra[1] == pytest.approx(rb[1], abs=1e-3) and ra[2] == pytest.approx(rb[2], abs=1e-3)
    # another prompt family (a different system prompt) keeps its own cache slot: the first
    # family's prefix survives it, and the numbers still equal transformers'
    other = [{"role": "system", "content": "Say Yes or No."}, MSGS[0]]
    ref._prompt_cache = None
    assert onnx.token_logprobs(other, ["Yes", "No"])[0][1] == pytest.approx(ref.token_logprobs(other, ["Yes", "No"])[0][1], abs=1e-3)
    assert len(onnx._prompt_caches) == 2
    again = onnx.token_logprobs(MSGS, TEXTS, end_text=" [")
    for ra, rb in zip(a, again):
        assert ra[1] == pytest.approx(rb[1], abs=1e-3)
    top = onnx.token_logprobs(MSGS, TEXTS, top_first=2)
    assert sum(r is not None for r in top) == 2
    opts = GenerationOptions(max_new_tokens=16)
    assert onnx.generate(MSGS, opts) == ref.generate(MSGS, opts)
    assert "".join(onnx.stream(MSGS, GenerationOptions(max_new_tokens=16, stop=("km",)))) == ref.generate(
        MSGS, GenerationOptions(max_new_tokens=16, stop=("km",)))
    assert onnx.count_tokens("Paris is nice") == ref.count_tokens("Paris is nice")


@pytest.mark.slow
def test_a_new_process_runs_the_copy_without_torch(exported):
    ref, _, cache = exported
    code = ("import sys, json; from rag.generation import LocalGenerator, GenerationOptions; g = LocalGenerator(); "
            "t = g.generate(%r, GenerationOptions(max_new_tokens=12)); "
            "print(json.dumps([g.runtime_name, 'torch' in sys.modules, 'transformers' in sys.modules, t]))" % (MSGS,))
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, RAG_CACHE_DIR=str(cache)),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    runtime, torch_loaded, tf_loaded, text = json.loads(out.stdout.strip().splitlines()[-1])
    assert (runtime, torch_loaded, tf_loaded) == ("onnxruntime", False, False)
    assert text == ref.generate(MSGS, GenerationOptions(max_new_tokens=12))
