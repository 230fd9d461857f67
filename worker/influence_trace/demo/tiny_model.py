"""Tiny random causal LMs saved to disk: the demo's embedded default, also used by tests and benchmarks.

No weights can be downloaded here, so everything that needs a model builds one from a
``transformers`` config with random weights, saves it with ``save_pretrained`` and lets the worker
load it by path through the real loading code. A word-level tokenizer is saved beside it so text
rollouts work too.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen3Config

WORDS = [
    "the",
    "a",
    "of",
    "to",
    "and",
    "is",
    "in",
    "that",
    "it",
    "for",
    "on",
    "with",
    "as",
    "was",
    "at",
    "by",
    "an",
    "be",
    "this",
    "are",
    "from",
    "or",
    "have",
    "not",
    "but",
    "so",
    "if",
    "then",
    "than",
    "when",
    "which",
    "what",
    "answer",
    "step",
    "first",
    "next",
    "we",
    "let",
    "compute",
    "sum",
    "total",
    "number",
    "add",
    "minus",
    "times",
    "divide",
    "equals",
    "therefore",
    "thus",
    "boxed",
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "hundred",
    "half",
    "twice",
    "more",
    "less",
    "x",
    "y",
    "z",
    "solve",
    "check",
    "result",
    "final",
]
SPECIALS = ("<unk>", "<pad>", "<|endoftext|>")
DIGITS = (*tuple(str(d) for d in range(10)), "+", "-", "*", "/", "=", "\\", "{", "}", ".", ",")

CONFIGS = {"qwen2": Qwen2Config, "qwen3": Qwen3Config, "llama": LlamaConfig}


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over a small vocabulary (words, digits, symbols, specials)."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS + DIGITS + tuple(WORDS))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", eos_token="<|endoftext|>"
    )


def build_tiny_model(
    path: str | Path,
    arch: str = "qwen2",
    hidden_size: int = 32,
    intermediate_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    vocab_size: int | None = None,
    seed: int = 0,
) -> Path:
    """Save a random model (and the word-level tokenizer) under ``path``; return the path."""
    path = Path(path)
    tokenizer = build_tokenizer()
    vocab_size = vocab_size or len(tokenizer)
    config = CONFIGS[arch](
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        head_dim=hidden_size // num_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=arch != "llama",
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # larger than the default init, so scores are not all tiny
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(0.0, 0.2)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    (path / "RANDOM_WEIGHTS").write_text("Random weights (demo/tiny_model.py); reports say so.\n")
    return path
