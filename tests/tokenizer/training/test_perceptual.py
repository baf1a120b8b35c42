"""LPIPS-VGG16 from local files: both weight formats load, the distance behaves like a distance,
agrees with torchmetrics' LPIPS built on the same weights, and bad files are named in errors."""

import pytest
import torch

from lvm.tokenizer.training.perceptual import bundled_lpips_heads, load_lpips, vgg16_features


def test_vgg16_stack_has_torchvisions_layer_indices():
    keys = vgg16_features().state_dict().keys()
    convs = sorted({int(k.split(".")[0]) for k in keys})
    assert convs == [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]  # torchvision vgg16().features


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_loads_both_formats_frozen_and_in_eval_mode(tmp_path, make_lpips_files, suffix):
    vgg_path, heads_path = make_lpips_files(tmp_path, suffix)
    model = load_lpips(vgg_path, heads_path)
    (tmp_path / "as_torch").mkdir()
    vgg_pth, heads_pth = make_lpips_files(tmp_path / "as_torch", ".pth")  # same seed: the same values
    assert torch.equal(model.features[28].weight, torch.load(vgg_pth, weights_only=True)["features.28.weight"])
    assert torch.equal(model.lin4.model[1].weight, torch.load(heads_pth, weights_only=True)["lin4.model.1.weight"])
    assert not any(p.requires_grad for p in model.parameters())
    model.train()  # a parent's .train() must not switch on the heads' dropout
    assert not model.training and not model.lin0.model[0].training


def test_distance_is_zero_to_itself_grows_with_noise_and_passes_gradients(lpips_files):
    model = load_lpips(*lpips_files)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=generator)
    noise = torch.randn(2, 3, 32, 32, generator=generator)
    assert torch.equal(model(x, x), torch.zeros(2))
    small, large = model(x, (x + 0.05 * noise).clamp(0, 1)), model(x, (x + 0.3 * noise).clamp(0, 1))
    assert bool((small > 0).all()) and bool((large > small).all())
    y = x.clone().requires_grad_(True)
    model(x, (y + 0.1 * noise)).sum().backward()
    assert y.grad is not None and float(y.grad.abs().sum()) > 0


def test_matches_torchmetrics_lpips_on_the_same_weights(lpips_files, monkeypatch):
    tm_lpips = pytest.importorskip("torchmetrics.functional.image.lpips")
    vgg_path, heads_path = lpips_files
    ours = load_lpips(vgg_path, heads_path)
    # torchmetrics takes its VGG16 from torchvision (not importable next to the CPU torch wheel):
    # hand it our stack holding the same weights, so the rest of its LPIPS is an independent reference.
    monkeypatch.setattr(tm_lpips, "_get_tv_model_features", lambda net, pretrained=False: ours.features)
    reference = tm_lpips._LPIPS(pretrained=True, net="vgg", pnet_rand=True, model_path=str(heads_path))
    generator = torch.Generator().manual_seed(1)
    x, y = torch.rand(2, 2, 3, 32, 32, generator=generator)
    expected = reference(x, y, normalize=True).flatten()  # normalize: its inputs are in [0, 1] too
    assert torch.allclose(ours(x, y), expected, rtol=1e-5, atol=1e-7)


def test_real_lpips_heads_file_from_torchmetrics_loads(lpips_files):
    bundled = bundled_lpips_heads()
    if bundled is None:
        pytest.skip("torchmetrics ships no lpips_models/vgg.pth here")
    model = load_lpips(lpips_files[0])  # heads_path=None: the bundled lpips vgg.pth
    assert float(model.lin3.model[1].weight.min()) >= 0  # lpips' heads are non-negative


def test_wrong_or_missing_keys_are_errors_naming_file_and_key(tmp_path, lpips_files):
    vgg_path, heads_path = lpips_files
    state = torch.load(heads_path, weights_only=True)
    state["lin5.model.1.weight"] = state.pop("lin4.model.1.weight")
    bad = tmp_path / "bad_heads.pth"
    torch.save(state, bad)
    with pytest.raises(
        ValueError,
        match=r"bad_heads\.pth.*missing keys \['lin4\.model\.1\.weight'\].*"
        r"unexpected keys \['lin5\.model\.1\.weight'\]",
    ):
        load_lpips(vgg_path, bad)
    vgg = torch.load(vgg_path, weights_only=True)
    vgg["features.0.weight"] = vgg["features.0.weight"][:32]
    bad_vgg = tmp_path / "bad_vgg.pth"
    torch.save(vgg, bad_vgg)
    with pytest.raises(ValueError, match=r"bad_vgg\.pth.*features\.0\.weight: file \(32, 3, 3, 3\) vs expected"):
        load_lpips(bad_vgg, heads_path)
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_lpips(tmp_path / "nowhere.pth", heads_path)


def test_image_batches_must_match(lpips_files):
    with pytest.raises(ValueError, match="differ in shape"):
        load_lpips(*lpips_files)(torch.rand(1, 3, 32, 32), torch.rand(2, 3, 32, 32))
