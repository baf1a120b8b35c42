"""The paired bootstrap interval of a PSNR gain: it brackets the gain scikit-image measures, it is paired (prompts
of very different difficulty do not widen it), and it reaches the demo's pixel report for every baseline. Teacher-forced
answers: aligned with greedy generation, causal, and reported."""

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio

from lvm.eval.prompt_quality import (
    PromptCodes,
    PromptSet,
    encode_prompts,
    per_image_mse,
    pixel_report,
    psnr_gain_interval,
    set_psnr,
    teacher_forced_codes,
)
from lvm.generation.prompting import continue_image_codes
from lvm.generation.sampler import SamplingConfig
from lvm.model import LLaMA, ModelConfig
from lvm.tokenizer.vqgan import VQGANModel
from tests.tokenizer.conftest import tiny_config


def noisy(truth: torch.Tensor, scales: torch.Tensor, seed: int) -> torch.Tensor:
    """truth + Gaussian noise of one scale per image, unclipped (so each image's MSE is its scale², exactly
    what the test sets)."""
    generator = torch.Generator().manual_seed(seed)
    return truth + scales.view(-1, 1, 1, 1) * torch.randn(truth.shape, generator=generator, dtype=torch.float64)


def sets(n: int = 32, size: int = 16):
    """(truth, baseline, generated): per-prompt noise spanning 100× in MSE; the generated images have the
    baseline's noise pattern at 1/√2 of its scale, so every prompt's MSE is halved: a gain of 10·log10(2) dB."""
    truth = torch.full((n, 3, size, size), 0.5, dtype=torch.float64)
    scales = torch.logspace(-2, -1, n, dtype=torch.float64)
    baseline = noisy(truth, scales, seed=0)
    generated = truth + (baseline - truth) / 2**0.5
    return truth, baseline, generated


def test_per_image_mse_matches_a_hand_count():
    truth, baseline, _ = sets(n=4)
    expected = ((baseline.clamp(0, 1) - truth) ** 2).mean(dim=(1, 2, 3)).numpy()
    np.testing.assert_allclose(per_image_mse(baseline, truth), expected)


def test_the_interval_brackets_scikit_images_gain_and_is_paired():
    truth, baseline, generated = sets()
    gain = peak_signal_noise_ratio(truth.numpy(), generated.clamp(0, 1).numpy(), data_range=1.0)
    gain -= peak_signal_noise_ratio(truth.numpy(), baseline.clamp(0, 1).numpy(), data_range=1.0)
    low, high = psnr_gain_interval(generated, baseline, truth)
    assert low <= gain <= high
    # Paired: each prompt keeps its own difficulty in every resample, so the 100× spread of the prompts' MSEs
    # leaves the interval tight around the gain; resampling the two sets apart would not.
    assert gain == pytest.approx(10 * np.log10(2), abs=0.05)
    assert high - low < 0.3
    # A noisier generated set on different prompts' luck: the interval widens and can straddle 0.
    jittered = noisy(truth, torch.logspace(-2, -1, 32, dtype=torch.float64).flip(0), seed=1)
    low_j, high_j = psnr_gain_interval(jittered, baseline, truth)
    assert high_j - low_j > 1.0 and low_j < 0 < high_j
    # The same inputs and seed give the same interval (the demo repeats exactly).
    assert psnr_gain_interval(generated, baseline, truth) == (low, high)


def test_one_prompt_is_refused():
    truth, baseline, generated = sets(n=1)
    with pytest.raises(ValueError, match="at least 2 prompts"):
        psnr_gain_interval(generated, baseline, truth)


def test_the_pixel_report_has_an_interval_for_every_baseline():
    torch.manual_seed(0)
    vqgan = VQGANModel(tiny_config()).eval()
    size = vqgan.config.resolution
    generator = torch.Generator().manual_seed(0)
    prompts = {
        task: PromptSet(task, torch.rand(6, 3, 3, size, size, generator=generator), torch.rand(6, 3, size, size))
        for task in ("next_frame", "edges")
    }
    generated = {task: torch.rand(6, 3, size, size, generator=generator) for task in prompts}
    teacher_forced = {"edges": torch.rand(6, 3, size, size, generator=generator)}
    report = pixel_report(generated, prompts, vqgan, teacher_forced=teacher_forced)
    assert report["teacher_forced_psnr"] == {"edges": set_psnr(teacher_forced["edges"], prompts["edges"].truth)}
    # Codes the caller encoded already are used, not encoded again: the same codes give the same report, others
    # (every truth code shifted) another tokenizer ceiling.
    codes = {task: encode_prompts(vqgan, prompt_set) for task, prompt_set in prompts.items()}
    assert pixel_report(generated, prompts, vqgan, teacher_forced=teacher_forced, codes=codes) == report
    shifted = {task: PromptCodes(c.context, (c.truth + 1) % vqgan.config.num_embeddings) for task, c in codes.items()}
    other = pixel_report(generated, prompts, vqgan, codes=shifted)["baseline_psnr"]["edges"]["tokenizer_ceiling"]
    assert other != report["baseline_psnr"]["edges"]["tokenizer_ceiling"]
    for task in prompts:
        assert report["psnr_gain_interval"][task].keys() == report["baseline_psnr"][task].keys()
        for name, (low, high) in report["psnr_gain_interval"][task].items():
            point = report["generated_psnr"][task] - report["baseline_psnr"][task][name]
            assert low <= point + 1e-6 and point - 1e-6 <= high, (task, name)


CODES, N = 16, 4  # a codebook of 16 codes (ids 16-19 special), 4 tokens per image, 4 images in max_seq_len


def tiny_lvm() -> LLaMA:
    torch.manual_seed(0)
    config = ModelConfig(
        name="tiny", hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, vocab_size=20, max_seq_len=16
    )
    return LLaMA(config).eval()


def test_teacher_forced_codes_of_the_greedy_answer_are_that_answer():
    """Fed its own greedy answer (written by the KV-cache engine, a separate code path) as the truth, the LVM's
    likeliest code at every place is the one it wrote: the places line up with generation's."""
    model = tiny_lvm()
    context = torch.randint(0, CODES, (5, 3 * N), generator=torch.Generator().manual_seed(1))
    greedy = SamplingConfig(temperature=0.0, num_vq_codes=CODES)
    written = continue_image_codes(model, [row.view(3, N) for row in context], 1, greedy)[:, 0, 0]
    assert torch.equal(teacher_forced_codes(model, context, written, CODES), written)


def test_teacher_forced_codes_read_only_the_true_codes_before_each_place():
    model = tiny_lvm()
    generator = torch.Generator().manual_seed(2)
    context = torch.randint(0, CODES, (5, 3 * N), generator=generator)
    truth = torch.randint(0, CODES, (5, N), generator=generator)
    codes = teacher_forced_codes(model, context, truth, CODES)
    assert codes.shape == truth.shape and int(codes.max()) < CODES
    for place in range(N):
        changed = truth.clone()
        changed[:, place] = (changed[:, place] + 1) % CODES
        again = teacher_forced_codes(model, context, changed, CODES)
        assert torch.equal(again[:, : place + 1], codes[:, : place + 1]), place
    assert not torch.equal(teacher_forced_codes(model, context, (truth + 1) % CODES, CODES), codes)
    # A context longer than max_seq_len holds: only its last whole images are read.
    longer = torch.cat([torch.randint(0, CODES, (5, 2 * N), generator=generator), context], dim=1)
    assert torch.equal(teacher_forced_codes(model, longer, truth, CODES), codes)
