"""Pretrained weights from a Hugging Face LlamaForCausalLM folder (as the released LVM 7B is published)."""

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lvm.interop.hf import model_config_from_hf
from lvm.interop.pretrained import load_pretrained_into
from lvm.model import LLaMA, ModelConfig

CONFIG = ModelConfig(
    name="tiny",
    hidden_size=64,
    intermediate_size=160,
    num_layers=2,
    num_heads=4,
    vocab_size=300,
    max_seq_len=64,
    rope_theta=500.0,
)


def save_hf_model(folder, **save_kwargs) -> LlamaForCausalLM:
    """A random LlamaForCausalLM of CONFIG's shape, saved by transformers itself (fp16, as EasyLM's export)."""
    torch.manual_seed(0)
    hf = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=300,
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
    ).eval()
    hf.to(torch.float16).save_pretrained(folder, **save_kwargs)
    return hf.float()


@pytest.mark.parametrize("save_kwargs", [{}, {"max_shard_size": "100KB"}], ids=["one-file", "sharded"])
def test_hf_folder_loads_to_the_same_logits(tmp_path, save_kwargs):
    hf = save_hf_model(tmp_path, **save_kwargs)
    if save_kwargs:
        assert (tmp_path / "model.safetensors.index.json").exists()
    config = model_config_from_hf(tmp_path)
    assert (config.hidden_size, config.num_layers, config.num_heads, config.vocab_size, config.rope_theta) == (
        64,
        2,
        4,
        300,
        500.0,
    )
    ours = LLaMA(config).eval()
    load_pretrained_into(ours, tmp_path)
    ids = torch.randint(0, 300, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(ids).logits, rtol=1e-4, atol=1e-4)


def test_hf_folder_errors_name_the_file_and_field(tmp_path):
    save_hf_model(tmp_path)
    with pytest.raises(ValueError, match=r"weights do not fit the configured model.*mis-shaped: \['embed_tokens"):
        load_pretrained_into(
            LLaMA(
                ModelConfig(
                    hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, vocab_size=300, max_seq_len=64
                )
            ),
            tmp_path,
        )
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_key_value_heads": 2}))
    with pytest.raises(ValueError, match=r"config\.json: num_key_value_heads 2 != num_attention_heads 4"):
        model_config_from_hf(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        load_pretrained_into(LLaMA(CONFIG), tmp_path)
