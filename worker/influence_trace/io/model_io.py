"""Loading the traced model (and, for text rollouts, its tokenizer) from a local directory.

Only local files are read: the worker runs where nothing can be downloaded, and a model name that
silently resolves to a Hub download would trace a different model than the manifest names.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from influence_trace.api.contract import InvalidInput
from influence_trace.api.spec import ModelSpec

STAGE = "load_model"
EXPECTED = "a Hugging Face model directory with config.json and weights"
GENERIC_TOKENIZERS = (None, "TokenizersBackend", "PreTrainedTokenizerFast")
DTYPES = {
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float32": torch.float32,
    "float64": torch.float64,
}


def check_model_dir(path: str | Path) -> Path:
    """The model directory, or InvalidInput naming ``spec.model.path`` when it cannot be a model."""
    path = Path(path)
    if not path.is_dir():
        raise InvalidInput(f"spec.model.path: {path} is not a directory (expected {EXPECTED})", STAGE)
    if not (path / "config.json").is_file():
        raise InvalidInput(f"spec.model.path: {path} has no config.json (expected {EXPECTED})", STAGE)
    return path


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def load_model(spec: ModelSpec, device: str) -> torch.nn.Module:
    """The causal LM in the manifest's dtype, on ``device``, in eval mode (no dropout: scores must not
    depend on random masks). Bitwise equal scores between two GPU runs also need deterministic kernels
    (``trace.deterministic``, trace/determinism.py). Gradient settings are left to the trace, which
    knows what it differentiates."""
    from transformers import AutoModelForCausalLM

    path = check_model_dir(spec.path)
    _offline()
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[spec.dtype], local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise InvalidInput(f"spec.model.path: cannot load a causal LM from {path}: {err}", STAGE) from None
    model.to(device)
    model.eval()
    return model


def _declared_tokenizer_class(path: Path) -> str | None:
    try:
        return json.loads((path / "tokenizer_config.json").read_text()).get("tokenizer_class")
    except (OSError, ValueError, AttributeError):
        return None


def load_tokenizer(spec: ModelSpec) -> Any:
    """The model directory's tokenizer; needed only when rollouts rows carry text.

    A directory whose tokenizer.json declares no model-specific class is loaded exactly as saved:
    AutoTokenizer would otherwise pick the class from config.json's model type (Qwen2Tokenizer for a
    qwen2 model) and rebuild a different pipeline around the same vocabulary, changing the token ids.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = check_model_dir(spec.path)
    _offline()
    generic = _declared_tokenizer_class(path) in GENERIC_TOKENIZERS and (path / "tokenizer.json").is_file()
    loader = PreTrainedTokenizerFast if generic else AutoTokenizer
    try:
        return loader.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise InvalidInput(
            f"spec.model.path: rollouts have text rows but {path} has no usable tokenizer: {err}", STAGE
        ) from None


def vocab_size(model: torch.nn.Module) -> int:
    """Rows of the input embedding: the real bound on token ids (config.vocab_size may be padded)."""
    return int(model.get_input_embeddings().num_embeddings)
