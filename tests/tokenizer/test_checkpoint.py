"""The open-muse folder layout: round trips, a checkpoint built independently of our module from
the original's naming rules, strict key/shape checks, safe loading, atomic writes."""

import json
import re
from pathlib import Path

import pytest
import torch

import lvm.tokenizer.checkpoint as checkpoint
from lvm.core.errors import RefusedCheckpointError
from lvm.tokenizer import load_vqgan, save_vqgan
from lvm.tokenizer.checkpoint import find_weights_file, read_config
from tests.tokenizer.open_muse import OPEN_MUSE_CONFIG, OPEN_MUSE_FIELDS, write_open_muse_folder


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


def test_fp16_save_halves_the_file_and_loads_as_the_rounded_fp32_model(tmp_path, model, images):
    from safetensors.torch import load_file

    save_vqgan(model, tmp_path / "fp32")
    save_vqgan(model, tmp_path / "fp16", dtype=torch.float16)
    stored = load_file(str(tmp_path / "fp16" / "model.safetensors"))
    assert {t.dtype for t in stored.values()} == {torch.float16}
    size = {name: (tmp_path / name / "model.safetensors").stat().st_size for name in ("fp32", "fp16")}
    assert size["fp16"] < 0.55 * size["fp32"]
    loaded = load_vqgan(tmp_path / "fp16")
    for name, tensor in loaded.state_dict().items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, model.state_dict()[name].half().float()), name


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


# --- an open-muse checkpoint built without our module (tests/tokenizer/open_muse.py) ----------------


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


@pytest.mark.parametrize(
    "problem, expected",
    [
        (
            lambda s: s.pop("decoder.up.1.upsample.conv.weight"),
            r"missing keys \['decoder\.up\.1\.upsample\.conv\.weight'\]",
        ),
        (
            lambda s: s.__setitem__("encoder.extra.weight", torch.zeros(2)),
            r"unexpected keys \['encoder\.extra\.weight'\]",
        ),
        (
            lambda s: s.__setitem__("quantize.embedding.weight", torch.zeros(41, 12)),
            r"quantize\.embedding\.weight: checkpoint \(41, 12\) vs model \(40, 12\)",
        ),
    ],
    ids=["missing", "unexpected", "shape"],
)
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
    with pytest.raises(RefusedCheckpointError, match="pytorch_model.bin: refused to load: it contains Python objects"):
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
