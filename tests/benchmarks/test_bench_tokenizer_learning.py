"""The tokenizer-learning benchmark trains both networks by the demo's own recipe, not fit_tokenizer's defaults:
its first version left out conf/demo.yaml's k-means init, MSE-only loss and cosine schedule, and so measured the
plain reference 5 dB below what that recipe gives it (README, "The demo tokenizer")."""

from __future__ import annotations

import inspect

import torch
from omegaconf import OmegaConf
from torch import nn

from benchmarks.bench_tokenizer_learning import ROOT, NoGroupNormLitModule, settings
from lvm.tokenizer.training.fit import fit_tokenizer
from lvm.tokenizer.training.options import VQGANTrainingOptions
from lvm.tokenizer.vqgan import VQGANConfig


def test_the_recipe_is_conf_demo_yaml_sized_to_the_run():
    _, _, recipe = settings(["--steps", "700", "--precision", "bf16-mixed"])
    demo = OmegaConf.load(ROOT / "conf" / "demo.yaml").tokenizer_training
    assert recipe["codebook_init"] == demo.codebook_init == "kmeans"
    assert recipe["l1_weight"] == demo.l1_weight == 0.0
    assert recipe["learning_rate"] == demo.learning_rate
    assert (recipe["max_steps"], recipe["lr_decay_steps"], recipe["precision"]) == (700, 700, "bf16-mixed")
    # Every key is something fit_tokenizer or the module accepts: a renamed demo field fails here, not silently.
    accepted = set(inspect.signature(fit_tokenizer).parameters) | set(VQGANTrainingOptions.field_names())
    assert set(recipe) <= accepted, sorted(set(recipe) - accepted)


def test_set_and_tokenizer_override_typed_fields():
    _, config, recipe = settings(
        ["--set", "codebook_weight=0.25", "--tokenizer", "hidden_channels=64", "channel_mult=[1,1,2,2]"]
    )
    assert recipe["codebook_weight"] == 0.25
    assert (config.hidden_channels, config.channel_mult) == (64, (1, 1, 2, 2))


def test_short_runs_clip_warm_up_and_k_means_batches():
    _, _, recipe = settings(["--steps", "3"])
    assert (recipe["quantize_start"], recipe["kmeans_batches"], recipe["lr_warmup_steps"]) == (2, 2, 3)


def test_the_ablation_has_no_group_norm_left_and_still_runs():
    config = VQGANConfig(resolution=32, hidden_channels=32, channel_mult=(1, 1, 2), num_res_blocks=1,
                         attn_resolutions=(), z_channels=16, num_embeddings=16, quantized_embed_dim=4)  # fmt: skip
    module = NoGroupNormLitModule(config)
    norms = [m for m in module.modules() if isinstance(m, nn.GroupNorm)]
    assert norms == [] and any(isinstance(m, nn.Identity) for m in module.vqgan.modules())
    images = torch.rand(2, 3, 32, 32)
    assert module(images).shape == images.shape
