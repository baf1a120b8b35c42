"""Generation speed: our `GenerationEngine` against `transformers`' `LlamaForCausalLM.generate` (its
default dynamic KV cache, SDPA attention) on the same weights and the same prompts, in fp32 and with the
same int8 weight-only layers on both sides.

    python -m benchmarks.bench_generate                                  # ~4 minutes on 2 CPU cores
    python -m benchmarks.bench_generate --sizes vqlm_debug --batch-sizes 1 8 --eager

For each model size (default: vqlm_debug and vqlm_100m, exact dimensions of the original, random weights
from our seeded initialisation written once as a Hugging Face folder and loaded by each side as its
users would) and each batch size (default 1): prompts of `--context-images` images × 256 tokens of
random VQ codes (no specials), then one image of 256 new tokens, greedy with every special id
suppressed — what the LVM does when it writes the next image. Rows: ours with the decode step compiled
(`compile_decode=True`, which at batch 1 on CPU includes inductor's decompose-mm pass,
`lvm.generation.engine.DECODE_INDUCTOR_OPTIONS`; compiled in the warm-up call, outside the timings) in fp32 and in int8
(`quantize="int8"`), `--eager` adds both eagerly; `transformers` in fp32, and with its decoder layers
quantized by the same `quantize_model` (what the engine adds on equal weights). The last column is the
share of tokens equal to `transformers` fp32 (100 % for every fp32 row: greedy on the same weights).
- time to first image: the wall time of the whole call (prefill + 256 decode steps);
- decode tokens/s: new tokens (batch × 255) / (that time − the time of the same call with one new token,
  i.e. the prefill and call overhead), so prefill speed does not blur the per-token figure;
- bandwidth used: bytes one decode step reads (weights but the embedding, plus the KV cache at the
  average context) × steps/s ÷ this machine's read bandwidth, measured first (a large `torch.sum`).
Each measurement is the median of `--rounds` interleaved rounds after one warm-up call per side.
The headline is the decode-speed ratio at batch 1 for the largest size, for our fastest row, against
`transformers` fp32 as users run it; the line above it gives the ratio against `transformers` + int8.
Target >= 2x (goal 3x).
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import tempfile
import time
import warnings

import torch
from transformers import LlamaForCausalLM
from transformers.utils import logging as hf_logging

from benchmarks.machine import cpu_name
from lvm.generation.engine import GenerationEngine
from lvm.generation.quantize import quantize_model, weight_bytes
from lvm.generation.sampler import SamplingConfig
from lvm.interop.hf import export_hf
from lvm.interop.pretrained import load_model
from lvm.model.config import NUM_VQ_CODES, ModelConfig
from lvm.model.llama import LLaMA

TOKENS_PER_IMAGE = 256
GREEDY = SamplingConfig(temperature=0)


def hf_generate(model: LlamaForCausalLM, prompts: torch.Tensor, new_tokens: int) -> torch.Tensor:
    vocab = model.config.vocab_size
    out = model.generate(
        prompts,
        attention_mask=torch.ones_like(prompts),
        do_sample=False,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        suppress_tokens=list(range(NUM_VQ_CODES, vocab)),
        pad_token_id=NUM_VQ_CODES,
        eos_token_id=None,
        bos_token_id=None,
    )
    return out[:, prompts.shape[1] :]


def timed(fn) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def read_bandwidth_gbs(megabytes: int = 512, repeats: int = 5) -> float:
    """This machine's memory read bandwidth: the best of `repeats` sums over a buffer far larger than the
    caches, with every thread torch uses (GB/s, 1e9 bytes)."""
    buffer = torch.ones(megabytes * 2**20 // 4)
    best = min(timed(lambda: buffer.sum())[0] for _ in range(repeats))
    return buffer.numel() * 4 / best / 1e9


def bytes_per_decode_step(model: torch.nn.Module, config: ModelConfig, batch: int, context: int) -> int:
    """Bytes one decode step reads: every weight but the embedding table (a lookup reads one row), plus the
    K and V caches of every layer at the average context length of the image being written."""
    embedding = next(m for m in model.modules() if isinstance(m, torch.nn.Embedding)).weight
    weights = weight_bytes(model) - embedding.numel() * embedding.element_size()
    kv = 2 * config.num_layers * batch * context * config.hidden_size * 4  # fp32 caches
    return weights + kv


def bench_size(
    name: str,
    batch_sizes: list[int],
    context_images: int,
    rounds: int,
    batched_rounds: int,
    seed: int,
    eager: bool = False,
) -> list[dict]:
    config = ModelConfig.from_name(name)
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as folder:
        export_hf(LLaMA(config), folder, dtype=torch.float32)
        ours = GenerationEngine(load_model(folder))
        ours_int8 = GenerationEngine(load_model(folder, quantize="int8"))
        theirs = LlamaForCausalLM.from_pretrained(folder, attn_implementation="sdpa", dtype=torch.float32).eval()
        theirs_int8 = LlamaForCausalLM.from_pretrained(folder, attn_implementation="sdpa", dtype=torch.float32)
        quantize_model(theirs_int8.model, "int8")  # the same layers and kernel as ours: the head stays fp32
    engines = {
        "ours, compiled step": GenerationEngine(ours.model, compile_decode=True, compile_options={"dynamic": False}),
        "ours int8, compiled step": GenerationEngine(
            ours_int8.model, compile_decode=True, compile_options={"dynamic": False}
        ),
    }
    if eager:
        engines = {"ours": ours, "ours int8": ours_int8, **engines}
    models = {
        "ours": ours.model,
        "ours int8": ours_int8.model,
        "transformers": theirs,
        "transformers int8": theirs_int8,
    }
    rows = []
    g = torch.Generator().manual_seed(seed + 1)
    for batch in batch_sizes:
        prompts = torch.randint(0, NUM_VQ_CODES, (batch, context_images * TOKENS_PER_IMAGE), generator=g)
        calls = {side: (lambda n, e=engine, p=prompts: e.generate(p, n, GREEDY)) for side, engine in engines.items()}
        calls["transformers"] = lambda n, p=prompts: hf_generate(theirs, p, n)
        calls["transformers int8"] = lambda n, p=prompts: hf_generate(theirs_int8, p, n)
        with torch.inference_mode():
            reference = calls["transformers"](TOKENS_PER_IMAGE)  # also the warm-up (and compilation) of each side
            agreement = {
                side: (call(TOKENS_PER_IMAGE) == reference).float().mean().item() for side, call in calls.items()
            }
            times: dict[str, dict[str, list[float]]] = {k: {"image": [], "prefill": []} for k in calls}
            for r in range(rounds if batch == 1 else batched_rounds):
                for side in list(calls)[r % len(calls) :] + list(calls)[: r % len(calls)]:  # rotating order
                    call = calls[side]
                    times[side]["prefill"].append(timed(lambda call=call: call(1))[0])
                    times[side]["image"].append(timed(lambda call=call: call(TOKENS_PER_IMAGE))[0])
        context = context_images * TOKENS_PER_IMAGE + TOKENS_PER_IMAGE // 2
        for side in calls:
            image = statistics.median(times[side]["image"])
            prefill = statistics.median(times[side]["prefill"])
            model = models[side.split(",")[0]]
            rows.append(
                {
                    "size": name,
                    "params": config.num_parameters,
                    "batch": batch,
                    "side": side,
                    "first_image_s": image,
                    "decode_tok_s": batch * (TOKENS_PER_IMAGE - 1) / (image - prefill),
                    "step_bytes": bytes_per_decode_step(model, config, batch, context),
                    "agreement": agreement[side],
                }
            )
        print(f"  {name} batch {batch}: done", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["vqlm_debug", "vqlm_100m"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1], help="e.g. 1 8 (batch 8 adds minutes)")
    parser.add_argument("--context-images", type=int, default=3, help="prompt images of 256 tokens")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds at batch 1 (the headline)")
    parser.add_argument("--batched-rounds", type=int, default=1, help="timed rounds at larger batches")
    parser.add_argument("--eager", action="store_true", help="also our eager rows (fp32 and int8)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    hf_logging.set_verbosity_error()
    bandwidth = read_bandwidth_gbs()
    rows = [
        row
        for name in args.sizes
        for row in bench_size(name, args.batch_sizes, args.context_images, args.rounds, args.batched_rounds, args.seed)
    ]
    print(
        f"\nGeneration, {args.context_images} prompt images ({args.context_images * TOKENS_PER_IMAGE} tokens) → "
        f"1 image ({TOKENS_PER_IMAGE} tokens), greedy, fp32 (int8: weight-only blocks); {cpu_name()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, {datetime.date.today()}; "
        f"measured read bandwidth {bandwidth:.1f} GB/s\n"
    )
    print(
        "| model | batch | engine | time to first image (s) | decode tokens/s | speed-up | "
        "bandwidth used | tokens equal to transformers fp32 |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    ratios = {}
    for row in rows:
        ref = next(
            r for r in rows if r["size"] == row["size"] and r["batch"] == row["batch"] and r["side"] == "transformers"
        )
        ratio = row["decode_tok_s"] / ref["decode_tok_s"]
        ratios[(row["size"], row["batch"], row["side"])] = ratio
        used = row["step_bytes"] * row["decode_tok_s"] / row["batch"] / 1e9 / bandwidth
        print(
            f"| {row['size']} ({row['params'] / 1e6:.1f} M) | {row['batch']} | {row['side']} | "
            f"{row['first_image_s']:.2f} | {row['decode_tok_s']:.0f} | {ratio:.2f}x | {100 * used:.0f} % | "
            f"{100 * row['agreement']:.1f} % |"
        )
    largest = max(args.sizes, key=lambda n: ModelConfig.from_name(n).num_parameters)
    batch = min(args.batch_sizes)
    best = max(
        (side for (size, b, side) in ratios if size == largest and b == batch and side.startswith("ours")),
        key=lambda side: ratios[(largest, batch, side)],
    )
    against_int8 = ratios[(largest, batch, best)] / ratios[(largest, batch, "transformers int8")]
    print(f"\nheadline: decode tokens/s of {largest} at batch {batch}, {best}")
    print(f"{against_int8:.2f}x vs transformers generate with the same int8 layers")
    print(f"bench_generate: {ratios[(largest, batch, best)]:.2f}x vs transformers generate (target 2x)")


if __name__ == "__main__":
    main()
