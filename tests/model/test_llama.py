"""The decoder against `transformers.LlamaForCausalLM` and the original's size table."""

from dataclasses import replace

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lvm.model import SIZES, LLaMA, ModelConfig, count_parameters

# Spec §3 table, in millions of parameters (two decimals).
SPEC_PARAMS_M = {
    "vqlm_debug": 2.45,
    "vqlm_100m": 116.97,
    "vqlm_300m": 290.97,
    "vqlm_600m": 648.40,
    "vqlm_1b": 1147.12,
    "vqlm_3b": 3274.74,
    "vqlm_7b": 6544.20,
    "vqlm_13b": 12773.09,
    "vqlm_20b": 20722.71,
    "vqlm_30b": 32213.34,
}


@pytest.mark.parametrize("name", sorted(SPEC_PARAMS_M))
def test_every_size_matches_spec_parameter_count_on_meta(name):
    config = SIZES[name]
    with torch.device("meta"):
        model = LLaMA(config)
    n = count_parameters(model)
    assert round(n / 1e6, 2) == pytest.approx(SPEC_PARAMS_M[name], abs=0.011)
    assert n == config.num_parameters


def hf_twin(config: ModelConfig) -> LlamaForCausalLM:
    hf_config = LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=config.max_seq_len,
        rms_norm_eps=config.norm_eps,
        rope_theta=config.rope_theta,
        tie_word_embeddings=False,
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
    )
    hf_config._attn_implementation = "eager"  # an independent attention path, not SDPA like ours
    return LlamaForCausalLM(hf_config).eval()


@pytest.fixture(scope="module")
def tiny_pair():
    torch.manual_seed(0)
    config = ModelConfig(
        name="tiny", hidden_size=64, intermediate_size=160, num_layers=3, num_heads=4, vocab_size=300, max_seq_len=64
    )
    ours = LLaMA(config).eval()
    hf = hf_twin(config)
    # HF names = ours with a "model." prefix on everything but the head.
    hf_state = {("" if k.startswith("lm_head") else "model.") + k: v for k, v in ours.state_dict().items()}
    missing, unexpected = hf.load_state_dict(hf_state, strict=False)
    assert not unexpected and all("rotary" in k for k in missing), (missing, unexpected)
    return ours, hf


def test_logits_equal_transformers_llama(tiny_pair):
    ours, hf = tiny_pair
    ids = torch.randint(0, 300, (2, 48), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(ids).logits
        got = ours(ids)
    assert got.shape == expected.shape == (2, 48, 300)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_kv_cache_forward_equals_full_forward(tiny_pair):
    ours, _ = tiny_pair
    ids = torch.randint(0, 300, (2, 40), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = ours(ids)
        ours.setup_kv_cache(batch_size=2, max_len=64)
        try:
            prefill = ours(ids[:, :30], input_pos=torch.arange(30))
            steps = [ours(ids[:, t : t + 1], input_pos=torch.tensor([t])) for t in range(30, 40)]
        finally:
            ours.clear_kv_cache()
    torch.testing.assert_close(torch.cat([prefill, *steps], dim=1), full, rtol=1e-5, atol=1e-5)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown model size 'vqlm_5b'"):
        ModelConfig.from_name("vqlm_5b")
    with pytest.raises(ValueError, match="not divisible"):
        ModelConfig(hidden_size=100, num_heads=3)
    model = LLaMA(ModelConfig(max_seq_len=16))
    with pytest.raises(ValueError, match="exceeds max_seq_len 16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_meta_model_materialises_with_init_weights():
    config = ModelConfig(max_seq_len=32)
    with torch.device("meta"):
        model = LLaMA(config)
    model.to_empty(device="cpu")
    model.init_weights()
    assert torch.isfinite(model(torch.zeros(1, 8, dtype=torch.long))).all()
    assert model.embed_tokens.weight.std().item() == pytest.approx(0.02, rel=0.05)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="flash-attn runs on CUDA only")
def test_flash_attn_and_sdpa_give_the_same_logits(monkeypatch):
    pytest.importorskip("flash_attn")
    import lvm.model.llama as llama

    assert llama.flash_attn_func is not None
    torch.manual_seed(0)
    model = LLaMA(ModelConfig(hidden_size=256, intermediate_size=512, num_layers=2, num_heads=4)).cuda().bfloat16()
    ids = torch.randint(0, 8192, (2, 512), device="cuda")
    with torch.no_grad():
        flash = model(ids).float()
        monkeypatch.setattr(llama, "flash_attn_func", None)  # the same model through torch SDPA
        sdpa = model(ids).float()
    torch.testing.assert_close(flash, sdpa, rtol=2e-2, atol=2e-2)  # bf16 kernels differ in summation order


def test_image_positions_equal_transformers_llama_fed_the_summed_embeddings(tiny_pair):
    # image_positions=N adds a learned row per place in the image (position mod N) to the token embedding,
    # then is a plain LLaMA: LlamaForCausalLM given those summed embeddings writes the same logits.
    config = replace(tiny_pair[0].config, image_positions=8)
    torch.manual_seed(3)
    ours = LLaMA(config).eval()
    assert count_parameters(ours) == config.num_parameters == tiny_pair[0].config.num_parameters + 8 * 64
    hf = hf_twin(config)
    state = {("" if k.startswith("lm_head") else "model.") + k: v for k, v in ours.state_dict().items()}
    del state["model.embed_image_positions.weight"]
    hf.load_state_dict(state, strict=False)
    ids = torch.randint(0, 300, (2, 40), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        table = ours.embed_image_positions.weight
        expected = hf(inputs_embeds=ours.embed_tokens(ids) + table[torch.arange(40) % 8]).logits
        without_table = hf(inputs_embeds=ours.embed_tokens(ids)).logits
        got = ours(ids)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert (got - without_table).abs().max() > 1e-2  # the table matters, so the comparison means something
    with pytest.raises(ValueError, match="image_positions must be >= 0"):
        replace(config, image_positions=-1)
