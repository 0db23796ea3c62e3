"""Cost of explaining a causal LM's continuation by word erasure (issue 15).

A GPT-2-small-shaped model (12 layers, 768 wide, 50257-token vocabulary) with RANDOM weights
(timing only; nothing is downloaded), a word-level tokenizer (one token per word), prompts of
64/128/256 words, a 16-token continuation, every prompt word deleted in turn. For

  (a) Captum's LLMAttribution(FeatureAblation), forward_in_tokens=False (one pass per variant),
  (b) ContinuationErasure(reuse_prefix=False): every variant recomputed, rows packed,
  (c) ContinuationErasure(): the prompt's KV cache reused, only suffixes computed,

it prints the best-of-N wall time, the model forward calls, the token positions the model
computed (counted by a wrapper around ``model.forward`` for all three, padding included), an
estimate of the model's floating-point work, and the ratios. The estimate counts the weight
matmuls (``24 * d**2`` per position and layer), attention scores and values (``4 * d`` per
query-key pair and layer) and the LM head (``2 * d * vocab`` per logit computed; Captum scores
every position, ours only the continuation's): it is what a compute-bound device pays, so the
(a)/(c) time ratio on a CPU stays near the (a)/(c) work ratio however the rows are packed.

    PYTHONPATH=. HF_HUB_OFFLINE=1 python examples/benchmark_generation.py --threads 2
"""

from __future__ import annotations

import argparse
import functools
import time

import torch
from captum.attr import FeatureAblation, LLMAttribution, TextTemplateInput
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from captum_erasure import ContinuationErasure

VOCAB = 50257


def build(seed: int = 0):
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=1024)).eval()
    vocab = {f"w{i}": i for i in range(VOCAB - 1)}
    vocab["<unk>"] = VOCAB - 1
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")
    return model, tokenizer


class Counter:
    """Model forward calls, token positions (input_ids numel, padding included) and estimated
    floating-point work, by wrapping ``model.forward`` (Captum calls ``model.forward``
    directly, past any hook)."""

    def __init__(self, model):
        config = model.config
        self.width, self.layers = config.n_embd, config.n_layer
        self.reset()
        inner = model.forward

        @functools.wraps(inner)  # keeps the signature (cache argument, logits_to_keep)
        def forward(*args, **kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            output = inner(*args, **kwargs)
            attention = kwargs.get("attention_mask")
            keys = attention.shape[-1] if attention is not None else ids.shape[1]
            self.calls += 1
            self.positions += ids.numel()
            d, n = self.width, self.layers
            self.flops += (24 * d * d * n * ids.numel()  # q, k, v, out, MLP matmuls
                           + 4 * d * n * ids.numel() * keys  # scores and weighted values
                           + 2 * d * output.logits[..., 0].numel() * output.logits.shape[-1])
            return output

        model.forward = forward

    def reset(self):
        self.calls = self.positions = self.flops = 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--continuation", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="best of N for (b) and (c)")
    parser.add_argument("--captum-repeats", type=int, default=1)
    parser.add_argument("--captum-max-length", type=int, default=128,
                        help="skip (a) above this prompt length (it takes minutes)")
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = build()
    counter = Counter(model)
    rng = torch.Generator().manual_seed(1)
    print(f"threads={args.threads}, continuation={args.continuation} tokens, random weights")
    print("| prompt | method | best time (s) | forward calls | token positions | GFLOP (est.) | "
          "(c)/(b) positions | (b)/(c) time | (a)/(c) time | (a)/(c) GFLOP |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for length in args.lengths:
        words = [f"w{int(i)}" for i in torch.randint(0, VOCAB - 1, (length,), generator=rng)]
        target = " ".join(f"w{int(i)}" for i in
                          torch.randint(0, VOCAB - 1, (args.continuation,), generator=rng))
        prompt = " ".join(words)
        rows = {}

        def timed(name, fn, repeats):
            best = float("inf")
            for _ in range(repeats):
                counter.reset()
                start = time.perf_counter()
                result = fn()
                best = min(best, time.perf_counter() - start)
            rows[name] = (best, counter.calls, counter.positions, result, counter.flops)

        if length <= args.captum_max_length:
            inp = TextTemplateInput(" ".join(["{}"] * length), values=words)
            llm = LLMAttribution(FeatureAblation(model), tokenizer)
            # forward_in_tokens=False: one pass over prompt + continuation per variant, the
            # fastest correct Captum path here. Its default (token-by-token decode with
            # use_cached_outputs=True) re-feeds the whole sequence on top of the cache under
            # transformers 5 (wrong log-probabilities; GPT-2 runs out of positions at 64 words).
            timed("(a) Captum LLMAttribution(FeatureAblation)",
                  lambda: llm.attribute(inp, target=target, forward_in_tokens=False),
                  args.captum_repeats)
        full = ContinuationErasure(model, tokenizer, reuse_prefix=False,
                                   max_tokens=args.max_tokens)
        reuse = ContinuationErasure(model, tokenizer, max_tokens=args.max_tokens)
        timed("(b) ours, no reuse", lambda: full.attribute(prompt, target), args.repeats)
        timed("(c) ours, prefix reuse", lambda: reuse.attribute(prompt, target), args.repeats)
        b, c = rows["(b) ours, no reuse"], rows["(c) ours, prefix reuse"]
        torch.testing.assert_close(b[3].token_attr, c[3].token_attr, rtol=0, atol=1e-3)
        a = rows.get("(a) Captum LLMAttribution(FeatureAblation)")
        for name, (best, calls, positions, _, flops) in rows.items():
            extra = " | | | |"
            if name.startswith("(c)"):
                extra = (f" {c[2] / b[2]:.3f} | {b[0] / c[0]:.2f}x | "
                         + (f"{a[0] / c[0]:.1f}x | {a[4] / c[4]:.1f}x |" if a else "n/a | n/a |"))
            print(f"| {length} | {name} | {best:.2f} | {calls} | {positions} | {flops / 1e9:.1f} "
                  f"|{extra}", flush=True)
        real = reuse.last_stats.real_token_positions
        print(f"(c) without its padding: {real} token positions, {real / b[2]:.3f} of (b)'s",
              flush=True)


if __name__ == "__main__":
    main()
