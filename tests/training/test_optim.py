import pytest
import torch
from torch import nn

from lvm.model import LLaMA, ModelConfig
from lvm.training.optim import build_adamw, parameter_groups, warmup_cosine_lr, warmup_cosine_scheduler
from tests.spec import spec_lr as schedule_of_spec

PEAK, END, WARMUP, DECAY = 1.5e-4, 3e-5, 10, 50


def spec_lr(step: int) -> float:
    return schedule_of_spec(step, PEAK, END, WARMUP, DECAY)


def test_scheduler_follows_formula_step_by_step():
    param = nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([param], lr=PEAK)
    scheduler = warmup_cosine_scheduler(optimizer, warmup_steps=WARMUP, decay_steps=DECAY, end_lr=END)
    seen = []
    for _ in range(DECAY + 10):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    for step in (0, 1, 5, WARMUP - 1, WARMUP, 20, 30, DECAY - 1, DECAY, DECAY + 9):
        assert seen[step] == pytest.approx(spec_lr(step), rel=1e-9, abs=1e-15), step
    assert seen[0] == 0.0 and max(seen) == pytest.approx(PEAK)
    assert seen[(WARMUP + DECAY) // 2] == pytest.approx((PEAK + END) / 2)  # cosine midpoint


def test_function_and_scheduler_agree_for_every_group():
    model = LLaMA(ModelConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, vocab_size=64))
    optimizer = build_adamw(model, lr=PEAK, exclude_norms_and_embeddings=True)
    scheduler = warmup_cosine_scheduler(optimizer, warmup_steps=WARMUP, decay_steps=DECAY, end_lr=END)
    for step in range(30):
        expected = warmup_cosine_lr(step, PEAK, END, WARMUP, DECAY)
        assert all(g["lr"] == pytest.approx(expected, abs=1e-15) for g in optimizer.param_groups)
        optimizer.step()
        scheduler.step()


def test_decay_steps_before_warmup_is_refused():
    optimizer = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="decay_steps 5 must be ≥ warmup_steps 10"):
        warmup_cosine_scheduler(optimizer, warmup_steps=10, decay_steps=5, end_lr=0.0)


def test_original_recipe_decays_every_parameter():
    model = LLaMA(ModelConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, vocab_size=64))
    optimizer = build_adamw(model, lr=1e-3)
    (group,) = optimizer.param_groups
    assert group["weight_decay"] == 0.1 and group["betas"] == (0.9, 0.95) and group["eps"] == 1e-8
    assert {id(p) for p in group["params"]} == {id(p) for p in model.parameters()}


def test_alternative_groups_split_linear_weights_from_norms_and_embeddings():
    model = LLaMA(ModelConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, vocab_size=64))
    decay, no_decay = parameter_groups(model, 0.1, exclude_norms_and_embeddings=True)
    linear = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    assert {id(p) for p in decay["params"]} == linear
    assert no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert id(model.embed_tokens.weight) in {id(p) for p in no_decay["params"]}
