"""Benchmark: peak host memory of one capture forward/backward on the CPU, before and after issue 13.

A random Qwen2 with a small body and the real vocabulary (hidden 256, intermediate 512, 2 layers,
vocab 151,936, float32, weights frozen, a leaf on the input embeddings as the worker does) runs one
sequence of ``--prompt`` + ``--response`` tokens twice, each in a fresh process:

- ``before``: the previous capture (every layer's activations kept for backward; ``lm_head`` over all
  response positions at once, float32 log-softmax, gather);
- ``after``: the worker's capture path (trace/lean_capture.py: every decoder layer checkpointed, the
  log-probabilities in checkpointed chunks of ``logit_chunk_tokens(vocab)`` positions).

Each process reads its resident set after building the model, resets the kernel's high-water mark
(``/proc/self/clear_refs``), runs the forward/backward and reports VmHWM minus that baseline. The
memory model's capture_batch prediction (planning/memory_model.py) is printed beside it.

    .venv/bin/python bench/capture_memory.py [--prompt 128] [--response 1024]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from contextlib import nullcontext

SHAPES = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4,
          "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True}


def status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def build_model():
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(Qwen2Config(**SHAPES), dtype=torch.float32).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    model.get_input_embeddings().register_forward_hook(lambda _m, _a, out: out.detach().requires_grad_(True))
    return model


def one_pass(variant: str, prompt: int, response: int) -> dict:
    """Run in a fresh process: the peak resident growth of one capture forward/backward."""
    import torch
    from influence_trace.planning.memory_model import logit_chunk_tokens
    from influence_trace.trace.lean_capture import checkpointed_layers, response_log_probs

    torch.set_num_threads(1)
    model = build_model()
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, SHAPES["vocab_size"], (1, prompt + response), generator=gen)
    positions = torch.arange(prompt - 1, prompt + response - 1)
    targets = ids[0, prompt:]
    lm_head = model.get_output_embeddings()
    baseline = status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident set
    lean = variant == "after"
    with checkpointed_layers(model) if lean else nullcontext():
        hidden = model.base_model(input_ids=ids, use_cache=False)[0][0, positions]
        if lean:
            logp = response_log_probs(lm_head, hidden, targets, logit_chunk_tokens(SHAPES["vocab_size"]))
        else:
            logits = lm_head(hidden).float()
            logp = torch.log_softmax(logits, dim=-1).gather(1, targets[:, None])[:, 0]
        logp.sum().backward()
    return {"variant": variant, "peak_bytes": (status_kib("VmHWM") - baseline) * 1024}


def predicted(prompt: int, response: int) -> int:
    from influence_trace.api.architectures import shapes_from_config
    from influence_trace.planning.memory_model import capture_batch_bytes

    shapes = shapes_from_config({**SHAPES, "model_type": "qwen2"})
    return capture_batch_bytes(shapes, prompt + response, response, "float32")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--response", type=int, default=1024)
    parser.add_argument("--variant", choices=["before", "after"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(one_pass(args.variant, args.prompt, args.response)))
        return
    peaks = {}
    for variant in ("before", "after"):
        out = subprocess.run([sys.executable, __file__, "--variant", variant, "--prompt", str(args.prompt),
                              "--response", str(args.response)], check=True, capture_output=True, text=True)
        peaks[variant] = json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"]
    print(f"tokens {args.prompt} + {args.response}, vocab {SHAPES['vocab_size']}, "
          f"hidden {SHAPES['hidden_size']}, {SHAPES['num_hidden_layers']} layers, float32")
    print("| capture | peak growth (VmHWM) | memory model |")
    print("|---|---|---|")
    print(f"| before | {peaks['before'] / 1e6:.0f} MB | - |")
    print(f"| after | {peaks['after'] / 1e6:.0f} MB | {predicted(args.prompt, args.response) / 1e6:.0f} MB |")
    print(f"ratio before / after: {peaks['before'] / peaks['after']:.1f}")


if __name__ == "__main__":
    main()
