"""Image metrics: PSNR and SSIM against scikit-image's, the results.jsonl reader, best-of-n, and FID
(torch-fidelity's InceptionV3 with random weights from a local file: ~0 for identical sets, > 0 for
shifted ones; nothing downloaded)."""

import csv
import importlib
import json

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from lvm.core.errors import RefusedCheckpointError
from lvm.eval.metrics import NO_FID_NOTE, check_inception_weights, evaluate_generations, psnr_ssim, read_pair, to_float


def skimage_psnr_ssim(generated: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """scikit-image's PSNR and SSIM with the Gaussian-window settings of Wang et al. (2004)."""
    g, t = generated.astype(np.float64) / 255, target.astype(np.float64) / 255
    return (
        peak_signal_noise_ratio(t, g, data_range=1.0),
        structural_similarity(
            t, g, data_range=1.0, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        ),
    )


def noisy(image: np.ndarray, scale: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(image.astype(np.float64) + rng.normal(0, scale, image.shape), 0, 255).astype(np.uint8)


def photo(name: str, size: int = 64) -> np.ndarray:
    return np.asarray(Image.fromarray(getattr(skimage.data, name)()).convert("RGB").resize((size, size)))


def test_psnr_and_ssim_match_scikit_image():
    targets = np.stack([photo("astronaut"), photo("coffee"), photo("chelsea")])
    generated = np.stack([noisy(t, s, i) for i, (t, s) in enumerate(zip(targets, (4.0, 20.0, 50.0)))])
    psnr, ssim = psnr_ssim(to_float(generated), to_float(targets))
    for i in range(3):
        ref_psnr, ref_ssim = skimage_psnr_ssim(generated[i], targets[i])
        assert float(psnr[i]) == pytest.approx(ref_psnr, abs=1e-3)
        assert float(ssim[i]) == pytest.approx(ref_ssim, abs=1e-4)
    assert psnr[0] > psnr[1] > psnr[2] and ssim[0] > ssim[1] > ssim[2]
    with pytest.raises(ValueError, match="differ"):
        psnr_ssim(to_float(generated[:2]), to_float(targets))


def write(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def generations(tmp_path):
    """A batch-generation output folder: 3 prompts with 2 candidates each (one with an absolute
    target, one with a relative one, one without a target); targets 80×96, candidates 64×64."""
    out = tmp_path / "gen"
    lines = []
    for i, name in enumerate(["astronaut", "coffee", "chelsea"]):
        target = write(
            tmp_path / "targets" / f"{name}.png", np.asarray(Image.fromarray(photo(name, 96)).resize((96, 80)))
        )
        candidates = [
            write(out / f"{i:03d}" / f"candidate_{c}.png", noisy(photo(name), 10.0 + 30 * c, 10 * i + c))
            for c in range(2)
        ]
        lines.append(
            {
                "id": f"p{i}",
                "candidates": [str(c.relative_to(out)) for c in candidates],
                "target": str(target) if i == 0 else (f"../targets/{name}.png" if i == 1 else None),
            }
        )
    (out / "results.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return out


def test_results_file_gives_per_pair_metrics_best_of_n_and_says_fid_was_not_computed(generations, tmp_path):
    summary = evaluate_generations(generations / "results.jsonl", tmp_path / "out", size=48, progress=False)
    assert (summary["n_prompts"], summary["n_without_target"], summary["n_pairs"]) == (3, 1, 4)
    assert summary["fid"] is None and summary["fid_note"] == NO_FID_NOTE
    rows = list(csv.DictReader(open(tmp_path / "out" / "image_metrics.csv")))
    assert [r["id"] for r in rows] == ["p0", "p0", "p1", "p1"]
    best = {}
    for row in rows:
        generated, target = read_pair(row["candidate"], row["target"], size=48)
        assert generated.shape == target.shape == (48, 48, 3)
        ref_psnr, ref_ssim = skimage_psnr_ssim(generated, target)
        assert float(row["psnr"]) == pytest.approx(ref_psnr, abs=1e-3)
        assert float(row["ssim"]) == pytest.approx(ref_ssim, abs=1e-4)
        best[row["id"]] = max(best.get(row["id"], -np.inf), ref_psnr)
    assert summary["psnr"] == pytest.approx(np.mean([float(r["psnr"]) for r in rows]), abs=1e-6)
    assert summary["best_of_n_psnr"] == pytest.approx(np.mean(list(best.values())), abs=1e-3)
    assert json.loads((tmp_path / "out" / "image_metrics.json").read_text())["n_pairs"] == 4


def test_size_none_compares_at_the_targets_own_size(generations, tmp_path):
    evaluate_generations(generations / "results.jsonl", tmp_path / "out", size=None, progress=False)
    row = next(csv.DictReader(open(tmp_path / "out" / "image_metrics.csv")))
    generated, target = read_pair(row["candidate"], row["target"], size=None)
    assert generated.shape == target.shape == (80, 96, 3)
    assert float(row["psnr"]) == pytest.approx(skimage_psnr_ssim(generated, target)[0], abs=1e-3)


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"id": "x", "candidates": ["a.png"]}', r"results.jsonl:2: no field 'target'"),
        ('{"id": "x", "candidates": [], "target": null}', r"results.jsonl:2: field 'candidates' must be a non-empty"),
        (
            '{"id": "x", "candidates": ["a.png"], "target": 3}',
            r"results.jsonl:2: field 'target' must be a path or null",
        ),
        ("{", r"results.jsonl:2: not valid JSON"),
        ('{"id": "x", "candidates": ["gone.png"], "target": "../targets/coffee.png"}', r"prompt 'x': .*gone.png"),
    ],
    ids=["no-target-field", "no-candidates", "target-type", "json", "missing-candidate"],
)
def test_bad_results_lines_are_errors_naming_them(generations, tmp_path, line, message):
    results = generations / "results.jsonl"
    results.write_text(results.read_text().splitlines()[0] + "\n" + line + "\n")
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        evaluate_generations(results, tmp_path / "out", progress=False)


def test_no_target_at_all_and_missing_inception_weights_are_errors(generations, tmp_path):
    results = generations / "results.jsonl"
    with pytest.raises(FileNotFoundError, match=r"inception_weights: .*nowhere.pth does not exist"):
        evaluate_generations(results, tmp_path / "out", inception_weights=tmp_path / "nowhere.pth", progress=False)
    pickled = tmp_path / "code.pth"
    torch.save({"weights": object()}, pickled)  # needs unpickling code: refused before torch-fidelity reads it
    with pytest.raises(RefusedCheckpointError, match=r"code.pth: refused to load: it contains Python objects"):
        check_inception_weights(pickled)
    results.write_text(results.read_text().splitlines()[2] + "\n")
    with pytest.raises(ValueError, match="none of its 1 prompts has a target"):
        evaluate_generations(results, tmp_path / "out", progress=False)


def _torch_fidelity_importable() -> bool:
    try:
        importlib.import_module("torch_fidelity")
        return True
    except ImportError:
        return False


@pytest.mark.skipif(_torch_fidelity_importable(), reason="torch-fidelity is installed here")
def test_fid_without_torch_fidelity_names_the_package_to_install(tmp_path, generations):
    weights = tmp_path / "inception.pth"
    torch.save({"w": torch.zeros(1)}, weights)
    with pytest.raises(ImportError, match=r"FID needs torch-fidelity==0.4.0"):
        evaluate_generations(generations / "results.jsonl", tmp_path / "out", inception_weights=weights, progress=False)


@pytest.fixture(scope="module")
def random_inception_weights(tmp_path_factory):
    """torch-fidelity's FeatureExtractorInceptionV3 with random weights, saved as a state dict (the
    format of its released pt_inception file); its download path is stubbed out while building it."""
    fe = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fe, "load_state_dict_from_url", lambda *args, **kwargs: {})
        patch.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *args, **kwargs: None)
        torch.manual_seed(0)
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    path = tmp_path_factory.mktemp("inception") / "pt_inception_random.pth"
    torch.save(net.state_dict(), path)
    return path


def write_results(folder, pairs):
    """results.jsonl with one candidate per prompt: pairs of (candidate pixels, target pixels)."""
    lines = []
    for i, (candidate, target) in enumerate(pairs):
        write(folder / f"c{i}.png", candidate)
        write(folder / f"t{i}.png", target)
        lines.append({"id": str(i), "candidates": [f"c{i}.png"], "target": f"t{i}.png"})
    (folder / "results.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    return folder / "results.jsonl"


def test_fid_is_zero_for_identical_sets_and_positive_for_shifted_ones(random_inception_weights, tmp_path):
    # The 64-channel layer: random weights shrink activations layer by layer, so the 2048 features of a
    # random network are ~1e-7 (FID ~1e-12); the path through torchmetrics is the same for every layer.
    feature = 64
    images = [photo(name) for name in ("astronaut", "coffee", "chelsea")]
    same = evaluate_generations(
        write_results(tmp_path / "same", [(x, x) for x in images]),
        tmp_path / "o1",
        inception_weights=random_inception_weights,
        fid_feature=feature,
        progress=False,
    )
    shifted = [np.clip(x.astype(int) + 60, 0, 255).astype(np.uint8)[:, ::-1] for x in images]
    other = evaluate_generations(
        write_results(tmp_path / "shift", list(zip(shifted, images))),
        tmp_path / "o2",
        inception_weights=random_inception_weights,
        fid_feature=feature,
        progress=False,
    )
    assert other["fid"] > 0
    assert abs(same["fid"]) < 1e-3 * other["fid"]
    assert same["fid_note"] == "3 candidates vs 3 targets" and same["fid_feature"] == feature
