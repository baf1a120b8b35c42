import math

import pytest
import torch
from torch import nn

from lvm.model import LLaMA, ModelConfig
from lvm.optim import build_adamw, parameter_groups, warmup_cosine_lr, warmup_cosine_scheduler

PEAK, END, WARMUP, DECAY = 1.5e-4, 3e-5, 10, 50


def spec_lr(step: int) -> float:
    """The spec's schedule written out independently: linear warmup, cosine to end_lr, then flat."""
    if step < WARMUP:
        return PEAK * step / WARMUP
    if step >= DECAY:
        return END
    cosine = 0.5 * (1 + math.cos(math.pi * (step - WARMUP) / (DECAY - WARMUP)))
    return END + (PEAK - END) * cosine


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


def test_lvm_7b_recipe_is_the_original_run_and_its_schedule_follows_the_spec(tmp_path):
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=lvm_7b", f"paths.output_dir={tmp_path}"])
    assert cfg.model.hidden_size == 4096 and cfg.model.num_layers == 32
    assert (cfg.data.seq_len, cfg.data.batch_size, cfg.trainer.accumulate_grad_batches) == (4096, 32, 4)
    assert (cfg.trainer.max_steps, cfg.trainer.gradient_clip_val, cfg.trainer.precision) == (400000, 1.0, "bf16-mixed")
    assert list(cfg.optimizer.betas) == [0.9, 0.95] and cfg.optimizer.weight_decay == 0.1
    assert cfg.optimizer.exclude_norms_and_embeddings is False
    assert cfg.callbacks.model_checkpoint.every_n_train_steps == 1000 and cfg.callbacks.model_checkpoint.save_top_k == 1
    assert cfg.callbacks.milestone_checkpoint.every_n_train_steps == 2000
    assert cfg.callbacks.milestone_checkpoint.save_top_k == -1

    # The composed optimizer and schedule, run on a stand-in parameter, give the spec's lr curve.
    peak, end, warmup, decay = 1.5e-4, 3e-5, 8000, 288000
    optimizer = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=cfg.optimizer.lr)
    scheduler = instantiate(cfg.scheduler)(optimizer)

    def spec(step: int) -> float:
        if step < warmup:
            return peak * step / warmup
        if step >= decay:
            return end
        return end + (peak - end) * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (decay - warmup)))

    for step in (0, 1, 4000, 7999, 8000, 100000, 148000, 287999, 288000, 399999):
        assert scheduler.lr_lambdas[0](step) * cfg.optimizer.lr == pytest.approx(spec(step), rel=1e-9, abs=1e-15), step
