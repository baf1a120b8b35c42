"""Data loading speed: our shards through `MixtureDataModule` against the original's jsonl, and against
what training `vqlm_100m` consumes.

    python -m benchmarks.bench_data                          # ~1-2 minutes on 2 CPU cores
    python -m benchmarks.bench_data --sentences-per-source 2000 --train-seq-len 4096

One run, one set of tokens: random codes in [0, 8192) for `--sources` sources of
`--sentences-per-source` sentences of 16 images × 256 tokens, written in a temp dir both as our shards
(`lvm.data.shards.ShardWriter`, one shard set per source) and as the original's jsonl
(`data_pipelines.jsonl.export_jsonl` per source, concatenated into one dataset.jsonl as the original's
`cat *.jsonl` does). Rows, all in input tokens per second (batch_size × seq_len per batch):
- ours: `MixtureDataModule` as conf/data/single.yaml configures it (seq_len 4096, tokens_per_image 256,
  batch 8, shuffle_buffer 1000) over the sources with weights 0.5/0.3/0.2…, num_workers 0 and 2,
  timed in steady state: after warm-up batches (worker start, shuffle buffers filled) the next
  `--batches` batches;
- jsonl, EasyLM-style: the loop of EasyLM's JsonDataset + TextProcessor (the original's loader) in one
  process: readline → json.loads → base64 decode → int32 → Python list buffer (+ loss mask list),
  cut into (batch, seq_len) int32 input/target arrays;
- jsonl, numpy: the same without Python lists (frombuffer + concatenate), a stronger reference;
- training: forward + backward + AdamW steps of `lvm.model.LLaMA` at `vqlm_100m` on this machine
  (median step after one warm-up step). On CPU a 4096-token step takes minutes, so the default is
  batch 1 × `--train-seq-len` 1024, which consumes *more* tokens/s than 4096 would (attention grows
  with length), so the ratio against it is conservative; the 4096 figure scaled by
  `ModelConfig.flops_per_token` is printed beside it.
Data rows are medians over `--repeats` rounds, the rows interleaved within each round. The headline
compares the faster of our two rows with the EasyLM-style reader. Targets: 5x the jsonl
reader, 50x what training consumes.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.machine import cpu_name
from data_pipelines.jsonl import export_jsonl
from lvm.data.datamodule import MixtureDataModule
from lvm.data.shards import ShardWriter, VisualSentence
from lvm.model.config import ModelConfig
from lvm.model.llama import LLaMA
from lvm.training.optim import build_adamw

READER_TARGET = 5.0
TRAINING_TARGET = 50.0
SEQ_LEN, TOKENS_PER_IMAGE, IMAGES_PER_SENTENCE, BATCH_SIZE = 4096, 256, 16, 8
SOURCE_WEIGHTS = (0.5, 0.3, 0.2, 0.1, 0.1, 0.1)


# --- the data --------------------------------------------------------------------------------------------


def write_data(root: Path, n_sources: int, sentences_per_source: int, seed: int = 0) -> tuple[dict, Path, int]:
    """Shards per source under `root`/shards/<name> and all of them as one `root`/dataset.jsonl.

    Returns (train_sources for MixtureDataModule, the jsonl path, total tokens)."""
    rng = np.random.default_rng(seed)
    sources, total = {}, 0
    jsonl = root / "dataset.jsonl"
    with open(jsonl, "wb") as out:
        for i in range(n_sources):
            name = f"source{i}"
            folder = root / "shards" / name
            with ShardWriter(folder, max_samples_per_shard=100, tokens_per_image=TOKENS_PER_IMAGE) as writer:
                for _ in range(sentences_per_source):
                    tokens = rng.integers(0, 8192, IMAGES_PER_SENTENCE * TOKENS_PER_IMAGE).astype(np.uint16)
                    writer.write(
                        VisualSentence(tokens=tokens, kind="video", source=[name], n_images=IMAGES_PER_SENTENCE)
                    )
                    total += len(tokens)
            part = root / f"{name}.jsonl"
            export_jsonl(folder, part, progress=False)
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out)
            part.unlink()
            sources[name] = {"path": str(folder), "weight": SOURCE_WEIGHTS[i % len(SOURCE_WEIGHTS)]}
    return sources, jsonl, total


# --- readers ---------------------------------------------------------------------------------------------


def easylm_style_batches(path: Path, seq_len: int, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """One pass of the original's loader loop (EasyLM JsonDataset + TextProcessor, one process)."""
    chunk = batch_size * seq_len
    token_buffer: list[int] = []
    loss_mask_buffer: list[float] = []
    with open(path) as f:
        for line in f:
            if not line or line == "\n":
                continue
            example = json.loads(line)
            tokens = np.frombuffer(base64.b64decode(example["tokens"]), dtype="i4").tolist()
            token_buffer.extend(tokens)
            loss_mask_buffer.extend([1.0 for _ in range(len(tokens))])
            while len(token_buffer) > chunk + 1:
                yield {
                    "input_tokens": np.array(token_buffer[:chunk], dtype=np.int32).reshape(batch_size, -1),
                    "target_tokens": np.array(token_buffer[1 : chunk + 1], dtype=np.int32).reshape(batch_size, -1),
                    "loss_masks": np.array(loss_mask_buffer[1 : chunk + 1], dtype=np.float32).reshape(batch_size, -1),
                }
                token_buffer = token_buffer[chunk:]
                loss_mask_buffer = loss_mask_buffer[chunk:]


def numpy_jsonl_batches(path: Path, seq_len: int, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """One pass over the jsonl with numpy buffers instead of Python lists (no loss masks: all ones)."""
    chunk = batch_size * seq_len
    pieces: list[np.ndarray] = []
    have = 0
    with open(path, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            tokens = np.frombuffer(base64.b64decode(json.loads(line)["tokens"]), dtype="<i4")
            pieces.append(tokens)
            have += len(tokens)
            if have <= chunk:
                continue
            stream = np.concatenate(pieces)
            start = 0
            while len(stream) - start > chunk:
                window = stream[start : start + chunk + 1]
                yield {
                    "input_tokens": window[:-1].reshape(batch_size, -1),
                    "target_tokens": window[1:].reshape(batch_size, -1),
                }
                start += chunk
            pieces, have = [stream[start:]], len(stream) - start


def time_jsonl(reader: Callable[..., Iterator[dict]], path: Path, passes: int) -> float:
    """Tokens/s of `passes` whole passes over the jsonl (input tokens of the batches yielded)."""
    tokens, start = 0, time.perf_counter()
    for _ in range(passes):
        for batch in reader(path, SEQ_LEN, BATCH_SIZE):
            tokens += batch["input_tokens"].size
    return tokens / (time.perf_counter() - start)


def time_datamodule(sources: dict, num_workers: int, warmup: int, batches: int) -> float:
    """Steady-state tokens/s of MixtureDataModule's training loader: `batches` batches after `warmup`."""
    datamodule = MixtureDataModule(
        sources,
        None,
        seq_len=SEQ_LEN,
        batch_size=BATCH_SIZE,
        tokens_per_image=TOKENS_PER_IMAGE,
        num_workers=num_workers,
        shuffle_buffer=1000,
    )
    datamodule.setup("fit")
    iterator = iter(datamodule.train_dataloader())
    for _ in range(warmup):
        next(iterator)
    tokens, start = 0, time.perf_counter()
    for _ in range(batches):
        tokens += next(iterator)["input_ids"].numel()
    elapsed = time.perf_counter() - start
    del iterator  # stops the workers before the next measurement
    return tokens / elapsed


def time_training(seq_len: int, batch_size: int, steps: int) -> float:
    """Tokens/s of vqlm_100m forward + backward + AdamW steps (median of `steps` after one warm-up)."""
    torch.manual_seed(0)
    model = LLaMA(ModelConfig.from_name("vqlm_100m"))
    optimizer = build_adamw(model, lr=1e-4)
    windows = torch.randint(0, 8192, (batch_size, seq_len + 1))
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        logits = model(windows[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1).float(), windows[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return batch_size * seq_len / statistics.median(times[1:])


# --- the run ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", type=int, default=3)
    parser.add_argument("--sentences-per-source", type=int, default=500)
    parser.add_argument("--batches", type=int, default=300, help="timed batches per MixtureDataModule row")
    parser.add_argument("--warmup-batches", type=int, default=8)
    parser.add_argument("--jsonl-passes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the data rows (medians)")
    parser.add_argument("--train-seq-len", type=int, default=1024)
    parser.add_argument("--train-batch-size", type=int, default=1)
    parser.add_argument("--train-steps", type=int, default=2, help="timed steps (after one warm-up step)")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench_data_"))
    try:
        sources, jsonl, total = write_data(root, args.sources, args.sentences_per_source)
        shard_bytes = sum(p.stat().st_size for p in (root / "shards").rglob("*.tar"))
        print(
            f"data: {args.sources} sources × {args.sentences_per_source} sentences of {SEQ_LEN} tokens = "
            f"{total / 1e6:.1f}M tokens; shards {shard_bytes / 1e6:.0f} MB, "
            f"jsonl {jsonl.stat().st_size / 1e6:.0f} MB"
        )
        # Rows interleaved within each round, medians over rounds: background load hits every row alike.
        rounds: dict[str, list[float]] = {"w0": [], "w2": [], "easylm": [], "numpy": []}
        for _ in range(args.repeats):
            rounds["w0"].append(time_datamodule(sources, 0, args.warmup_batches, args.batches))
            rounds["w2"].append(time_datamodule(sources, 2, args.warmup_batches, args.batches))
            rounds["easylm"].append(time_jsonl(easylm_style_batches, jsonl, args.jsonl_passes))
            rounds["numpy"].append(time_jsonl(numpy_jsonl_batches, jsonl, args.jsonl_passes))
        median = {name: statistics.median(values) for name, values in rounds.items()}
        ours, easylm, plain = {0: median["w0"], 2: median["w2"]}, median["easylm"], median["numpy"]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    train_tps = time_training(args.train_seq_len, args.train_batch_size, args.train_steps)
    config = ModelConfig.from_name("vqlm_100m")
    # What a 4096-token step would consume, from the FLOPs per token at each length.
    train_tps_4096 = train_tps * config.flops_per_token(args.train_seq_len) / config.flops_per_token(SEQ_LEN)

    best = max(ours.values())
    data_config = f"{args.sources} sources, seq_len {SEQ_LEN}, {TOKENS_PER_IMAGE} tokens/image, batch {BATCH_SIZE}"
    train_config = (
        f"batch {args.train_batch_size} × {args.train_seq_len} tokens, fp32, "
        f"{torch.get_num_threads()} threads (≈{train_tps_4096:,.0f} tokens/s at 4096, FLOP-scaled)"
    )
    rows = [
        ("MixtureDataModule (our shards), num_workers=0", data_config, ours[0], ours[0] / easylm),
        ("MixtureDataModule (our shards), num_workers=2", data_config, ours[2], ours[2] / easylm),
        ("jsonl, EasyLM-style reader (json + base64 + int32 → list buffer)", "1 process, same tokens", easylm, 1.0),
        (
            "jsonl, numpy reader (json + base64 + frombuffer → concatenate)",
            "1 process, same tokens",
            plain,
            plain / easylm,
        ),
        ("training step: vqlm_100m forward + backward + AdamW", train_config, train_tps, None),
    ]
    print(f"\n{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, {datetime.date.today().isoformat()}\n")
    print("| what | configuration | tokens/s | vs EasyLM-style jsonl |")
    print("|---|---|---:|---:|")
    for what, how, tps, ratio in rows:
        print(f"| {what} | {how} | {tps:,.0f} | {'–' if ratio is None else f'{ratio:.2f}x'} |")
    print(f"\nours vs the numpy jsonl reader: {best / plain:.2f}x")
    print(
        f"vs training: {best / train_tps:,.0f}x what a vqlm_100m training step consumes (target {TRAINING_TARGET:.0f}x)"
    )
    print(f"bench_data: {best / easylm:.1f}x vs jsonl reader (target {READER_TARGET:.0f}x)")


if __name__ == "__main__":
    main()
