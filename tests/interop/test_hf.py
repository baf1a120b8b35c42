"""Hugging Face folders ⇄ our LLaMA: our exports load in `transformers.LlamaForCausalLM.from_pretrained` to the
same logits and `generate` samples as the LVM does; folders saved by transformers (and the `.bin` layout of
transformers 4's `safe_serialization=False`) stream into our model to the same logits, with resident memory
growing by far less than the weights; malformed folders are errors naming the file and the field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

import lvm.interop.hf as hf_module
from lvm.interop.hf import export_hf, model_config_from_hf, parse_size, plan_shards
from lvm.interop.pretrained import (
    allocate_model,
    export_checkpoint_to_hf,
    load_model,
    load_pretrained_into,
    save_model_checkpoint,
)
from lvm.model import LLaMA, ModelConfig

ROOT = Path(__file__).resolve().parents[2]
# The LVM vocabulary (8192 codes + 100 specials) so that the generation config has something to suppress.
CONFIG = ModelConfig(
    name="tiny",
    hidden_size=64,
    intermediate_size=160,
    num_layers=2,
    num_heads=4,
    vocab_size=8292,
    max_seq_len=64,
    rope_theta=500.0,
)
IDS = torch.randint(0, 8192, (2, 40), generator=torch.Generator().manual_seed(1))


def random_model(config: ModelConfig = CONFIG) -> LLaMA:
    torch.manual_seed(0)
    model = LLaMA(config).eval()
    with torch.no_grad():  # norms away from 1 so that a norm loaded into the wrong place shows
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    return model


def transformers_twin(dtype: torch.dtype = torch.float32) -> LlamaForCausalLM:
    """A random LlamaForCausalLM of CONFIG's shape, built by transformers."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=CONFIG.vocab_size,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        rms_norm_eps=1e-6,
        rope_theta=500.0,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).to(dtype).eval()


def logits(model, ids=IDS) -> torch.Tensor:
    with torch.no_grad():
        out = model(ids)
    return (out if isinstance(out, torch.Tensor) else out.logits).float()


def rounded(model: LLaMA, dtype: torch.dtype) -> LLaMA:
    """A float32 copy of `model` whose weights went through `dtype` and back."""
    copy = LLaMA(model.config).eval()
    copy.load_state_dict({k: v.to(dtype).float() for k, v in model.state_dict().items()})
    return copy


# ---- export ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("max_shard_size", ["5GB", "1MB"], ids=["one-file", "sharded"])
def test_export_loads_in_transformers_to_the_same_logits(tmp_path, dtype, max_shard_size):
    ours = random_model()
    folder = export_hf(ours, tmp_path / "export", dtype=dtype, max_shard_size=max_shard_size)
    files = sorted(p.name for p in folder.iterdir())
    if max_shard_size == "5GB":
        assert files == ["config.json", "generation_config.json", "model.safetensors"]
    else:
        index = json.loads((folder / "model.safetensors.index.json").read_text())
        shards = sorted(set(index["weight_map"].values()))
        n = len(shards)
        assert n > 2 and shards == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
        assert files == sorted(["config.json", "generation_config.json", "model.safetensors.index.json", *shards])
        assert index["metadata"]["total_size"] == sum(p.numel() for p in ours.parameters()) * dtype.itemsize
        for shard in shards:  # each shard within the limit, unless one tensor alone exceeds it
            with safe_open(folder / shard, "pt") as f:
                sizes = [f.get_slice(k).get_shape() for k in f.keys()]
            total = sum(torch.Size(s).numel() * dtype.itemsize for s in sizes)
            assert total <= parse_size("1MB") or len(sizes) == 1
    stored = {}
    for file in folder.glob("*.safetensors"):
        stored.update(load_file(file))
    assert all(t.dtype == dtype for t in stored.values()) and len(stored) == len(ours.state_dict())
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama" and config["architectures"] == ["LlamaForCausalLM"]
    assert config["dtype"] == str(dtype).removeprefix("torch.") and config["tie_word_embeddings"] is False
    assert (config["bos_token_id"], config["eos_token_id"]) == (LlamaConfig().bos_token_id, LlamaConfig().eos_token_id)

    hf = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
    assert hf.config.num_key_value_heads == 4 and hf.config.rope_parameters["rope_theta"] == 500.0
    # The export holds the weights rounded to `dtype`: compared in fp32 against ours rounded alike.
    torch.testing.assert_close(logits(hf), logits(rounded(ours, dtype)), rtol=1e-5, atol=1e-5)
    if dtype == torch.bfloat16:  # and close to the fp32 original, within bf16 rounding
        torch.testing.assert_close(logits(hf), logits(ours), rtol=0.05, atol=0.05)
        hf16 = LlamaForCausalLM.from_pretrained(folder).eval()  # the dtype its config names
        assert hf16.dtype == torch.bfloat16
    assert model_config_from_hf(folder) == ModelConfig(**{**CONFIG.to_dict(), "name": "export"})


def test_generate_follows_the_exported_generation_config(tmp_path):
    folder = export_hf(random_model(), tmp_path / "export", dtype=torch.float32)
    hf = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    gen = hf.generation_config
    assert gen.pad_token_id == 8192 and gen.suppress_tokens == list(range(8192, 8292))
    assert gen.eos_token_id is None and gen.do_sample and gen.top_k == 0 and gen.top_p == 1.0
    GenerationConfig(**json.loads((folder / "generation_config.json").read_text())).validate(strict=True)

    # Make special id 8200 by far the likeliest and VQ code 2 (LlamaConfig's eos) the next: sampling must
    # never give 8200 and must not stop at 2.
    def boost(module, args, out):
        out = out.clone()
        out[..., 8200] += 1000.0
        out[..., 2] += 100.0
        return out

    hf.lm_head.register_forward_hook(boost)
    torch.manual_seed(0)
    out = hf.generate(IDS[:1, :5], max_new_tokens=12)
    new = out[0, 5:]
    assert len(new) == 12 and (new == 2).all(), out


def test_export_replaces_an_old_export_atomically_and_refuses_other_folders(tmp_path, monkeypatch):
    target = tmp_path / "export"
    export_hf(random_model(), target, dtype=torch.float32, max_shard_size="1MB")
    old = {p.name: p.read_bytes() for p in target.iterdir()}

    calls = []

    def failing_save(tensors, path, metadata=None):  # dies while writing the second shard
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        save_file(tensors, path, metadata=metadata)

    monkeypatch.setattr(hf_module, "save_file", failing_save)
    with pytest.raises(OSError, match="disk full"):
        export_hf(LLaMA(CONFIG), target, dtype=torch.float32, max_shard_size="1MB")
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in target.iterdir()} == old  # the old export, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no temporary left behind

    export_hf(random_model(), target, dtype=torch.bfloat16)  # replaces it: one file now
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "generation_config.json", "model.safetensors"]

    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"notes exists and is not a Hugging Face model folder"):
        export_hf(random_model(), other)
    assert (other / "keep.txt").read_text() == "mine"
    with pytest.raises(ValueError, match=r"max_shard_size: 'lots' is not a size"):
        export_hf(random_model(), target, max_shard_size="lots")
    with pytest.raises(ValueError, match=r"dtype: torch.int8"):
        export_hf(random_model(), target, dtype=torch.int8)


def test_shard_sizes_and_plan():
    assert parse_size("5GB") == 5 * 10**9 and parse_size("2GiB") == 2 * 2**30 and parse_size("100KB") == 10**5
    assert parse_size(123) == 123 and parse_size("1.5MB") == 1_500_000
    assert plan_shards({"a": 4, "b": 4, "c": 9, "d": 1}, 8) == [["a", "b"], ["c"], ["d"]]


def test_export_from_our_checkpoint_file(tmp_path):
    ours = random_model()
    ckpt = save_model_checkpoint(ours, tmp_path / "tiny.ckpt")
    folder = export_checkpoint_to_hf(ckpt, tmp_path / "hf", dtype=torch.float32)
    hf = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    torch.testing.assert_close(logits(hf), logits(ours), rtol=1e-5, atol=1e-5)
    again = load_model(ckpt, dtype=torch.bfloat16)  # and our own loader reads the file, into bf16 directly
    assert again.embed_tokens.weight.dtype == torch.bfloat16 and not again.training
    assert torch.equal(again.lm_head.weight, ours.lm_head.weight.to(torch.bfloat16))


# ---- import ----------------------------------------------------------------------------------------
def save_bin(state: dict[str, torch.Tensor], folder: Path, shards: int) -> None:
    """The layout transformers 4 writes with safe_serialization=False (transformers 5 no longer writes it):
    torch.save'd state dicts, `pytorch_model.bin` or `pytorch_model-0000i-of-0000N.bin` + an index."""
    folder.mkdir(parents=True, exist_ok=True)
    if shards == 1:
        torch.save(state, folder / "pytorch_model.bin")
        return
    names = list(state)
    weight_map = {}
    for i in range(shards):
        file = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
        part = {n: state[n].clone() for n in names[i::shards]}
        torch.save(part, folder / file)
        weight_map.update(dict.fromkeys(part, file))
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=["fp16", "bf16", "fp32"])
@pytest.mark.parametrize("layout", ["safetensors", "safetensors-sharded", "bin", "bin-sharded"])
def test_transformers_folders_stream_into_our_model(tmp_path, dtype, layout):
    hf = transformers_twin(dtype)
    if layout.startswith("safetensors"):
        hf.save_pretrained(tmp_path, max_shard_size="500KB" if layout.endswith("sharded") else "50GB")
        assert (tmp_path / "model.safetensors.index.json").exists() == layout.endswith("sharded")
    else:
        hf.config.save_pretrained(tmp_path)
        state = dict(hf.state_dict())
        state["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)  # older exports carry this buffer
        save_bin(state, tmp_path, shards=3 if layout.endswith("sharded") else 1)
    ours = LLaMA(model_config_from_hf(tmp_path)).eval()
    load_pretrained_into(ours, tmp_path)
    assert ours.embed_tokens.weight.dtype == torch.float32  # cast to the model's dtype
    torch.testing.assert_close(logits(ours), logits(hf.float()), rtol=1e-4, atol=1e-4)

    in_bf16 = allocate_model(ours.config, dtype=torch.bfloat16)
    load_pretrained_into(in_bf16, tmp_path)
    for name, p in in_bf16.state_dict().items():
        assert p.dtype == torch.bfloat16 and torch.equal(p, ours.state_dict()[name].to(torch.bfloat16)), name


STREAM_SCRIPT = """
import sys
from lvm.interop.pretrained import allocate_model, load_pretrained_into, read_hf_state_dict, read_model_config

def status(field):  # bytes
    line = next(l for l in open("/proc/self/status") if l.startswith(field + ":"))
    return int(line.split()[1]) * 1024

folder, mode = sys.argv[1:]
model = allocate_model(read_model_config(folder))
with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current resident size
    f.write("5")
before = status("VmRSS")
if mode == "stream":
    load_pretrained_into(model, folder)
else:
    model.load_state_dict(read_hf_state_dict(folder))
print(status("VmHWM") - before)
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc peak-RSS reset")
def test_streaming_import_holds_no_second_copy(tmp_path):
    """Peak resident memory (VmHWM, reset just before) of a fresh process importing a 164 MB fp32 folder into
    an allocated model: streaming grows it by about one tensor; reading the whole state dict first (the
    measurement's control) grows it by the weights' size."""
    config = ModelConfig(name="mid", hidden_size=768, intermediate_size=2048, num_layers=4, num_heads=12)
    model = LLaMA(config)
    weights = sum(p.numel() for p in model.parameters()) * 4
    assert 150e6 < weights < 200e6
    folder = export_hf(model, tmp_path / "mid", dtype=torch.float32)
    del model
    largest = CONFIG.vocab_size * 768 * 4  # the embedding / head: 25 MB

    def growth(mode: str) -> int:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        result = subprocess.run(
            [sys.executable, "-c", STREAM_SCRIPT, str(folder), mode],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return int(result.stdout.strip().splitlines()[-1])

    streamed, whole = growth("stream"), growth("whole")
    assert whole > 0.9 * weights, (whole, weights)
    assert streamed < 2 * largest < 0.35 * weights, (streamed, weights)


# ---- errors ----------------------------------------------------------------------------------------
def test_malformed_folders_are_errors_naming_the_file_and_the_tensors(tmp_path):
    folder = export_hf(random_model(), tmp_path / "hf", dtype=torch.float32)
    model = LLaMA(CONFIG)
    state = load_file(folder / "model.safetensors")

    save_file(
        {k: v for k, v in state.items() if k != "model.layers.1.mlp.up_proj.weight"},
        folder / "model.safetensors",
        metadata={"format": "pt"},
    )
    with pytest.raises(
        ValueError,
        match=r"hf: weights do not fit the configured model\. "
        r"Missing: \['layers\.1\.mlp\.up_proj\.weight'\]; unexpected: \[\]",
    ):
        load_pretrained_into(model, folder)

    extra = {
        **state,
        "model.layers.0.self_attn.q_proj.bias": torch.zeros(64),
        "model.layers.0.mlp.up_proj.weight": torch.zeros(100, 64),
    }
    save_file(extra, folder / "model.safetensors", metadata={"format": "pt"})
    before = model.embed_tokens.weight.detach().clone()
    with pytest.raises(
        ValueError,
        match=r"unexpected: \['layers\.0\.self_attn\.q_proj\.bias "
        r"\(model\.safetensors\)'\]; mis-shaped: \['layers\.0\.mlp\.up_proj\.weight: "
        r"\(100, 64\) in model\.safetensors, \(160, 64\) in the model'\]",
    ):
        load_pretrained_into(model, folder)
    assert torch.equal(model.embed_tokens.weight, before)  # checked before anything was copied

    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "model-2.safetensors"}}))
    with pytest.raises(
        FileNotFoundError,
        match=r"model\.safetensors\.index\.json: names shard\(s\) "
        r"\['model-2\.safetensors'\]",
    ):
        load_pretrained_into(model, folder)
    (folder / "model.safetensors.index.json").unlink()

    good = json.loads((folder / "config.json").read_text())
    for change, message in [
        ({"hidden_size": "64"}, r"config\.json: field 'hidden_size' is '64', not a positive integer"),
        ({"hidden_act": "gelu"}, r"config\.json: field 'hidden_act' is 'gelu'; LVM models have 'silu'"),
        ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, r"config\.json: field 'rope_scaling'"),
        (
            {"num_attention_heads": 5, "num_key_value_heads": 5, "head_dim": None},
            r"config\.json: model 'hf': hidden_size 64 is not divisible by num_heads 5",
        ),
        ({"intermediate_size": None}, r"config\.json: field 'intermediate_size' is None"),
    ]:
        (folder / "config.json").write_text(json.dumps({**good, **change}))
        with pytest.raises(ValueError, match=message):
            model_config_from_hf(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json: not valid JSON"):
        load_model(folder)


def test_a_model_with_image_positions_is_refused_by_the_export(tmp_path):
    model = LLaMA(ModelConfig(hidden_size=32, intermediate_size=64, num_heads=2, vocab_size=50, image_positions=4))
    with pytest.raises(ValueError, match="image_positions=4"):
        export_hf(model, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
