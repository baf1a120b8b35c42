"""MixtureDataModule: packing, mixture weights, determinism, rank splits, validation and exact resume."""

import contextlib
import itertools

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from lvm.data.datamodule import MixtureDataModule
from lvm.data.shards import ShardWriter, VisualSentence
from lvm.data.streams import CorruptShardWarning

TOKENS_PER_IMAGE = 4
IMAGES = 4
SENTENCE = TOKENS_PER_IMAGE * IMAGES  # 16 tokens
SEQ_LEN = 32
SOURCE_RANGE = 2000  # source s owns token ids [s·2000, (s+1)·2000)


def sentence_tokens(source: int, j: int) -> np.ndarray:
    """Sentence j of a source: 16 tokens unique within the source for j < 125, tagged by the range."""
    return (source * SOURCE_RANGE + (j * SENTENCE + np.arange(SENTENCE)) % SOURCE_RANGE).astype(np.uint16)


def write_source(directory, source: int, n_sentences: int, per_shard: int) -> str:
    with ShardWriter(directory, max_samples_per_shard=per_shard) as writer:
        for j in range(n_sentences):
            writer.write(VisualSentence(sentence_tokens(source, j), f"kind{source}", [f"{source}/{j}"], IMAGES))
    return str(directory)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Three train sources of 100 sentences (4 shards each) and two val sources of 10 sentences."""
    root = tmp_path_factory.mktemp("corpus")
    train = {name: write_source(root / "train" / name, s, 100, 25) for s, name in enumerate(["a", "b", "c"])}
    val = {name: write_source(root / "val" / name, s, 10, 4) for s, name in enumerate(["a", "b"])}
    one_shard = write_source(root / "one_shard", 0, 100, 100)
    return {"train": train, "val": val, "one_shard": one_shard}


def make_dm(corpus, weights=(0.6, 0.3, 0.1), val=True, **kwargs) -> MixtureDataModule:
    train = {name: {"path": path, "weight": w} for (name, path), w in zip(corpus["train"].items(), weights)}
    args = dict(seq_len=SEQ_LEN, batch_size=4, tokens_per_image=TOKENS_PER_IMAGE, shuffle_buffer=8, seed=0)
    args.update(kwargs)
    val_sources = {name: {"path": path} for name, path in corpus["val"].items()} if val else None
    return MixtureDataModule(train, val_sources, **args)


def take(dm: MixtureDataModule, n: int, loader=None) -> list[dict]:
    loader = dm.train_dataloader() if loader is None else loader
    return list(itertools.islice(iter(loader), n))


def test_batches_are_int64_next_token_pairs_of_whole_packed_sentences(corpus):
    batches = take(make_dm(corpus), 5)
    for batch in batches:
        assert set(batch) == {"input_ids", "labels"}
        assert batch["input_ids"].shape == batch["labels"].shape == (4, SEQ_LEN)
        assert batch["input_ids"].dtype == batch["labels"].dtype == torch.int64
    inputs = torch.cat([b["input_ids"] for b in batches]).numpy()
    labels = torch.cat([b["labels"] for b in batches]).numpy()
    # One packed stream: each row's labels are its inputs shifted by one, continuing into the next row.
    stream = np.concatenate([inputs.reshape(-1), labels[-1, -1:]])
    np.testing.assert_array_equal(labels.reshape(-1), stream[1:])
    # ... made of whole stored sentences back to back, no separators.
    stored = {tuple(sentence_tokens(s, j)) for s in range(3) for j in range(100)}
    chunks = stream[:-1].reshape(-1, SENTENCE)
    assert all(tuple(chunk) in stored for chunk in chunks)


def test_mixture_follows_the_weights(corpus):
    loader = make_dm(corpus, weights=(0.6, 0.3, 0.1), batch_size=50).train_dataloader()
    counts = np.zeros(3)
    for batch in itertools.islice(loader, 50):  # 2 500 windows = 5 000 sentences drawn
        counts += np.bincount(batch["input_ids"].reshape(-1).numpy() // SOURCE_RANGE, minlength=3)
    shares = counts / counts.sum()
    np.testing.assert_allclose(shares, [0.6, 0.3, 0.1], atol=0.03)


def test_same_seed_same_batches_other_seed_other_batches(corpus):
    first, again, other = take(make_dm(corpus), 4), take(make_dm(corpus), 4), take(make_dm(corpus, seed=1), 4)
    for a, b in zip(first, again):
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    assert not all(torch.equal(a["input_ids"], c["input_ids"]) for a, c in zip(first, other))


def sentence_ids(batches) -> set[int]:
    """Ids (source·1000 + j) of the whole sentences the batches hold, from their first tokens."""
    tokens = torch.cat([b["input_ids"] for b in batches]).reshape(-1, SENTENCE)[:, 0].numpy()
    return {int(t // SOURCE_RANGE * 1000 + (t % SOURCE_RANGE) // SENTENCE) for t in tokens}


@pytest.mark.parametrize("layout", ["four_shards", "one_shard"])
def test_ranks_get_disjoint_data(corpus, monkeypatch, layout):
    seen = []
    for rank in range(2):
        if layout == "one_shard":  # fewer shards than streams: the split is by sentence
            dm = MixtureDataModule(
                {"a": {"path": corpus["one_shard"], "weight": 1.0}},
                None,
                seq_len=SEQ_LEN,
                batch_size=4,
                tokens_per_image=TOKENS_PER_IMAGE,
                shuffle_buffer=8,
            )
        else:
            dm = make_dm(corpus, val=False)
        monkeypatch.setattr(dm, "_rank_and_world_size", lambda rank=rank: (rank, 2))
        seen.append(sentence_ids(take(dm, 6)))  # 48 sentences: within one pass of each rank's half
    assert len(seen[0]) > 20 and len(seen[1]) > 20
    assert not seen[0] & seen[1]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_exact_resume_from_state_dict(corpus, num_workers):
    k, more = 5, 4
    dm = make_dm(corpus, num_workers=num_workers)
    loader = dm.train_dataloader()
    head = take(dm, k, loader)
    state = dm.state_dict()
    assert state["batches_yielded"] == k and state["seed"] == 0
    tail = take(dm, more, loader)  # a second iter() of the same loader continues the stream
    uninterrupted = take(make_dm(corpus, num_workers=num_workers), k + more)
    for got, want in zip(head + tail, uninterrupted):
        assert torch.equal(got["input_ids"], want["input_ids"])

    resumed = make_dm(corpus, num_workers=num_workers)
    resumed.load_state_dict(state)
    for got, want in zip(take(resumed, more), uninterrupted[k:]):
        assert torch.equal(got["input_ids"], want["input_ids"]) and torch.equal(got["labels"], want["labels"])


def test_validation_packs_each_source_alone_in_stored_order(corpus, monkeypatch):
    dm = make_dm(corpus, batch_size=3)
    batches = list(dm.val_dataloader())
    assert [b["source"] for b in batches] == [["a"] * 3, ["b"] * 3, ["a"] * 1, ["b"] * 1]  # sources take turns
    assert list(dm.val_dataloader())[0]["input_ids"].equal(batches[0]["input_ids"])  # deterministic
    for name, source in (("a", 0), ("b", 1)):
        rows = [(b["input_ids"][i], b["labels"][i]) for b in batches for i, s in enumerate(b["source"]) if s == name]
        # 10 sentences × 16 tokens = 160 tokens → (160 − 1) // 32 = 4 windows, the short tail dropped.
        stream = np.concatenate([sentence_tokens(source, j) for j in range(10)]).astype(np.int64)
        assert len(rows) == 4
        for w, (inputs, labels) in enumerate(rows):
            np.testing.assert_array_equal(inputs.numpy(), stream[w * SEQ_LEN : (w + 1) * SEQ_LEN])
            np.testing.assert_array_equal(labels.numpy(), stream[w * SEQ_LEN + 1 : (w + 1) * SEQ_LEN + 1])
    # Two ranks split the windows between them, none twice.
    rows_per_rank = []
    for rank in range(2):
        monkeypatch.setattr(dm, "_rank_and_world_size", lambda rank=rank: (rank, 2))
        rows_per_rank.append([tuple(r.tolist()) for b in dm.val_dataloader() for r in b["input_ids"]])
    assert len(rows_per_rank[0]) == len(rows_per_rank[1]) == 4
    all_rows = [tuple(r.tolist()) for b in batches for r in b["input_ids"]]
    assert sorted(rows_per_rank[0] + rows_per_rank[1]) == sorted(all_rows)


def test_bad_configs_fail_with_the_values_named(corpus):
    with pytest.raises(ValueError, match="seq_len 30 is not a multiple of tokens_per_image 4"):
        make_dm(corpus, seq_len=30)
    with pytest.raises(ValueError, match="weight"):
        make_dm(corpus, weights=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="train_sources is empty"):
        MixtureDataModule({}, None, seq_len=32, batch_size=2, tokens_per_image=4)
    with pytest.raises(ValueError, match="shards hold 4 tokens per image, but data.tokens_per_image is 8"):
        make_dm(corpus, tokens_per_image=8).setup("fit")


class TinyLM(pl.LightningModule):
    """Embedding + Linear next-token model that records the batches it trains on."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(8292, 8)
        self.head = nn.Linear(8, 8292)
        self.seen: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch["input_ids"].clone())
        logits = self.head(self.embed(batch["input_ids"]))
        return nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten())

    def validation_step(self, batch, batch_idx):
        assert set(batch["source"]) <= {"a", "b"}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(corpus, tmp_path, ckpt_path=None, num_workers=0, limit_train_batches=None) -> TinyLM:
    torch.manual_seed(0)
    model = TinyLM()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=6,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        val_check_interval=2,
        check_val_every_n_epoch=None,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        limit_train_batches=limit_train_batches,
        callbacks=[
            pl.callbacks.ModelCheckpoint(
                dirpath=tmp_path / "ckpt", filename="{step}", every_n_train_steps=3, save_top_k=-1
            )
        ],
    )
    trainer.fit(model, datamodule=make_dm(corpus, num_workers=num_workers), ckpt_path=ckpt_path)
    return model


@pytest.mark.parametrize(
    "num_workers, limit_train_batches",
    [(0, None), (2, None), (0, 2)],
    ids=["one_epoch", "two_workers", "epochs_of_2_batches"],
)
def test_lightning_resume_sees_exactly_the_uninterrupted_batches(corpus, tmp_path, num_workers, limit_train_batches):
    full = fit(corpus, tmp_path / "full", num_workers=num_workers, limit_train_batches=limit_train_batches)
    assert len(full.seen) == 6
    checkpoint = tmp_path / "full" / "ckpt" / "step=3.ckpt"
    state = torch.load(checkpoint, weights_only=True)["MixtureDataModule"]
    assert state["batches_yielded"] == 3  # the fit loop's `ready` count at on_train_batch_end of step 3

    resumed = fit(
        corpus,
        tmp_path / "resumed",
        ckpt_path=checkpoint,
        num_workers=num_workers,
        limit_train_batches=limit_train_batches,
    )
    assert len(resumed.seen) == 3
    for got, want in zip(resumed.seen, full.seen[3:]):
        assert torch.equal(got, want)
    if limit_train_batches:  # epochs restart the loader; the stream must go on, not start over
        one_epoch = fit(corpus, tmp_path / "one_epoch")
        for got, want in zip(full.seen, one_epoch.seen):
            assert torch.equal(got, want)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_a_corrupt_shard_is_skipped_named_and_counted_or_refused_when_strict(tmp_path, num_workers):
    good = write_source(tmp_path / "a", 0, 20, 10)  # two shards of 10 sentences
    shards = sorted((tmp_path / "a").glob("*.tar"))
    shards[1].write_bytes(shards[1].read_bytes()[:700])  # cut inside its first member
    train = {"a": {"path": f"{good}/*.tar", "weight": 1.0}}
    args = dict(
        seq_len=SEQ_LEN, batch_size=2, tokens_per_image=TOKENS_PER_IMAGE, shuffle_buffer=0, num_workers=num_workers
    )
    dm = MixtureDataModule(train, None, **args)
    # More batches than the good shard holds: the stream wraps around the bad one. With a worker the
    # warning is issued (and printed) in the worker process; the count still reaches this one.
    expect = (
        pytest.warns(CorruptShardWarning, match=f"{shards[1]}: skipped .*truncated")
        if num_workers == 0
        else contextlib.nullcontext()
    )
    with expect:
        batches = take(dm, 12)
    kept = {int(t) for batch in batches for t in batch["input_ids"].flatten()}
    assert kept <= {int(t) for j in range(10) for t in sentence_tokens(0, j)}  # only the good shard's tokens
    assert dm.skipped_shards == 1  # counted once, across the worker process too

    with pytest.raises(ValueError, match=f"{shards[1]}: truncated"):
        take(MixtureDataModule(train, None, strict=True, **{**args, "num_workers": 0}), 12)
