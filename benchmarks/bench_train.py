"""Training speed: our `LVMLitModule` under the Lightning Trainer against Hugging Face's
`LlamaForCausalLM` and against our own `LLaMA` in a plain PyTorch loop.

    python -m benchmarks.bench_train                      # ~1.5 minutes on 2 CPU cores
    python -m benchmarks.bench_train --hidden-size 384 --heads 6 --seq-len 1024 --rounds 5

One run, one model size, one set of initial weights, one set of batches. The default model is
vqlm_100m's shape scaled down so that a step takes about a second on 2 CPU cores: hidden 256,
intermediate 688 (LLaMA's 8/3·d rounded up to 16; vqlm_100m has 2.6·d), 4 layers of 4 heads
(head_dim 64, as vqlm_100m), vocab 8292, rope theta 1e4, RMSNorm eps 1e-6, untied head, fp32; batch
4 × 512 tokens (2 images of 256 tokens). The batches are random ids in [0, 8192) (VQ codes, no
specials), pre-generated once and served by one DataLoader ({"input_ids", "labels"}, labels = ids
shifted by one) to every contender, in the same order. The initial weights are our initialisation
(seeded `LLaMA.init_weights`) written once as a Hugging Face `LlamaForCausalLM` folder, which each side
loads as its users would: transformers by `from_pretrained`, ours by `lvm.interop.pretrained`'s
`load_pretrained_into` (`lvm.train`'s init_from). Contenders, all with AdamW (lr 1.5e-4, betas
(0.9, 0.95), eps 1e-8, weight decay 0.1 on every parameter), global-norm clipping at 1.0 and the same
warmup-cosine schedule (`lvm.training.optim.warmup_cosine_scheduler`, stepped per update):
- ours: `LVMLitModule` fitted by `pytorch_lightning.Trainer` as conf/trainer/cpu.yaml sets it up
  (accelerator cpu, precision 32-true, gradient_clip_val 1.0, log_every_n_steps 10), with
  `LVMThroughputMonitor` (batch_size_of / tokens_of, its peak measured here by `measure_matmul_flops`)
  and no logger, checkpointing, progress bar or model summary;
- transformers: `LlamaForCausalLM` of the same sizes (attn_implementation="sdpa", use_cache=False as
  for training), in a plain loop: logits → F.cross_entropy over all tokens (our loss, not HF's
  shifted one: the labels are already shifted) → backward → clip_grad_norm_(1.0) → torch.optim.AdamW
  → scheduler → zero_grad(set_to_none=True);
- plain: our `LLaMA` in the same loop (`lvm.training.optim.build_adamw`).
Each contender runs `--warmup` untimed steps and then `--steps` timed ones, with a fresh model and
optimizer, in each of `--rounds` rounds (default 5 × (1 + 3): short rounds interleave finely); the
contenders are interleaved (the order rotates by round).
The Trainer is timed from the `on_train_batch_start` of the first timed step to the
`on_train_batch_end` of the last, cut at every `on_train_batch_end` into per-step times: its setup is
left out, its per-step work (hooks, `self.log`, the accuracy metric, clipping, the monitor, fetching
the next batch) is not. The plain loops are cut the same way (from the first timed step's start, at
every step's end). The headline figures are medians over all timed steps of all rounds (robust to the
bursts of other processes that a shared machine has); the medians of whole rounds are printed too.
The step-0 losses must agree: ours and plain exactly (same weights, same kernels), transformers
within 1e-4. MFU = tokens/s · ModelConfig.flops_per_token(T) (6·N + 12·L·d·T) / the fp32 matmul
rate of `lvm.training.throughput.measure_matmul_flops` (the best of its measurements at the start and after each
round: a busy machine only lowers them). Targets: ours >= 1.2x transformers, and the Trainer costs at
most 5 % (ours >= 0.95x the plain loop of our model).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import gc
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import transformers
from pytorch_lightning.trainer.states import RunningStage
from torch.utils.data import DataLoader, Dataset
from transformers import LlamaConfig, LlamaForCausalLM

from benchmarks.machine import cpu_name
from lvm.interop.hf import model_config_from_hf, read_hf_state_dict
from lvm.interop.pretrained import load_pretrained_into
from lvm.model.config import NUM_VQ_CODES, ModelConfig
from lvm.model.llama import LLaMA
from lvm.training.lit_module import LVMLitModule, batch_size_of, tokens_of
from lvm.training.optim import build_adamw, warmup_cosine_scheduler
from lvm.training.throughput import LVMThroughputMonitor, measure_matmul_flops

HF_TARGET = 1.2
TRAINER_TARGET = 0.95
HF_LOSS_TOLERANCE = 1e-4
TOKENS_PER_IMAGE = 256
CONTENDERS = ("ours", "transformers", "plain")
LABELS = {
    "ours": "ours: `LVMLitModule` + Lightning `Trainer` (+ `LVMThroughputMonitor`)",
    "transformers": "transformers `LlamaForCausalLM` (sdpa), plain loop",
    "plain": "our `LLaMA`, plain loop",
}


@dataclass
class Run:
    """One contender's round: the seconds of each timed step, the first and last step's losses."""

    step_seconds: list[float] = field(default_factory=list)
    losses: dict[int, float] = field(default_factory=dict)
    monitor: dict[str, float] = field(default_factory=dict)


# --- data, weights, models ------------------------------------------------------------------------------


class TokenWindows(Dataset):
    """Fixed windows of T + 1 random VQ codes → {"input_ids": first T, "labels": last T}."""

    def __init__(self, n: int, seq_len: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.windows = torch.randint(0, NUM_VQ_CODES, (n, seq_len + 1), generator=generator)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        window = self.windows[i]
        return {"input_ids": window[:-1], "labels": window[1:]}


def hf_config(config: ModelConfig) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=config.max_seq_len,
        rms_norm_eps=config.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
        tie_word_embeddings=False,
        initializer_range=config.init_std,
        attn_implementation="sdpa",
    )


def to_hf_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our names are LlamaForCausalLM's without its `model.` prefix (the head keeps `lm_head.`): the
    inverse of `lvm.interop.pretrained.read_hf_state_dict`."""
    return {(k if k.startswith("lm_head.") else f"model.{k}"): v for k, v in state.items()}


def write_initial_weights(config: ModelConfig, seed: int, folder: str) -> None:
    """Our seeded initialisation saved as a Hugging Face folder; checks that it reads back through
    `lvm.interop.pretrained` to the same tensors and dimensions."""
    torch.manual_seed(seed)
    state = LLaMA(config).state_dict()
    hf = LlamaForCausalLM(hf_config(config))
    hf.load_state_dict(to_hf_state_dict(state), strict=True)
    hf.save_pretrained(folder)
    back = read_hf_state_dict(folder)
    if set(back) != set(state) or any(not torch.equal(back[k], v) for k, v in state.items()):
        raise RuntimeError(f"{folder}: the weights do not read back unchanged through lvm.interop.pretrained")
    dims = ("hidden_size", "intermediate_size", "num_layers", "num_heads", "vocab_size", "rope_theta", "norm_eps")
    read = model_config_from_hf(folder)
    if any(getattr(read, k) != getattr(config, k) for k in dims):
        raise RuntimeError(f"{folder}: config.json reads back as {read}, not {config}")


def make_hf(folder: str) -> LlamaForCausalLM:
    model = LlamaForCausalLM.from_pretrained(folder, attn_implementation="sdpa", dtype=torch.float32)
    if model.config._attn_implementation != "sdpa":
        raise RuntimeError(f"transformers picked attention {model.config._attn_implementation!r}, not sdpa")
    return model.train()  # from_pretrained returns it in eval mode (no dropout here either way)


def make_plain(config: ModelConfig, folder: str) -> LLaMA:
    model = LLaMA(config)
    load_pretrained_into(model, folder)
    return model.train()


def matmul_flops_per_token(config: ModelConfig, seq_len: int) -> int:
    """Training FLOPs per token that matmuls do: 6·(N − V·d) (no embedding gather) + 6·L·d·T (causal)."""
    return config.flops_per_token(seq_len, causal=True) - 6 * config.vocab_size * config.hidden_size


def schedule(args: argparse.Namespace) -> Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]:
    return functools.partial(
        warmup_cosine_scheduler, warmup_steps=args.warmup, decay_steps=args.warmup + args.steps, end_lr=args.lr / 10
    )


# --- the contenders ------------------------------------------------------------------------------------------


def plain_loop(
    model: torch.nn.Module,
    logits_of: Callable,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loader: DataLoader,
    warmup: int,
) -> Run:
    run, last = Run(), len(loader) - 1
    mark = None
    for i, batch in enumerate(loader):
        if i == warmup:
            mark = time.perf_counter()
        logits = logits_of(model, batch["input_ids"])
        loss = F.cross_entropy(logits.flatten(0, 1).float(), batch["labels"].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if i in (0, last):
            run.losses[i] = loss.item()
        if i >= warmup:
            now = time.perf_counter()
            run.step_seconds.append(now - mark)
            mark = now
    return run


def run_hf(folder: str, loader: DataLoader, args: argparse.Namespace) -> Run:
    model = make_hf(folder)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    return plain_loop(
        model,
        lambda m, ids: m(input_ids=ids, use_cache=False).logits,
        optimizer,
        schedule(args)(optimizer),
        loader,
        args.warmup,
    )


def run_plain(config: ModelConfig, folder: str, loader: DataLoader, args: argparse.Namespace) -> Run:
    model = make_plain(config, folder)
    optimizer = build_adamw(model, lr=args.lr)
    return plain_loop(model, lambda m, ids: m(ids), optimizer, schedule(args)(optimizer), loader, args.warmup)


class StepTimer(pl.Callback):
    """Per-step wall times from the first timed step's on_train_batch_start, cut at each on_train_batch_end
    (the last callback, so after the monitor's); the losses of the first and last step."""

    def __init__(self, first_timed: int, last: int, run: Run) -> None:
        self.first_timed, self.last, self.run = first_timed, last, run
        self.mark: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.first_timed:
            self.mark = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx in (0, self.last):
            self.run.losses[batch_idx] = float(outputs["loss"])
        if batch_idx >= self.first_timed:
            now = time.perf_counter()
            self.run.step_seconds.append(now - self.mark)
            self.mark = now


def run_ours(config: ModelConfig, folder: str, loader: DataLoader, args: argparse.Namespace, peak_flops: float) -> Run:
    module = LVMLitModule(config, optimizer=functools.partial(build_adamw, lr=args.lr), scheduler=schedule(args))
    load_pretrained_into(module.model, folder)
    total, run = args.warmup + args.steps, Run()
    monitor = LVMThroughputMonitor(batch_size_of, tokens_of, peak_flops_per_device=peak_flops, window_size=args.steps)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        precision="32-true",
        max_steps=total,
        gradient_clip_val=1.0,
        log_every_n_steps=10,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[monitor, StepTimer(args.warmup, total - 1, run)],
    )
    trainer.fit(module, train_dataloaders=loader)
    if trainer.global_step != total or len(run.step_seconds) != args.steps:
        raise RuntimeError(f"the Trainer ran {trainer.global_step} steps, expected {total}")
    throughput = getattr(monitor, "_throughputs", {}).get(RunningStage.TRAINING)
    if throughput is not None:  # no logger receives them here, so read the monitor's window directly
        metrics = throughput.compute()
        run.monitor = {
            k: float(metrics[k]) for k in ("device/items_per_sec", "device/flops_per_sec", "device/mfu") if k in metrics
        }
    return run


# --- the run -----------------------------------------------------------------------------------------------


def quiet_libraries() -> None:
    """No banners, progress bars or advice about workers and validation: the output is the table."""
    for name in ("pytorch_lightning", "lightning_fabric", "lightning", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*num_workers.*")
    warnings.filterwarnings("ignore", message=".*but have no `val_dataloader`.*")  # no validation set here
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning 2.6 on torch 2.13's pytree
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--intermediate-size", type=int, default=688)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=512, help=f"a multiple of {TOKENS_PER_IMAGE} (whole images)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per contender and round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before them")
    parser.add_argument(
        "--rounds", type=int, default=5, help="interleaved rounds (more, shorter rounds interleave more finely)"
    )
    parser.add_argument("--lr", type=float, default=1.5e-4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.seq_len % TOKENS_PER_IMAGE:
        parser.error(f"--seq-len {args.seq_len} is not a whole number of {TOKENS_PER_IMAGE}-token images")
    if args.steps < 2 or args.warmup < 1 or args.rounds < 1:
        parser.error("need --steps >= 2, --warmup >= 1 and --rounds >= 1")
    quiet_libraries()

    config = ModelConfig(
        name="bench",
        hidden_size=args.hidden_size,
        intermediate_size=args.intermediate_size,
        num_layers=args.layers,
        num_heads=args.heads,
        max_seq_len=max(4096, args.seq_len),
    )
    total_steps = args.warmup + args.steps
    loader = DataLoader(
        TokenWindows(total_steps * args.batch_size, args.seq_len, args.seed + 1),
        batch_size=args.batch_size,
        shuffle=False,
        num_workers=0,
        drop_last=True,
    )
    threads = torch.get_num_threads()
    # A peak is a maximum: other processes can only lower a measurement, so keep the best of several,
    # at the start and after every round; the monitor gets the best known when its round starts.
    peaks = [measure_matmul_flops("cpu", torch.float32) for _ in range(3)]
    flops_per_token = config.flops_per_token(args.seq_len)
    print(
        f"model: hidden {config.hidden_size}, intermediate {config.intermediate_size}, {config.num_layers} layers × "
        f"{config.num_heads} heads, vocab {config.vocab_size}: {config.num_parameters / 1e6:.2f} M parameters, "
        f"{flops_per_token / 1e6:.1f} MFLOP/token at T={args.seq_len}; batch {args.batch_size} × {args.seq_len} "
        f"tokens, fp32; {args.warmup} warm-up + {args.steps} timed steps × {args.rounds} rounds; "
        f"fp32 matmul peak so far {max(peaks) / 1e9:.1f} GFLOP/s",
        flush=True,
    )

    runners: dict[str, Callable[[str], Run]] = {
        "ours": lambda folder: run_ours(config, folder, loader, args, max(peaks)),
        "transformers": lambda folder: run_hf(folder, loader, args),
        "plain": lambda folder: run_plain(config, folder, loader, args),
    }
    runs: dict[str, list[Run]] = {name: [] for name in CONTENDERS}
    with tempfile.TemporaryDirectory(prefix="bench_train_") as folder:
        write_initial_weights(config, args.seed, folder)  # every contender of every round starts from these
        for r in range(args.rounds):
            for name in CONTENDERS[r % len(CONTENDERS) :] + CONTENDERS[: r % len(CONTENDERS)]:
                gc.collect()
                runs[name].append(runners[name](folder))
            peaks.append(measure_matmul_flops("cpu", torch.float32))
            print(
                f"round {r + 1}/{args.rounds}: "
                + ", ".join(
                    f"{name} {1000 * statistics.median(runs[name][-1].step_seconds):.0f} ms/step" for name in CONTENDERS
                ),
                file=sys.stderr,
                flush=True,
            )

    peak_flops = max(peaks)
    tokens_per_step = args.batch_size * args.seq_len
    step_s = {name: statistics.median(s for run in rs for s in run.step_seconds) for name, rs in runs.items()}
    tps = {name: tokens_per_step / s for name, s in step_s.items()}
    round_tps = {
        name: statistics.median(tokens_per_step * args.steps / sum(run.step_seconds) for run in rs)
        for name, rs in runs.items()
    }

    print(
        f"\n{cpu_name()}, {os.cpu_count()} cores, torch {threads} threads; torch {torch.__version__}, "
        f"pytorch-lightning {pl.__version__}, transformers {transformers.__version__}; "
        f"{datetime.date.today().isoformat()}; fp32 matmul peak {peak_flops / 1e9:.1f} GFLOP/s (best of "
        f"{len(peaks)} measurements by lvm.training.throughput.measure_matmul_flops over the run)\n"
    )
    print("| contender | tokens/s (median) | ms/step | relative to ours | MFU (vs measured matmul peak) |")
    print("|---|---:|---:|---:|---:|")
    for name in CONTENDERS:
        mfu = tps[name] * flops_per_token / peak_flops
        print(
            f"| {LABELS[name]} | {tps[name]:,.0f} | {1000 * step_s[name]:.0f} | {tps[name] / tps['ours']:.2f}x "
            f"| {100 * mfu:.1f} % |"
        )
    print(
        f"\ntokens/s = batch × seq_len / the median of {args.rounds * args.steps} timed steps per contender. "
        "Whole rounds (the Trainer: first timed on_train_batch_start → last on_train_batch_end), median over "
        "rounds: "
        + ", ".join(f"{name} {round_tps[name]:,.0f}" for name in CONTENDERS)
        + f" tokens/s (ours {round_tps['ours'] / round_tps['transformers']:.2f}x transformers, "
        f"{round_tps['ours'] / round_tps['plain']:.2f}x plain)"
    )
    monitored = [run.monitor for run in runs["ours"] if "device/items_per_sec" in run.monitor]
    if monitored:
        items = statistics.median(m["device/items_per_sec"] for m in monitored)
        flops = [m["device/flops_per_sec"] for m in monitored if "device/flops_per_sec" in m]
        mfu_text = (
            f", train/device/flops_per_sec {statistics.median(flops) / 1e9:.1f} GFLOP/s = MFU "
            f"{100 * statistics.median(flops) / peak_flops:.1f} % of the peak above"
            if flops
            else ""
        )
        print(
            f"LVMThroughputMonitor's own figures for ours (median over rounds; its window: the last "
            f"{args.steps - 1} step intervals): train/device/items_per_sec {items:,.0f}{mfu_text}"
        )
    print(
        "MFU counts 6·N + 12·L·d·T FLOPs per token (lvm's convention): N includes the embedding table, a "
        "gather rather than a matmul, and attention is counted without the causal half, so it overstates "
        f"the matmul work by {100 * (flops_per_token / matmul_flops_per_token(config, args.seq_len) - 1):.0f} % "
        "at this size."
    )

    first = {name: rs[0].losses[0] for name, rs in runs.items()}
    last = {name: rs[0].losses[total_steps - 1] for name, rs in runs.items()}
    hf_diff = abs(first["transformers"] - first["ours"])
    print(
        "\nstep-0 loss (same initial weights, same batch): "
        + ", ".join(f"{name} {first[name]:.7f}" for name in CONTENDERS)
    )
    print(
        f"  ours vs plain: {'identical' if first['ours'] == first['plain'] else 'DIFFERENT'} (|diff| "
        f"{abs(first['ours'] - first['plain']):.2e}; required: exact); ours vs transformers: |diff| {hf_diff:.2e} "
        f"({'OK' if hf_diff <= HF_LOSS_TOLERANCE else 'TOO LARGE'}; tolerance {HF_LOSS_TOLERANCE:g})"
    )
    print(
        f"step-{total_steps - 1} loss (after {total_steps - 1} updates): "
        + ", ".join(f"{name} {last[name]:.7f}" for name in CONTENDERS)
    )

    print(f"\nour model vs transformers, both in the plain loop: {tps['plain'] / tps['transformers']:.2f}x")
    print(
        f"bench_train (trainer overhead): {tps['ours'] / tps['plain']:.2f}x vs our model in a plain loop "
        f"(target {TRAINER_TARGET}x)"
    )
    print(
        f"bench_train: {tps['ours'] / tps['transformers']:.2f}x vs transformers LlamaForCausalLM (target {HF_TARGET}x)"
    )


if __name__ == "__main__":
    main()
