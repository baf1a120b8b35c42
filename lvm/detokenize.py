"""`python -m lvm.detokenize shards=... tokenizer_path=... [keys=[...] | index=N count=M]`: decode visual
sentences stored in shards back to pictures, one PNG grid per sentence (conf/detokenize.yaml).

Examples:
    python -m lvm.detokenize shards=data/shards/train/video tokenizer_path=ckpt/vqgan count=4
    python -m lvm.detokenize shards='data/shards/*/shard-000000.tar' tokenizer_path=ckpt/vqgan \
        keys='["000000012","000000013"]' columns=4 out_dir=/tmp/look
Files land in `<out_dir>/<shard stem>_<key>.png` (out_dir defaults to logs/detokenize/runs/<time>).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import hydra
from omegaconf import DictConfig

from lvm.core.errors import report_user_errors
from lvm.data.manifest import expand_sources
from lvm.data.shards import VisualSentence, iter_shard
from lvm.tokenizer.checkpoint import load_vqgan
from lvm.tokenizer.grid import save_png, sentence_codes, sentence_grid


def select_sentences(
    shards: str | os.PathLike, keys: Sequence[str] | str | None = None, index: int = 0, count: int = 1
) -> list[tuple[str, VisualSentence]]:
    """(shard path, sentence) pairs in stored order: the first sample with each of `keys`, or else
    samples `index` … `index + count - 1` counted across the shards of `shards` (see `expand_sources`;
    shards in sorted order). A key that is not there, or an index past the end, is a ValueError naming it."""
    paths = expand_sources(shards)
    # Every id up to uint16's top is read here: ids past the codebook get their own error, naming them,
    # when the sentence is decoded.
    samples = ((path, sentence) for path in paths for sentence in iter_shard(path, vocab_size=65536))
    if keys is not None:
        wanted = [str(k) for k in ([keys] if isinstance(keys, (str, int)) else keys)]  # `keys=[12]` is an int
        wanted_set = set(wanted)
        if not wanted:
            raise ValueError("keys is an empty list; give sample keys, or keys=null to select by index/count")
        found: dict[str, tuple[str, VisualSentence]] = {}
        for path, sentence in samples:  # stops reading as soon as every key has been met
            if sentence.key in wanted_set and sentence.key not in found:
                found[sentence.key] = (path, sentence)
                if len(found) == len(wanted_set):
                    break
        missing = [k for k in wanted if k not in found]
        if missing:
            names = [Path(p).name for p in paths]
            raise ValueError(
                f"{shards}: no sample with key {missing[0]!r}"
                + (f" (nor {missing[1:]})" if len(missing) > 1 else "")
                + f" in {len(paths)} shard(s) {names[:5]}{' …' if len(names) > 5 else ''}"
            )
        return list(found.values())  # met in stored order
    if index < 0 or count < 1:
        raise ValueError(f"index must be ≥ 0 and count ≥ 1, got index={index}, count={count}")
    chosen = []
    seen = 0
    for path, sentence in samples:
        if seen >= index:
            chosen.append((path, sentence))
            if len(chosen) == count:
                break
        seen += 1
    if not chosen:
        raise ValueError(f"{shards}: index {index} is past the end ({seen} samples in {len(paths)} shard(s))")
    return chosen


def detokenize(cfg: DictConfig) -> list[Path]:
    """Load the VQGAN, pick the sentences, write one PNG grid per sentence; returns the files."""
    model = load_vqgan(cfg.tokenizer_path, map_location=cfg.device)
    # cfg["keys"], not cfg.keys: that is DictConfig.keys(), the method.
    chosen = select_sentences(cfg.shards, keys=cfg["keys"], index=cfg.index, count=cfg.count)
    out_dir = Path(cfg.out_dir)
    targets = [out_dir / f"{Path(path).stem}_{sentence.key}.png" for path, sentence in chosen]
    if len(set(targets)) != len(targets):  # same shard name and key in two shard sets
        clash = next(t for t in targets if targets.count(t) > 1)
        raise ValueError(f"two selected samples would both be written to {clash}; select from one shard set")
    for path, sentence in chosen:  # every check before the first file, so an error leaves no partial output
        sentence_codes(sentence.tokens, sentence.n_images, model.config, where=f"{path}: sample {sentence.key}")
    written = []
    for (path, sentence), target in zip(chosen, targets):
        grid = sentence_grid(
            model,
            sentence.tokens,
            sentence.n_images,
            where=f"{path}: sample {sentence.key}",
            columns=cfg.columns,
            padding=cfg.padding,
            batch_size=cfg.batch_size,
        )
        written.append(save_png(grid, target))
        print(f"{path} sample {sentence.key}: {sentence.n_images} images → {target}")
    print(f"Wrote {len(written)} PNG grid(s) to {out_dir}")
    return written


@hydra.main(version_base="1.3", config_path="../conf", config_name="detokenize")
@report_user_errors
def main(cfg: DictConfig) -> None:
    detokenize(cfg)


if __name__ == "__main__":
    main()
