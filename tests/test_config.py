"""Every config group composes, and instantiates where this machine can run it."""

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException, MissingConfigException
from hydra.utils import instantiate

from lvm.model import LLaMA, ModelConfig
from lvm.model.config import SIZES
from lvm.train import check_sequence_fits, train
from lvm.training.optim import MuonWithAdamW

CONF = Path(__file__).resolve().parents[1] / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.fixture()
def compose_train(tmp_path):
    def _compose(*overrides: str):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(
                "train", overrides=[f"paths.output_dir={tmp_path}", f"paths.data_dir={tmp_path}", *overrides]
            )

    return _compose


def test_every_group_has_options():
    for group in (
        "model",
        "data",
        "trainer",
        "optimizer",
        "scheduler",
        "callbacks",
        "logger",
        "paths",
        "experiment",
        "tokenizer",
    ):
        assert options(group), f"conf/{group}/ is empty"


@pytest.mark.parametrize("name", options("model"))
def test_model_sizes_compose_to_the_size_table(compose_train, name):
    config = instantiate(compose_train(f"model={name}").model)
    assert isinstance(config, ModelConfig)
    assert config == SIZES[name]
    with torch.device("meta"):
        assert LLaMA(config).embed_tokens.weight.shape == (8292, config.hidden_size)


def test_unknown_model_size_is_an_error_listing_the_sizes(compose_train):
    with pytest.raises(MissingConfigException) as error:
        compose_train("model=vqlm_5b")
    assert "vqlm_5b" in str(error.value) and "vqlm_7b" in str(error.value)


@pytest.mark.parametrize("name", ["cpu", "ddp"])
def test_cpu_trainers_instantiate(compose_train, name):
    trainer = instantiate(compose_train(f"trainer={name}").trainer)
    assert isinstance(trainer, pl.Trainer)
    assert trainer.max_steps == 1000 and trainer.gradient_clip_val == 1.0
    if name == "ddp":
        assert type(trainer.strategy).__name__ == "DDPStrategy" and trainer.num_devices == 2


def test_fsdp_trainer_is_fsdp2_and_refuses_an_unknown_dtype(compose_train):
    cfg = compose_train("trainer=fsdp")
    strategy = instantiate(cfg.trainer.strategy)
    assert type(strategy).__name__ == "FSDP2Strategy" and strategy.reshard_after_forward
    assert strategy.mixed_precision.param_dtype is None  # compute precision from trainer.precision
    assert cfg.trainer.precision == "bf16-mixed"
    with pytest.raises(InstantiationException, match="param_dtype must be one of .* not 'bf16'"):
        instantiate(cfg.trainer.strategy, param_dtype="bf16")
    # the full trainer needs GPUs: on this machine that is Lightning's own clear refusal
    with pytest.raises(InstantiationException, match="No supported gpu backend"):
        instantiate(cfg.trainer)


def test_gpu_trainer_composes_and_names_what_is_missing(compose_train):
    cfg = compose_train("trainer=gpu")
    assert (cfg.trainer.accelerator, cfg.trainer.precision) == ("gpu", "bf16-mixed")
    if not torch.cuda.is_available():
        with pytest.raises(InstantiationException, match="No supported gpu backend"):
            instantiate(cfg.trainer)


def test_xla_trainer_composes_and_names_what_is_missing(compose_train):
    cfg = compose_train("trainer=xla")
    assert (cfg.trainer.accelerator, cfg.trainer.strategy) == ("tpu", "xla")
    with pytest.raises(InstantiationException, match="torch_xla"):
        instantiate(cfg.trainer)


@pytest.mark.parametrize("name", options("data"))
def test_data_mixtures_instantiate(compose_train, name):
    cfg = compose_train(f"data={name}")
    datamodule = instantiate(cfg.data)
    assert isinstance(datamodule, pl.LightningDataModule)
    check_sequence_fits(cfg.data.seq_len, cfg.data.tokens_per_image, instantiate(cfg.model))


def test_optimizer_scheduler_callbacks_loggers_instantiate(compose_train):
    cfg = compose_train()
    model = torch.nn.Linear(2, 2)
    optimizer = instantiate(cfg.optimizer)(model)
    scheduler = instantiate(cfg.scheduler)(optimizer)
    assert optimizer.param_groups[0]["lr"] == 0.0  # warmup starts from zero
    assert scheduler.lr_lambdas[0](cfg.scheduler.warmup_steps) == 1.0
    callbacks = [instantiate(c) for c in cfg.callbacks.values()]
    assert {type(c).__name__ for c in callbacks} == {"ModelCheckpoint", "LearningRateMonitor", "LVMThroughputMonitor"}
    for name in options("logger"):
        (logger,) = [instantiate(c) for c in compose_train(f"logger={name}").logger.values()]
        assert isinstance(logger, pl.loggers.Logger)


@pytest.mark.parametrize("name", options("callbacks"))
def test_every_callbacks_choice_keeps_the_default_callbacks(compose_train, name):
    assert set(compose_train().callbacks) <= set(compose_train(f"callbacks={name}").callbacks)


def test_gallery_callbacks_need_a_tokenizer_and_prompt_sources(compose_train, tmp_path):
    from omegaconf.errors import MissingMandatoryValue

    from lvm.training.prompt_gallery import PromptGallery

    with pytest.raises(MissingMandatoryValue, match="tokenizer_path"):
        instantiate(compose_train("callbacks=gallery").callbacks.prompt_gallery)
    # the syntax conf/callbacks/gallery.yaml documents; nothing is read until the fit's setup
    gallery = ["experiment=demo", "callbacks=gallery", f"callbacks.prompt_gallery.tokenizer_path={tmp_path}"]
    cfg = compose_train(*gallery, "callbacks.prompt_gallery.prompt_sources={video: ${paths.data_dir}/v/manifest.json}")
    callback = instantiate(cfg.callbacks.prompt_gallery)
    assert isinstance(callback, PromptGallery) and callback.vocab_size == cfg.model.vocab_size
    assert callback.prompt_sources == {"video": f"{tmp_path}/v/manifest.json"}
    entries = compose_train(*gallery, "callbacks.prompt_gallery.prompt_sources=${data.val_sources}")
    assert sorted(instantiate(entries.callbacks.prompt_gallery).prompt_sources) == ["paired", "sequence", "video"]


def test_demo_experiment_composes(compose_train):
    cfg = compose_train("experiment=demo")
    assert cfg.model.name == "vqlm_demo" and cfg.task_name == "demo"
    # vqlm_debug's blocks, with the demo tokenizer's 256 codes + the 100 reserved ids as vocabulary
    debug = instantiate(compose_train("model=vqlm_debug").model)
    demo = instantiate(cfg.model)
    assert (demo.hidden_size, demo.num_layers, demo.vocab_size) == (debug.hidden_size, debug.num_layers, 356)
    assert cfg.data.seq_len % cfg.data.tokens_per_image == 0
    assert cfg.scheduler.decay_steps == cfg.trainer.max_steps
    # Muon on the blocks' matrices, AdamW on the rest; optimizer=adamw gives the original's recipe back
    assert isinstance(instantiate(cfg.optimizer)(LLaMA(demo)), MuonWithAdamW)
    adamw = compose_train("experiment=demo", "optimizer=adamw").optimizer
    assert adamw._target_.endswith("build_adamw") and adamw.lr == cfg.optimizer.lr


def test_demo_root_config_composes():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("demo", overrides=["paths.output_dir=/tmp/x"])
    tokenizer = instantiate(cfg.tokenizer)  # the shipped demo tokenizer's architecture
    assert tokenizer.tokens_per_image * cfg.images_per_sentence == 512


def test_sequence_of_partial_images_is_refused_before_training(compose_train):
    cfg = compose_train("experiment=demo", "data.seq_len=480")
    with pytest.raises(ValueError, match="data.seq_len 480 is not a whole number of images of 64 tokens"):
        train(cfg)


def test_lvm_7b_checkpoints_keep_one_rolling_state_and_every_milestone(compose_train, tmp_path):
    from pytorch_lightning.demos.boring_classes import BoringModel

    cfg = compose_train(
        "experiment=lvm_7b",
        "callbacks.model_checkpoint.every_n_train_steps=2",
        "callbacks.milestone_checkpoint.every_n_train_steps=4",
    )
    callbacks = [instantiate(cfg.callbacks[name]) for name in ("model_checkpoint", "milestone_checkpoint")]
    trainer = pl.Trainer(
        max_steps=9,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(BoringModel())
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.ckpt", "step0000008.ckpt"]
    assert sorted(p.name for p in (tmp_path / "milestones").iterdir()) == [
        "milestone0000004.ckpt",
        "milestone0000008.ckpt",
    ]
