#!/usr/bin/env python3
"""Write a tiny random-weight llama-architecture GGUF that a real llama-server loads.

Why: end-to-end tests and the demo need a real model file, offline, in milliseconds, without
downloading weights. The text it generates is garbage, but the server genuinely loads it, tokenises
with a real SentencePiece-style ("llama") vocabulary, applies a chatml chat template, streams tokens
and computes embeddings, so the proxy is exercised against the real thing.

The output is a pure function of (spec, seed, name): the same arguments give a byte-identical file.

Usage::

    python scripts/make_tiny_gguf.py OUT.gguf [--seed 0] [--size tiny|small] [--name NAME]

Importable: ``write_tiny_gguf(path, seed=0, spec=TINY, name=None) -> Path``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Word pieces for the vocabulary. "\u2581" is SentencePiece's word-start marker (a space).
_WORDS = (
    "the of and to in is that it for on with as was be at by this are or from have not but "
    "hello world model server llama swap proxy token stream chat test ok yes no one two three "
    "four five six seven eight nine ten red green blue small big fast slow good bad new old "
    "user assistant system answer question say word python code data file time day"
).split()
_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'-:;()"


@dataclass(frozen=True)
class ModelSpec:
    """Shape of the generated model."""

    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_ctx: int = 4096


TINY = ModelSpec(n_embd=64, n_layer=2, n_head=4, n_head_kv=2, n_ff=128)
"""~0.5 MB; llama-server cold start in tens of ms, thousands of tokens/s."""

SMALL = ModelSpec(n_embd=512, n_layer=4, n_head=8, n_head_kv=4, n_ff=512)
"""~25 MB; a few hundred tokens/s, so a stream lasts long enough to observe."""

SPECS: dict[str, ModelSpec] = {"tiny": TINY, "small": SMALL}


def build_vocab() -> tuple[list[str], list[float], list[int]]:
    """A SentencePiece-style vocab: specials, 256 byte tokens, chatml controls, word pieces."""
    tokens: list[str] = ["<unk>", "<s>", "</s>"]
    types: list[int] = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    scores: list[float] = [0.0, 0.0, 0.0]
    for byte in range(256):
        tokens.append(f"<0x{byte:02X}>")
        types.append(gguf.TokenType.BYTE)
        scores.append(0.0)
    for control in ("<|im_start|>", "<|im_end|>"):
        tokens.append(control)
        types.append(gguf.TokenType.CONTROL)
        scores.append(0.0)
    pieces: list[str] = ["\u2581"]
    pieces += [f"\u2581{word}" for word in _WORDS]
    pieces += list(_LETTERS)
    pieces += [f"\u2581{letter}" for letter in _LETTERS[:26]]
    seen = set(tokens)
    for rank, piece in enumerate(dict.fromkeys(pieces)):
        if piece in seen:
            continue
        seen.add(piece)
        tokens.append(piece)
        types.append(gguf.TokenType.NORMAL)
        # Higher score = preferred merge; longer whole words first, then shorter pieces.
        scores.append(-float(rank))
    return tokens, scores, [int(t) for t in types]


def _tensors(
    spec: ModelSpec, n_vocab: int, rng: np.random.Generator
) -> list[tuple[str, np.ndarray]]:
    """The llama tensor set. numpy shapes are (rows, cols) = GGUF (ne1, ne0)."""
    head_dim = spec.n_embd // spec.n_head
    d_q = spec.n_head * head_dim
    d_kv = spec.n_head_kv * head_dim

    def rand(*shape: int) -> np.ndarray:
        scale = 1.0 / np.sqrt(shape[-1])
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    out: list[tuple[str, np.ndarray]] = [("token_embd.weight", rand(n_vocab, spec.n_embd))]
    for i in range(spec.n_layer):
        p = f"blk.{i}"
        out += [
            (f"{p}.attn_norm.weight", ones(spec.n_embd)),
            (f"{p}.attn_q.weight", rand(d_q, spec.n_embd)),
            (f"{p}.attn_k.weight", rand(d_kv, spec.n_embd)),
            (f"{p}.attn_v.weight", rand(d_kv, spec.n_embd)),
            (f"{p}.attn_output.weight", rand(spec.n_embd, d_q)),
            (f"{p}.ffn_norm.weight", ones(spec.n_embd)),
            (f"{p}.ffn_gate.weight", rand(spec.n_ff, spec.n_embd)),
            (f"{p}.ffn_up.weight", rand(spec.n_ff, spec.n_embd)),
            (f"{p}.ffn_down.weight", rand(spec.n_embd, spec.n_ff)),
        ]
    out += [
        ("output_norm.weight", ones(spec.n_embd)),
        ("output.weight", rand(n_vocab, spec.n_embd)),
    ]
    return out


def write_tiny_gguf(
    path: str | Path, *, seed: int = 0, spec: ModelSpec = TINY, name: str | None = None
) -> Path:
    """Write the model to ``path`` (parents created) and return it as a Path."""
    if spec.n_embd % spec.n_head or spec.n_head % spec.n_head_kv:
        raise ValueError(f"inconsistent head layout: {spec}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens, scores, types = build_vocab()
    rng = np.random.default_rng(seed)
    head_dim = spec.n_embd // spec.n_head

    logging.getLogger("gguf").setLevel(logging.WARNING)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name or f"tiny-llama-{spec.n_embd}x{spec.n_layer}-seed{seed}")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_vocab_size(len(tokens))
    writer.add_context_length(spec.n_ctx)
    writer.add_embedding_length(spec.n_embd)
    writer.add_block_count(spec.n_layer)
    writer.add_feed_forward_length(spec.n_ff)
    writer.add_head_count(spec.n_head)
    writer.add_head_count_kv(spec.n_head_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)

    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHATML_TEMPLATE)

    for tensor_name, array in _tensors(spec, len(tokens), rng):
        writer.add_tensor(tensor_name, array)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="output .gguf path")
    parser.add_argument("--seed", type=int, default=0, help="RNG seed (same seed, same bytes)")
    parser.add_argument("--size", choices=sorted(SPECS), default="tiny", help="model shape")
    parser.add_argument("--name", default=None, help="general.name stored in the file")
    args = parser.parse_args(argv)
    path = write_tiny_gguf(args.out, seed=args.seed, spec=SPECS[args.size], name=args.name)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
