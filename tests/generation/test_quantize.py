"""int8 weight-only inference: the layer against its formula, weight bytes, and accuracy on a small model
trained here (perplexity, top-1 agreement, greedy tokens through the KV-cache engine, eager and compiled,
on a left-padded batch)."""

from __future__ import annotations

import math

import pytest
import torch

from lvm.generation.engine import GenerationEngine
from lvm.generation.quantize import Int8WeightOnlyLinear, quantize_model, weight_bytes
from lvm.generation.sampler import SamplingConfig
from lvm.model.config import ModelConfig
from lvm.model.llama import LLaMA

VOCAB = 48
GREEDY = SamplingConfig(temperature=0, num_vq_codes=VOCAB)


def test_the_layer_is_its_formula():
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 40, bias=True)
    layer = Int8WeightOnlyLinear.from_linear(linear)
    assert layer.weight_int8.dtype == torch.int8 and layer.weight_int8.abs().max() == 127
    # Written out independently: per-row absmax scale, rounded int8 grid, then an fp32 matmul.
    scale = linear.weight.detach().abs().amax(1) / 127
    grid = torch.round(linear.weight.detach() / scale[:, None])
    x = torch.randn(3, 5, 96)
    expected = x @ (grid * scale[:, None]).t() + linear.bias.detach()
    got = layer(x)
    assert got.shape == (3, 5, 40) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=0.02, atol=0.02)  # bf16 activations: ~3 significant digits
    assert (got - linear(x)).abs().max() < 0.05  # and close to the unquantized layer


def test_an_int8_vqlm_100m_holds_a_quarter_of_the_block_bytes():
    with torch.device("meta"):  # no memory: shapes and dtypes are all that bytes depend on
        fp32, int8 = LLaMA(ModelConfig.from_name("vqlm_100m")), LLaMA(ModelConfig.from_name("vqlm_100m"))
        quantize_model(int8, "int8")
    blocks = weight_bytes(int8.layers) / weight_bytes(fp32.layers)
    assert 0.25 <= blocks < 0.26  # int8 weights + one bf16 scale per output channel; norms stay fp32
    assert isinstance(int8.lm_head, torch.nn.Linear)  # the head stays full precision by default
    assert 0.3 < weight_bytes(int8) / weight_bytes(fp32) < 0.36
    with pytest.raises(ValueError, match=r"quantize: 'int4' is not one of \[None, 'int8'\]"):
        quantize_model(fp32, "int4")


def rule_batch(batch: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """Sequences where the next token is (7·x + 3) mod V three times in four, else uniform: a rule a small
    model learns in a few hundred steps, with a real distribution left over (not one-hot logits)."""
    rows = torch.empty(batch, length, dtype=torch.long)
    rows[:, 0] = torch.randint(0, VOCAB, (batch,), generator=generator)
    for t in range(1, length):
        follow = torch.rand(batch, generator=generator) < 0.75
        rows[:, t] = torch.where(follow, (7 * rows[:, t - 1] + 3) % VOCAB,
                                 torch.randint(0, VOCAB, (batch,), generator=generator))  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def trained() -> LLaMA:
    torch.manual_seed(0)
    config = ModelConfig(name="tiny", hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                         vocab_size=VOCAB, max_seq_len=128)  # fmt: skip
    model = LLaMA(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(1)
    for _ in range(200):
        ids = rule_batch(16, 49, generator)
        loss = torch.nn.functional.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 1.9, loss.item()  # it learned the rule (uniform guessing: ln 48 = 3.87)
    return model.eval()


def test_int8_keeps_perplexity_and_the_next_token(trained):
    quantized = quantize_model(LLaMA(trained.config).eval(), None)
    quantized.load_state_dict(trained.state_dict())
    quantize_model(quantized, "int8")
    held_out = rule_batch(32, 64, torch.Generator().manual_seed(99))
    with torch.inference_mode():
        logits_fp32, logits_int8 = trained(held_out[:, :-1]), quantized(held_out[:, :-1])

    def perplexity(logits: torch.Tensor) -> float:
        return math.exp(torch.nn.functional.cross_entropy(logits.flatten(0, 1), held_out[:, 1:].flatten()).item())

    assert abs(perplexity(logits_int8) / perplexity(logits_fp32) - 1) < 0.01
    assert (logits_int8.argmax(-1) == logits_fp32.argmax(-1)).float().mean() >= 0.98


@pytest.mark.slow
def test_greedy_tokens_through_the_engine_eager_and_compiled(trained):
    quantized = LLaMA(trained.config).eval()
    quantized.load_state_dict(trained.state_dict())
    quantize_model(quantized, "int8")
    generator = torch.Generator().manual_seed(5)
    prompts = [rule_batch(1, length, generator)[0] for length in (9, 17, 24)]  # ragged: left-padded
    reference = GenerationEngine(trained).generate(prompts, 16, GREEDY)
    eager = GenerationEngine(quantized).generate(prompts, 16, GREEDY)
    compiled = GenerationEngine(quantized, compile_decode=True, compile_options={"dynamic": False})
    assert torch.equal(compiled.generate(prompts, 16, GREEDY), eager)  # compiling changes nothing
    assert (eager == reference).float().mean() >= 0.95
