"""The GPU check, ready for the day a CUDA machine is lent: one command, one table.

    bash benchmarks/gpu_check.sh                 # on one CUDA GPU with torch and transformers installed
    python -m benchmarks.gpu_check --dry-run     # the same code on tiny sizes, on CPU (tests/benchmarks)

Rows, each with its peak device memory:
- training: forward + backward + AdamW steps of `--train-size` (default vqlm_1b) at `--seq-len` 4096, batch 1,
  bf16 autocast over fp32 weights, attention through SDPA and, when `flash_attn` imports, flash-attn;
  tokens/s and MFU against the chip's bf16 peak (`lvm.core.chips.lookup_peak_flops`);
- decoding: `--decode-size` (default vqlm_7b, random weights) at batch 1, a 768-token prompt and
  `--new-tokens` greedy tokens: our engine in bf16 and in int8 (`quantize_model`, dequantizing on CUDA),
  next to `transformers` `generate` in bf16 on the same weights.
It imports torch, Lightning, transformers, safetensors and this repository's model code: nothing that a
CUDA machine with those lacks (a test runs the dry run with hydra, omegaconf, webdataset, gradio
and av made unimportable). Not yet run on a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time

import torch
from transformers import LlamaForCausalLM

import lvm.model.llama as llama_module
from lvm.core.chips import lookup_peak_flops
from lvm.generation.engine import GenerationEngine
from lvm.generation.sampler import SamplingConfig
from lvm.interop.hf import export_hf
from lvm.interop.pretrained import load_model
from lvm.model.config import NUM_VQ_CODES, ModelConfig
from lvm.model.llama import LLaMA

GREEDY = SamplingConfig(temperature=0)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device: torch.device) -> str:
    return f"{torch.cuda.max_memory_allocated(device) / 1e9:.1f}" if device.type == "cuda" else "–"


@contextlib.contextmanager
def attention(kind: str):
    """`sdpa`: hide flash-attn from the model for the duration; `flash`: leave it as imported."""
    saved = llama_module.flash_attn_func
    if kind == "sdpa":
        llama_module.flash_attn_func = None
    try:
        yield
    finally:
        llama_module.flash_attn_func = saved


def train_row(config: ModelConfig, seq_len: int, steps: int, device: torch.device, kind: str) -> dict:
    reset_peak(device)
    model = LLaMA(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    ids = torch.randint(0, NUM_VQ_CODES, (1, seq_len + 1), device=device)
    dtype = torch.bfloat16
    times = []
    with attention(kind):
        for step in range(steps + 1):  # the first step warms up kernels and the allocator
            synchronize(device)
            start = time.perf_counter()
            with torch.autocast(device.type, dtype=dtype):
                logits = model(ids[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            synchronize(device)
            if step:
                times.append(time.perf_counter() - start)
    tokens_s = seq_len / (sum(times) / len(times))
    peak = lookup_peak_flops(device, dtype)
    mfu = f"{100 * tokens_s * config.flops_per_token(seq_len) / peak:.0f} %" if peak else "–"
    return {"what": f"train {config.name}, seq {seq_len}, bf16, {kind}", "rate": f"{tokens_s:,.0f} tokens/s",
            "mfu": mfu, "peak": peak_gb(device)}  # fmt: skip


def decode_rows(config: ModelConfig, new_tokens: int, device: torch.device) -> list[dict]:
    prompt = torch.randint(0, NUM_VQ_CODES, (1, 768), generator=torch.Generator().manual_seed(0)).to(device)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        export_hf(LLaMA(config), folder, dtype=torch.bfloat16)
        sides = {
            "ours bf16": lambda: GenerationEngine(load_model(folder, device, torch.bfloat16)),
            "ours int8": lambda: GenerationEngine(load_model(folder, device, torch.bfloat16, quantize="int8")),
            "transformers bf16": lambda: LlamaForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).to(device),
        }
        for name, make in sides.items():
            reset_peak(device)
            side = make()

            def call(n: int, side=side) -> None:
                with torch.inference_mode():
                    if isinstance(side, GenerationEngine):
                        side.generate(prompt, n, GREEDY)
                    else:
                        side.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                      max_new_tokens=n, min_new_tokens=n, pad_token_id=NUM_VQ_CODES)  # fmt: skip
                synchronize(device)

            call(2)  # warm-up
            start = time.perf_counter()
            call(1)
            prefill = time.perf_counter() - start
            start = time.perf_counter()
            call(new_tokens)
            whole = time.perf_counter() - start
            rate = (new_tokens - 1) / max(whole - prefill, 1e-9)
            rows.append({"what": f"decode {config.name}, batch 1, {name}", "rate": f"{rate:,.1f} tokens/s",
                         "mfu": "–", "peak": peak_gb(device)})  # fmt: skip
            del side
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on CPU: checks the code, not a GPU")
    parser.add_argument("--train-size", default="vqlm_1b")
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--decode-size", default="vqlm_7b")
    parser.add_argument("--new-tokens", type=int, default=128)
    args = parser.parse_args()
    if args.dry_run:
        device, args.train_size, args.decode_size, args.seq_len, args.steps, args.new_tokens = (
            torch.device("cpu"), "vqlm_debug", "vqlm_debug", 256, 1, 8)  # fmt: skip
    else:
        if not torch.cuda.is_available():
            raise SystemExit("error: no CUDA device (use --dry-run to check the code on CPU)")
        device = torch.device("cuda")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)"
    kinds = ["sdpa"] + (["flash"] if llama_module.flash_attn_func is not None and device.type == "cuda" else [])
    rows = [train_row(ModelConfig.from_name(args.train_size), args.seq_len, args.steps, device, k) for k in kinds]
    rows += decode_rows(ModelConfig.from_name(args.decode_size), args.new_tokens, device)
    print(f"\nGPU check on {name}, torch {torch.__version__}\n")
    print("| what | rate | MFU | peak memory (GB) |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['what']} | {row['rate']} | {row['mfu']} | {row['peak']} |")


if __name__ == "__main__":
    main()
