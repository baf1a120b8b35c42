"""conf/experiment/lvm_*.yaml reproduce the original's training run (the original's EasyLM/optimizers.py), checked
against the original's
numbers written out here, not read from our code."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from lvm.model import LLaMA, ModelConfig
from tests.spec import spec_lr as schedule_of_spec

CONF = Path(__file__).resolve().parents[1] / "conf"
SIZES = ["100m", "300m", "600m", "1b", "3b", "7b", "13b", "20b", "30b"]
# Spec §4, the released 7B run.
PEAK, END, WARMUP, DECAY, TOTAL = 1.5e-4, 3e-5, 8_000, 288_000, 400_000


def spec_lr(t: int) -> float:
    return schedule_of_spec(t, PEAK, END, WARMUP, DECAY)


def compose_recipe(size: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=[f"experiment=lvm_{size}", "paths.output_dir=/tmp/unused"])


@pytest.mark.parametrize("size", SIZES)
def test_every_size_runs_the_7b_recipe_on_its_model(size):
    cfg = compose_recipe(size)
    assert cfg.model.name == f"vqlm_{size}" and cfg.task_name == f"lvm_{size}"
    assert (cfg.optimizer.lr, list(cfg.optimizer.betas), cfg.optimizer.eps, cfg.optimizer.weight_decay) == (
        PEAK,
        [0.9, 0.95],
        1e-8,
        0.1,
    )
    assert cfg.optimizer.exclude_norms_and_embeddings is False  # decay on every parameter
    assert (cfg.scheduler.warmup_steps, cfg.scheduler.decay_steps, cfg.scheduler.end_lr) == (WARMUP, DECAY, END)
    assert (cfg.trainer.max_steps, cfg.trainer.accumulate_grad_batches, cfg.trainer.gradient_clip_val) == (
        TOTAL,
        4,
        1.0,
    )
    assert (cfg.data.batch_size, cfg.data.seq_len, cfg.data.tokens_per_image) == (32, 4096, 256)
    assert cfg.trainer.precision == "bf16-mixed"  # bf16 compute, fp32 parameters and optimizer state
    assert cfg.callbacks.model_checkpoint.every_n_train_steps == 1000 and cfg.callbacks.model_checkpoint.save_top_k == 1
    assert cfg.callbacks.milestone_checkpoint.every_n_train_steps == 2000
    assert cfg.callbacks.milestone_checkpoint.save_top_k == -1  # milestones kept forever
    if size in ("100m", "300m"):
        assert cfg.trainer.strategy == "ddp"
    else:
        assert cfg.trainer.strategy._target_ == "lvm.training.strategies.FSDP2Strategy"


def test_7b_learning_rate_follows_the_spec_formula_at_every_phase():
    cfg = compose_recipe("7b")
    model = LLaMA(ModelConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, vocab_size=64))
    optimizer = instantiate(cfg.optimizer)(model)
    scheduler = instantiate(cfg.scheduler)(optimizer)
    (group,) = optimizer.param_groups
    assert len(group["params"]) == len(list(model.parameters())) and group["weight_decay"] == 0.1
    steps = [0, 1, 100, 4_000, 7_999, 8_000, 8_001, 100_000, 148_000, 200_000, 287_999, 288_000, 350_000, 399_999]
    for step in steps:
        assert scheduler.lr_lambdas[0](step) * PEAK == pytest.approx(spec_lr(step), rel=1e-9, abs=1e-15), step
    # and the scheduler as Lightning steps it, for the first updates
    seen = []
    for _ in range(5):
        seen.append(group["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([spec_lr(t) for t in range(5)], abs=1e-15)
    assert spec_lr((WARMUP + DECAY) // 2) == pytest.approx((PEAK + END) / 2)  # the cosine's midpoint


def test_recipes_instantiate_their_fsdp_strategy():
    strategy = instantiate(compose_recipe("13b").trainer.strategy)
    assert type(strategy).__name__ == "FSDP2Strategy"
    assert (
        compose_recipe("13b").activation_checkpointing is True
        and compose_recipe("1b").activation_checkpointing is False
    )
