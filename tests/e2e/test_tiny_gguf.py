"""The tiny-model generator (scripts/make_tiny_gguf.py) that the real-llama-server tests use.

These need no llama-server: they pin down what the generator promises (a llama-architecture
GGUF with a SentencePiece-style vocab and a chatml template, byte-identical for a seed) by
reading the file back with the `gguf` package's own reader.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import gguf
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_tiny_gguf.py"


@pytest.fixture(scope="module")
def make() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_make_tiny_gguf_under_test", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def field(reader: gguf.GGUFReader, key: str) -> object:
    return reader.fields[key].contents()


def test_the_same_seed_gives_the_same_bytes_and_another_seed_does_not(
    make: ModuleType, tmp_path: Path
) -> None:
    a = make.write_tiny_gguf(tmp_path / "a.gguf", seed=7).read_bytes()
    again = make.write_tiny_gguf(tmp_path / "again.gguf", seed=7).read_bytes()
    other = make.write_tiny_gguf(tmp_path / "other.gguf", seed=8).read_bytes()
    assert a == again
    assert a != other
    assert len(a) == len(other)


def test_the_tiny_model_is_a_small_llama_with_the_promised_shape(
    make: ModuleType, tmp_path: Path
) -> None:
    path = make.write_tiny_gguf(tmp_path / "m.gguf", seed=0, name="unit")
    assert path.stat().st_size < 1_000_000
    reader = gguf.GGUFReader(path)
    assert field(reader, "general.architecture") == "llama"
    assert field(reader, "general.name") == "unit"
    assert field(reader, "general.file_type") == gguf.LlamaFileType.ALL_F32
    assert field(reader, "llama.embedding_length") == 64
    assert field(reader, "llama.block_count") == 2
    assert field(reader, "llama.attention.head_count") == 4
    assert field(reader, "llama.attention.head_count_kv") == 2
    assert field(reader, "llama.feed_forward_length") == 128
    assert field(reader, "llama.context_length") == 4096
    names = {t.name for t in reader.tensors}
    assert {"token_embd.weight", "output.weight", "output_norm.weight"} <= names
    assert {"blk.1.ffn_down.weight", "blk.1.attn_k.weight"} <= names
    assert all(t.tensor_type == gguf.GGMLQuantizationType.F32 for t in reader.tensors)


def test_the_vocab_is_spm_with_byte_tokens_controls_and_a_chatml_template(
    make: ModuleType, tmp_path: Path
) -> None:
    reader = gguf.GGUFReader(make.write_tiny_gguf(tmp_path / "m.gguf"))
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type")
    scores = field(reader, "tokenizer.ggml.scores")
    assert isinstance(tokens, list) and isinstance(types, list) and isinstance(scores, list)
    assert field(reader, "tokenizer.ggml.model") == "llama"
    assert tokens[:3] == ["<unk>", "<s>", "</s>"]
    assert tokens[3:259] == [f"<0x{b:02X}>" for b in range(256)]
    assert set(types[3:259]) == {gguf.TokenType.BYTE}
    assert len(tokens) == len(set(tokens)) == len(types) == len(scores)
    assert field(reader, "llama.vocab_size") == len(tokens)
    for control in ("<|im_start|>", "<|im_end|>"):
        assert types[tokens.index(control)] == gguf.TokenType.CONTROL
    words = [t for t, ty in zip(tokens, types, strict=True) if ty == gguf.TokenType.NORMAL]
    assert "\u2581hello" in words and len(words) > 100
    assert field(reader, "tokenizer.ggml.bos_token_id") == 1
    assert field(reader, "tokenizer.ggml.eos_token_id") == 2
    template = field(reader, "tokenizer.chat_template")
    assert isinstance(template, str) and "<|im_start|>" in template


def test_the_small_variant_is_larger_and_the_cli_prints_the_path(
    make: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "small.gguf"
    assert make.main([str(out), "--size", "small", "--seed", "3"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    reader = gguf.GGUFReader(out)
    assert field(reader, "llama.embedding_length") == 512
    assert field(reader, "llama.block_count") == 4
    assert 10_000_000 < out.stat().st_size < 50_000_000
