"""Reference channels: the output GroupNorms of a pinned VQGAN keep absolute levels."""

import pytest
import torch

from lvm.tokenizer.training.reference_channels import pin_reference_channels, reference_channel_indices
from lvm.tokenizer.training.vqgan_module import VQGANLitModule
from lvm.tokenizer.vqgan import VQGANConfig, VQGANModel

# The demo tokenizer's widths (96, 32, 64, 128) at a small resolution.
CONFIG = VQGANConfig(
    resolution=32,
    hidden_channels=32,
    channel_mult=(3, 1, 2, 4),
    num_res_blocks=1,
    attn_resolutions=(),
    no_attn_mid_block=True,
    z_channels=16,
    num_embeddings=64,
    quantized_embed_dim=8,
)


def _norm_inputs(model: VQGANModel, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """What the encoder's and the decoder's norm_out receive on `images`."""
    seen = {}
    hooks = [
        norm.register_forward_hook(lambda _m, args, _out, name=name: seen.__setitem__(name, args[0]))
        for name, norm in (("encoder", model.encoder.norm_out), ("decoder", model.decoder.norm_out))
    ]
    with torch.no_grad():
        model(images)
    for hook in hooks:
        hook.remove()
    return seen


def test_reference_channels_are_constant_in_both_output_norm_inputs():
    torch.manual_seed(0)
    model = VQGANModel(CONFIG)
    pin_reference_channels(model, 1.5)
    seen = _norm_inputs(model, torch.rand(3, 3, 32, 32))
    for name, width in (("encoder", 128), ("decoder", 96)):
        plus, minus = reference_channel_indices(width)
        assert torch.equal(seen[name][:, plus], torch.full_like(seen[name][:, plus], 1.5)), name
        assert torch.equal(seen[name][:, minus], torch.full_like(seen[name][:, minus], -1.5)), name
        signal = torch.ones(width, dtype=torch.bool)
        signal[plus] = signal[minus] = False
        assert seen[name][:, signal].std() > 0.01, f"{name}: the signal channels must still vary"


def test_pinned_norm_keeps_a_flat_level_that_an_unpinned_one_removes():
    """The mechanism, through the decoder's real output norm: a flat stream at level a or b normalises
    to the same output (the level is lost); with the pinned channels beside it, it does not."""
    torch.manual_seed(0)
    model = VQGANModel(CONFIG)
    pin_reference_channels(model, 1.0)
    plus, minus = reference_channel_indices(96)
    signal = torch.ones(96, dtype=torch.bool)
    signal[plus] = signal[minus] = False

    def normalised(level: float, pinned: bool) -> torch.Tensor:
        stream = torch.full((1, 96, 8, 8), level)
        if pinned:
            stream[:, plus], stream[:, minus] = 1.0, -1.0
        with torch.no_grad():
            return model.decoder.norm_out(stream)[:, signal]

    assert torch.allclose(normalised(0.2, pinned=False), normalised(0.8, pinned=False), atol=1e-4)
    assert (normalised(0.2, pinned=True) - normalised(0.8, pinned=True)).abs().min() > 0.1


def test_too_narrow_a_stream_is_refused():
    narrow = VQGANModel(VQGANConfig(**{**CONFIG.to_dict(), "channel_mult": [2, 1, 2, 4]}))
    with pytest.raises(ValueError, match="a width of 64 gives 2"):
        pin_reference_channels(narrow)


def test_module_option_pins_at_construction():
    module = VQGANLitModule(CONFIG, reference_channels=1.0)
    plus, _ = reference_channel_indices(96)
    assert torch.equal(module.vqgan.decoder.up[0].block[-1].conv2.bias[plus], torch.ones(32))
    off = VQGANLitModule(CONFIG)
    assert not torch.equal(off.vqgan.decoder.up[0].block[-1].conv2.bias[plus], torch.ones(32))
    with pytest.raises(ValueError, match="reference_channels must be >= 0"):
        VQGANLitModule(CONFIG, reference_channels=-1.0)
