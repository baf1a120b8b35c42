"""The open-muse folder layout: round trips, a checkpoint built independently of our module from
the spec's naming rules, strict key/shape checks, safe loading, atomic writes."""

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import lvm.tokenizer.checkpoint as checkpoint
from lvm.tokenizer import load_vqgan, save_vqgan
from lvm.tokenizer.checkpoint import find_weights_file, read_config

OPEN_MUSE_FIELDS = ["resolution", "num_channels", "hidden_channels", "channel_mult", "num_res_blocks",
                    "attn_resolutions", "no_attn_mid_block", "z_channels", "num_embeddings",
                    "quantized_embed_dim", "dropout", "resample_with_conv", "commitment_cost"]


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "pytorch_model.bin"])
def test_save_load_round_trip_gives_identical_codes_and_pixels(tmp_path, model, images, safe):
    folder = save_vqgan(model, tmp_path / "vqgan", safe_serialization=safe)
    expected_file = "model.safetensors" if safe else "pytorch_model.bin"
    assert sorted(p.name for p in folder.iterdir()) == sorted(["config.json", expected_file])
    loaded = load_vqgan(folder)
    assert not loaded.training
    assert loaded.config == model.config
    with torch.no_grad():
        codes = model.get_code(images)
        assert torch.equal(loaded.get_code(images), codes)
        assert torch.equal(loaded.decode_code(codes), model.decode_code(codes))
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_config_json_has_open_muse_field_names(tmp_path, model):
    save_vqgan(model, tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw["_class_name"] == "VQGANModel" and "_version" in raw
    assert sorted(k for k in raw if not k.startswith("_")) == sorted(OPEN_MUSE_FIELDS)
    assert raw["channel_mult"] == [1, 1, 2] and raw["num_embeddings"] == 64 and raw["attn_resolutions"] == [16]


def test_save_is_atomic_and_leaves_no_temp_file(tmp_path, model, monkeypatch):
    folder = save_vqgan(model, tmp_path)
    before = (folder / "model.safetensors").read_bytes()
    assert not list(folder.glob("*.tmp"))

    def crash_midway(state, path, metadata=None):
        Path(path).write_bytes(b"half a file")  # the temp file gets written, then the writer dies
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_safetensors", crash_midway)
    with torch.no_grad():
        model.quantize.embedding.weight.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        save_vqgan(model, folder)
    # The old weights are untouched (the write went to a temp name) and the temp file is gone.
    assert (folder / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]


def test_switching_format_removes_the_stale_weights_file(tmp_path, model):
    save_vqgan(model, tmp_path, safe_serialization=True)
    save_vqgan(model, tmp_path, safe_serialization=False)
    assert find_weights_file(tmp_path).name == "pytorch_model.bin"
    assert not (tmp_path / "model.safetensors").exists()


# --- an open-muse checkpoint built without our module ----------------------------------------------

def open_muse_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Every parameter name and shape of an open-muse VQGANModel, from spec §6's rules alone."""
    shapes: dict[str, tuple[int, ...]] = {}
    hidden, mult = cfg["hidden_channels"], cfg["channel_mult"]

    def conv(name, c_in, c_out, k):
        shapes[f"{name}.weight"] = (c_out, c_in, k, k)
        shapes[f"{name}.bias"] = (c_out,)

    def norm(name, c):
        shapes[f"{name}.weight"] = (c,)
        shapes[f"{name}.bias"] = (c,)

    def resnet(name, c_in, c_out):
        norm(f"{name}.norm1", c_in)
        conv(f"{name}.conv1", c_in, c_out, 3)
        norm(f"{name}.norm2", c_out)
        conv(f"{name}.conv2", c_out, c_out, 3)
        if c_in != c_out:
            conv(f"{name}.nin_shortcut", c_in, c_out, 1)

    def attn(name, c):
        norm(f"{name}.norm", c)
        for part in ("q", "k", "v", "proj_out"):
            conv(f"{name}.{part}", c, c, 1)

    def mid(name, c):
        resnet(f"{name}.block_1", c, c)
        if not cfg["no_attn_mid_block"]:
            attn(f"{name}.attn_1", c)
        resnet(f"{name}.block_2", c, c)

    levels = len(mult)
    conv("encoder.conv_in", cfg["num_channels"], hidden, 3)
    for i in range(levels):
        res = cfg["resolution"] // 2**i
        c_in, c_out = hidden * ([1] + mult)[i], hidden * mult[i]
        for n in range(cfg["num_res_blocks"]):
            resnet(f"encoder.down.{i}.block.{n}", c_in if n == 0 else c_out, c_out)
            if res in cfg["attn_resolutions"]:
                attn(f"encoder.down.{i}.attn.{n}", c_out)
        if i != levels - 1:
            conv(f"encoder.down.{i}.downsample.conv", c_out, c_out, 3)
    top = hidden * mult[-1]
    mid("encoder.mid", top)
    norm("encoder.norm_out", top)
    conv("encoder.conv_out", top, cfg["z_channels"], 3)
    conv("quant_conv", cfg["z_channels"], cfg["quantized_embed_dim"], 1)
    shapes["quantize.embedding.weight"] = (cfg["num_embeddings"], cfg["quantized_embed_dim"])
    conv("post_quant_conv", cfg["quantized_embed_dim"], cfg["z_channels"], 1)
    conv("decoder.conv_in", cfg["z_channels"], top, 3)
    mid("decoder.mid", top)
    for i in range(levels):
        res = cfg["resolution"] // 2**i
        c_in, c_out = hidden * (mult[-1] if i == levels - 1 else mult[i + 1]), hidden * mult[i]
        for n in range(cfg["num_res_blocks"] + 1):
            resnet(f"decoder.up.{i}.block.{n}", c_in if n == 0 else c_out, c_out)
            if res in cfg["attn_resolutions"]:
                attn(f"decoder.up.{i}.attn.{n}", c_out)
        if i != 0:
            conv(f"decoder.up.{i}.upsample.conv", c_out, c_out, 3)
    norm("decoder.norm_out", hidden * mult[0])
    conv("decoder.conv_out", hidden * mult[0], cfg["num_channels"], 3)
    return shapes


OPEN_MUSE_CONFIG = {
    "_class_name": "VQGANModel", "_version": "0.0.1", "resolution": 32, "num_channels": 3, "hidden_channels": 32,
    "channel_mult": [1, 2, 2], "num_res_blocks": 2, "attn_resolutions": [8], "no_attn_mid_block": False,
    "z_channels": 16, "num_embeddings": 40, "quantized_embed_dim": 12, "dropout": 0.0,
    "resample_with_conv": True, "commitment_cost": 0.25,
}


def write_open_muse_folder(folder: Path, cfg: dict = OPEN_MUSE_CONFIG, edit=None) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    state = {name: torch.randn(shape, generator=generator) for name, shape in open_muse_shapes(cfg).items()}
    if edit is not None:
        edit(state)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    save_file(state, str(folder / "model.safetensors"))
    return state


def test_independently_built_open_muse_checkpoint_loads_exactly(tmp_path):
    state = write_open_muse_folder(tmp_path)
    model = load_vqgan(tmp_path)
    assert model.config.num_embeddings == 40 and model.config.tokens_per_image == 64
    loaded = model.state_dict()
    assert sorted(loaded) == sorted(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key
    images = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert model.get_code(images).shape == (1, 64)


def test_pytorch_model_bin_from_open_muse_loads(tmp_path):
    state = write_open_muse_folder(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(state, tmp_path / "pytorch_model.bin")
    loaded = load_vqgan(tmp_path).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_old_config_without_no_attn_mid_block_means_mid_attention(tmp_path):
    cfg = {k: v for k, v in OPEN_MUSE_CONFIG.items() if k != "no_attn_mid_block"}
    write_open_muse_folder(tmp_path, {**cfg, "no_attn_mid_block": False})
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert load_vqgan(tmp_path).config.no_attn_mid_block is False


@pytest.mark.parametrize("problem, expected", [
    (lambda s: s.pop("decoder.up.1.upsample.conv.weight"), r"missing keys \['decoder\.up\.1\.upsample\.conv\.weight'\]"),
    (lambda s: s.__setitem__("encoder.extra.weight", torch.zeros(2)), r"unexpected keys \['encoder\.extra\.weight'\]"),
    (lambda s: s.__setitem__("quantize.embedding.weight", torch.zeros(41, 12)),
     r"quantize\.embedding\.weight: checkpoint \(41, 12\) vs model \(40, 12\)"),
], ids=["missing", "unexpected", "shape"])
def test_mismatched_weights_are_an_error_naming_key_and_file(tmp_path, problem, expected):
    write_open_muse_folder(tmp_path, edit=problem)
    with pytest.raises(ValueError, match=expected) as info:
        load_vqgan(tmp_path)
    assert str(tmp_path / "model.safetensors") in str(info.value)


def test_config_errors_name_the_file_and_field(tmp_path):
    cfg = {k: v for k, v in OPEN_MUSE_CONFIG.items() if k != "num_embeddings"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"config\.json: missing required field 'num_embeddings'"):
        read_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**OPEN_MUSE_CONFIG, "_class_name": "VQModel"}))
    with pytest.raises(ValueError, match="_class_name"):
        read_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**OPEN_MUSE_CONFIG, "new_field": 1}))
    with pytest.warns(UserWarning, match="new_field"):
        read_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(OPEN_MUSE_CONFIG))
    with pytest.raises(FileNotFoundError, match="no VQGAN weights file"):
        load_vqgan(tmp_path)


class _Payload:
    """Unpickling this would run code: weights_only=True must refuse it."""

    ran = False

    def __reduce__(self):
        return (_Payload._trigger, ())

    @staticmethod
    def _trigger():
        _Payload.ran = True
        return "executed"


def test_pickled_code_in_pytorch_model_bin_is_refused(tmp_path, model):
    save_vqgan(model, tmp_path, safe_serialization=False)
    state = torch.load(tmp_path / "pytorch_model.bin", weights_only=True)
    torch.save({**state, "payload": _Payload()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pytorch_model.bin: cannot read VQGAN weights"):
        load_vqgan(tmp_path)
    assert not _Payload.ran


def test_torch_load_is_always_called_with_weights_only(tmp_path, model, monkeypatch):
    calls = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    save_vqgan(model, tmp_path, safe_serialization=False)
    load_vqgan(tmp_path)
    assert calls and all(call.get("weights_only") is True for call in calls)
    # And in the source: no torch.load call anywhere in the package without weights_only=True.
    package = Path(checkpoint.__file__).parent
    for source in package.glob("*.py"):
        for call in re.findall(r"torch\.load\((.*?)\)\n", source.read_text(), flags=re.S):
            assert "weights_only=True" in call, f"{source}: torch.load({call})"
