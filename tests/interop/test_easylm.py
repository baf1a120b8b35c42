"""The original's EasyLM parameters → ours: a random `LlamaForCausalLM` written in EasyLM's naming and layout
(kernels (in, out), q/k rows in the interleaved rotary layout: this file's own inverse of the conversion)
and in EasyLM's checkpoint files (written here to the format lvm.interop.easylm's docstring describes)
imports to the same logits; the q/k row permutation turns EasyLM's pairwise rotary into HF's half-split
one exactly (attention scores compared); broken files are errors naming the file and the tensors."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from lvm.interop.easylm import (
    convert_easylm_to_hf,
    easylm_state_dict,
    interleaved_to_half_split,
    iter_easylm_checkpoint,
    load_easylm_into,
    load_easylm_model,
)
from lvm.model import LLaMA, ModelConfig

CONFIG = ModelConfig(
    name="tiny", hidden_size=64, intermediate_size=160, num_layers=2, num_heads=4, vocab_size=300, max_seq_len=64
)
IDS = torch.randint(0, 300, (2, 40), generator=torch.Generator().manual_seed(1))

# the original's EasyLM/models/llama/convert_easylm_to_hf.py, HF name (without `model.`) → EasyLM name; {i} is the layer
NAMES = {
    "embed_tokens.weight": "transformer.wte.embedding",
    "norm.weight": "transformer.ln_f.kernel",
    "lm_head.weight": "lm_head.kernel",
    "layers.{i}.self_attn.q_proj.weight": "transformer.h.{i}.attention.wq.kernel",
    "layers.{i}.self_attn.k_proj.weight": "transformer.h.{i}.attention.wk.kernel",
    "layers.{i}.self_attn.v_proj.weight": "transformer.h.{i}.attention.wv.kernel",
    "layers.{i}.self_attn.o_proj.weight": "transformer.h.{i}.attention.wo.kernel",
    "layers.{i}.mlp.gate_proj.weight": "transformer.h.{i}.feed_forward.w1.kernel",
    "layers.{i}.mlp.up_proj.weight": "transformer.h.{i}.feed_forward.w3.kernel",
    "layers.{i}.mlp.down_proj.weight": "transformer.h.{i}.feed_forward.w2.kernel",
    "layers.{i}.input_layernorm.weight": "transformer.h.{i}.attention_norm.kernel",
    "layers.{i}.post_attention_layernorm.weight": "transformer.h.{i}.ffn_norm.kernel",
}


def hf_model(config: ModelConfig = CONFIG) -> LlamaForCausalLM:
    torch.manual_seed(0)
    hf = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads,
            num_key_value_heads=config.num_heads,
            max_position_embeddings=config.max_seq_len,
            rms_norm_eps=1e-6,
            rope_theta=10000.0,
            tie_word_embeddings=False,
        )
    ).eval()
    with torch.no_grad():  # norms away from 1, so a misplaced norm shows
        for name, p in hf.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    return hf


def to_interleaved(w: torch.Tensor, num_heads: int) -> torch.Tensor:
    """HF q/k rows (out, in) → EasyLM's: per head, row 2i is HF row i and row 2i+1 is HF row i + head_dim/2."""
    out_features, in_features = w.shape
    head_dim = out_features // num_heads
    w = w.reshape(num_heads, head_dim, in_features)
    result = torch.empty_like(w)
    result[:, 0::2] = w[:, : head_dim // 2]
    result[:, 1::2] = w[:, head_dim // 2 :]
    return result.reshape(out_features, in_features)


def easylm_params(hf: LlamaForCausalLM, num_heads: int) -> dict[str, torch.Tensor]:
    """The HF model's weights as EasyLM holds them: dotted EasyLM name → tensor."""
    state = {k.removeprefix("model."): v for k, v in hf.state_dict().items()}
    params = {}
    for i in range(hf.config.num_hidden_layers):
        for ours, theirs in NAMES.items():
            ours, theirs = ours.format(i=i), theirs.format(i=i)
            tensor = state[ours]
            if ".wq." in theirs or ".wk." in theirs:
                tensor = to_interleaved(tensor, num_heads)
            if tensor.ndim == 2 and theirs.endswith(".kernel"):
                tensor = tensor.T  # JAX Dense kernels are (in, out)
            params[theirs] = tensor.contiguous()
    return params


# ---- EasyLM's files, written from the format's description -------------------------------------------
def flax_array_ext(tensor: torch.Tensor) -> msgpack.ExtType:
    """flax.serialization's ndarray encoding: ExtType 1 around msgpack (shape, dtype name, C-order bytes)."""
    data = tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    dtype_name = str(tensor.dtype).removeprefix("torch.")
    return msgpack.ExtType(1, msgpack.packb((tuple(tensor.shape), dtype_name, data), use_bin_type=True))


def flax_to_bytes(tensor: torch.Tensor, chunk: int | None = None) -> bytes:
    """flax.serialization.to_bytes of one array; `chunk` splits it as flax does above 2**30 bytes."""
    if chunk is None:
        return msgpack.packb(flax_array_ext(tensor))
    flat = tensor.reshape(-1)
    pieces = [flat[i : i + chunk] for i in range(0, len(flat), chunk)]
    return msgpack.packb(
        {
            "__msgpack_chunked_array__": True,
            "shape": {str(i): n for i, n in enumerate(tensor.shape)},
            "chunks": {str(i): flax_array_ext(p) for i, p in enumerate(pieces)},
        }
    )


def write_streaming(path: Path, entries: dict[tuple, bytes]) -> Path:
    """EasyLM StreamingCheckpointer.save_checkpoint: msgpack (key path, to_bytes(value)) pairs, one by one."""
    packer = msgpack.Packer()
    with open(path, "wb") as f:
        for key, value in entries.items():
            f.write(packer.pack((key, value)))
    return path


def write_checkpoint(path: Path, params: dict[str, torch.Tensor], kind: str) -> Path:
    if kind == "flax_params":  # one msgpack map of the nested tree (flax.serialization.msgpack_serialize)
        tree: dict = {}
        for name, tensor in params.items():
            node = tree
            *parents, leaf = name.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = flax_array_ext(tensor)
        path.write_bytes(msgpack.packb(tree))
        return path
    entries: dict[tuple, bytes] = {}
    if kind == "trainstate":  # TrainState: step, params = {"params": ...}, opt_state with the same names
        entries[("step",)] = msgpack.packb(msgpack.ExtType(3, msgpack.packb(((), "int32", b"\x07\0\0\0"))))
        for name, tensor in params.items():
            entries[("params", "params", *name.split("."))] = flax_to_bytes(
                tensor, chunk=1000 if name.endswith("wte.embedding") else None
            )
            entries[("opt_state", "1", "0", "mu", "params", *name.split("."))] = flax_to_bytes(torch.zeros(3))
    else:  # streaming_params: the state's params = {"params": ...}
        for name, tensor in params.items():
            entries[("params", *name.split("."))] = flax_to_bytes(tensor)
    return write_streaming(path, entries)


def logits(model, ids=IDS) -> torch.Tensor:
    with torch.no_grad():
        out = model(ids)
    return (out if isinstance(out, torch.Tensor) else out.logits).float()


@pytest.mark.parametrize(
    "kind,dtype", [("params", torch.float32), ("trainstate", torch.bfloat16), ("flax_params", torch.float32)]
)
def test_easylm_checkpoint_imports_to_the_same_logits(tmp_path, kind, dtype):
    hf = hf_model()
    if dtype != torch.float32:  # EasyLM stores what its run kept; the reference holds the same rounded weights
        hf = hf.to(dtype).float()
    params = {name: t.to(dtype) for name, t in easylm_params(hf, CONFIG.num_heads).items()}
    path = write_checkpoint(tmp_path / f"streaming_{kind}", params, kind)

    read = dict(iter_easylm_checkpoint(path))
    assert sorted(read) == sorted(params)  # step and optimizer state skipped
    assert all(torch.equal(read[name], params[name]) for name in params)

    ours = load_easylm_model(path, CONFIG)
    assert ours.lm_head.weight.dtype == torch.float32
    torch.testing.assert_close(logits(ours), logits(hf), rtol=1e-4, atol=1e-4)


def test_easylm_to_hf_folder(tmp_path):
    hf = hf_model()
    path = write_checkpoint(tmp_path / "streaming_params", easylm_params(hf, CONFIG.num_heads), "params")
    folder = convert_easylm_to_hf(path, tmp_path / "hf", CONFIG, dtype=torch.float32, max_shard_size="100KB")
    assert (folder / "model.safetensors.index.json").exists()
    exported = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    torch.testing.assert_close(logits(exported), logits(hf), rtol=1e-4, atol=1e-4)

    fp16 = convert_easylm_to_hf(path, tmp_path / "hf16", CONFIG)  # the original's export dtype
    exported = LlamaForCausalLM.from_pretrained(fp16).eval()
    assert exported.dtype == torch.float16
    torch.testing.assert_close(logits(exported.float()), logits(hf.half().float()), rtol=1e-4, atol=1e-4)


def test_in_memory_params_convert_alike():
    hf = hf_model()
    flat = easylm_params(hf, CONFIG.num_heads)
    nested: dict = {}
    for name, tensor in flat.items():  # flax's nested dict of numpy arrays, under "params"
        node = nested.setdefault("params", {})
        *parents, leaf = name.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = tensor.numpy()
    state = easylm_state_dict(nested, CONFIG.num_heads)
    ours = LLaMA(CONFIG).eval()
    ours.load_state_dict(state)
    torch.testing.assert_close(logits(ours), logits(hf), rtol=1e-4, atol=1e-4)
    assert easylm_state_dict(flat, CONFIG.num_heads).keys() == state.keys()


def test_permutation_turns_pairwise_rotary_into_half_split_rotary():
    """q·kᵀ of one attention layer: EasyLM rotates adjacent pairs (x[2i], x[2i+1]) as complex numbers by
    t·θ_i on its own weights; HF rotates (x[i], x[i + d/2]) on the permuted weights. Same scores."""
    torch.manual_seed(0)
    num_heads, head_dim, d, T, theta = 4, 16, 64, 12, 10000.0
    wq, wk = torch.randn(d, d, dtype=torch.float64), torch.randn(d, d, dtype=torch.float64)  # EasyLM layout, (out, in)
    x = torch.randn(T, d, dtype=torch.float64)
    freqs = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)  # θ_i, i < head_dim/2
    angles = torch.arange(T, dtype=torch.float64)[:, None] * freqs  # (T, head_dim/2)

    def easylm_rotary(w):  # EasyLM's apply_rotary_emb
        h = (x @ w.T).reshape(T, num_heads, head_dim // 2, 2)
        rotated = torch.view_as_complex(h.contiguous()) * torch.polar(torch.ones_like(angles), angles)[:, None]
        return torch.view_as_real(rotated).reshape(T, num_heads, head_dim).transpose(0, 1)  # (H, T, Dh)

    cos = torch.cat([angles, angles], -1).cos()[None]
    sin = torch.cat([angles, angles], -1).sin()[None]

    def hf_rotary(w_q, w_k):  # transformers' own apply_rotary_pos_emb, (B, H, T, Dh)
        q = (x @ w_q.T).reshape(1, T, num_heads, head_dim).transpose(1, 2)
        k = (x @ w_k.T).reshape(1, T, num_heads, head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        return q[0], k[0]

    expected = easylm_rotary(wq) @ easylm_rotary(wk).transpose(-1, -2)
    q, k = hf_rotary(interleaved_to_half_split(wq, num_heads), interleaved_to_half_split(wk, num_heads))
    torch.testing.assert_close(q @ k.transpose(-1, -2), expected, rtol=1e-10, atol=1e-10)
    q, k = hf_rotary(wq, wk)  # unpermuted: the scores differ (the test can fail)
    assert not torch.allclose(q @ k.transpose(-1, -2), expected, atol=1e-3)
    assert torch.equal(to_interleaved(interleaved_to_half_split(wq, num_heads), num_heads), wq)


def test_broken_files_are_errors_naming_the_file_and_the_tensors(tmp_path):
    params = easylm_params(hf_model(), CONFIG.num_heads)
    path = write_checkpoint(tmp_path / "streaming_params", params, "params")
    with pytest.raises(
        ValueError,
        match=r"streaming_params: weights do not fit the configured model\. Missing: "
        r"\['layers\.2\.input_layernorm\.weight'",
    ):
        load_easylm_into(LLaMA(ModelConfig(**{**CONFIG.to_dict(), "num_layers": 3})), path)
    with pytest.raises(
        ValueError,
        match=r"mis-shaped: \['embed_tokens\.weight: \(300, 64\) in streaming_params, "
        r"\(400, 64\) in the model'",
    ):
        load_easylm_into(LLaMA(ModelConfig(**{**CONFIG.to_dict(), "vocab_size": 400})), path)

    extra = write_checkpoint(
        tmp_path / "extra", {**params, "transformer.h.0.attention.bq.bias": torch.zeros(64)}, "params"
    )
    with pytest.raises(ValueError, match=r"unexpected: \['transformer\.h\.0\.attention\.bq\.bias \(extra\)'\]"):
        load_easylm_into(LLaMA(CONFIG), extra)

    data = path.read_bytes()
    (tmp_path / "truncated").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"truncated: entry \d+: the file ends inside it"):
        load_easylm_into(LLaMA(CONFIG), tmp_path / "truncated")
    (tmp_path / "other").write_bytes(msgpack.packb([1, 2, 3]))
    with pytest.raises(ValueError, match=r"other: entry 0 is not a \(key path, value\) pair"):
        list(iter_easylm_checkpoint(tmp_path / "other"))
    write_streaming(
        tmp_path / "odd_dtype",
        {
            ("params", "lm_head", "kernel"): msgpack.packb(
                msgpack.ExtType(1, msgpack.packb(((2,), "no_such_type", b"\0\0"), use_bin_type=True))
            )
        },
    )
    with pytest.raises(ValueError, match=r"odd_dtype: lm_head\.kernel: array of dtype 'no_such_type'"):
        list(iter_easylm_checkpoint(tmp_path / "odd_dtype"))
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty: empty file"):
        list(iter_easylm_checkpoint(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match=r"nowhere: no such EasyLM checkpoint file"):
        list(iter_easylm_checkpoint(tmp_path / "nowhere"))
