"""The code-lookup baseline: a table fitted on training pairs maps each query code to the answer code seen most
with it, falls back to the answers' commonest code, reads pairs out of analogy sentences only, and reaches the
pixel report as the `code_lookup` baseline of its task."""

import numpy as np
import pytest
import torch

from lvm.data.shards import VisualSentence
from lvm.eval.code_lookup import CodeLookup, fit_code_lookups
from lvm.eval.prompt_quality import PromptSet, as_uint8_levels, pixel_report, set_psnr
from lvm.tokenizer.codec import decode_codes, encode_images
from lvm.tokenizer.vqgan import VQGANModel
from tests.tokenizer.conftest import tiny_config


def test_a_code_to_code_mapping_is_recovered_and_applied_place_by_place():
    rng = np.random.default_rng(0)
    permutation = rng.permutation(16)
    queries = rng.integers(0, 16, size=(40, 9))
    lookup = CodeLookup.fit(queries, permutation[queries], num_codes=16)
    assert np.array_equal(lookup.table, permutation)
    new = torch.from_numpy(rng.integers(0, 16, size=(3, 9)))
    assert torch.equal(lookup(new), torch.from_numpy(permutation)[new])


def test_the_commonest_answer_wins_and_unseen_codes_take_the_answers_commonest_code():
    queries = np.array([[3, 3, 3, 1, 1]])
    answers = np.array([[5, 5, 7, 7, 7]])  # code 3 → 5 twice, 7 once; code 1 → 7; 7 is the commonest answer
    lookup = CodeLookup.fit(queries, answers, num_codes=8)
    assert lookup.table[3] == 5 and lookup.table[1] == 7
    assert lookup.table[0] == 7 and lookup.table[6] == 7  # never seen as queries


@pytest.mark.parametrize(
    ("queries", "answers", "message"),
    [
        (np.zeros((2, 4), int), np.zeros((2, 5), int), r"one shape \(P, n\)"),
        (np.zeros((0, 4), int), np.zeros((0, 4), int), "P >= 1"),
        (np.full((1, 4), 8), np.zeros((1, 4), int), r"queries range over \[8, 8\], outside the codebook \[0, 8\)"),
    ],
)
def test_bad_pairs_are_refused_with_what_was_expected(queries, answers, message):
    with pytest.raises(ValueError, match=message):
        CodeLookup.fit(queries, answers, num_codes=8)


def sentence(kind: str, images: list[list[int]], task: str | None = None) -> VisualSentence:
    meta = {"task": task} if task else {}
    return VisualSentence(np.array(images, dtype=np.uint16).ravel(), kind, [f"{kind}.mp4"], len(images), meta)


# 8 px at f = 4: 2×2 = 4 codes per image, 64 codes in the codebook.
FOUR_CODES = tiny_config(resolution=8)


def test_sentences_give_one_table_per_task_from_their_pairs_and_none_from_frames():
    # The gray task maps c → c + 1, the edges task c → 0; a video whose "pairs" would map 1 → 3 must be
    # ignored, and a trailing unpaired query too.
    sentences = [
        sentence("paired", [[1, 2, 1, 2], [2, 3, 2, 3], [3, 1, 3, 1], [4, 2, 4, 2], [2, 2, 2, 2]], task="gray"),
        sentence("paired", [[1, 3, 1, 3], [0, 0, 0, 0]], task="edges"),
        sentence("video", [[1, 1, 1, 1], [3, 3, 3, 3]]),
    ]
    lookups = fit_code_lookups(sentences, FOUR_CODES)
    assert set(lookups) == {"gray", "edges"}
    assert list(lookups["gray"].table[[1, 2, 3]]) == [2, 3, 4]
    assert list(lookups["edges"].table[[1, 3]]) == [0, 0]


@pytest.mark.parametrize(
    ("images", "message"),
    [
        ([[1, 2, 1], [2, 3, 2]], "paired sentence paired.mp4: the sentence has 3 tokens per image"),
        ([[1, 2, 1, 2], [2, 3, 2, 64]], r"paired sentence paired.mp4: token 7 \(image 1\) is id 64"),
    ],
)
def test_a_sentence_that_is_not_the_tokenizers_codes_is_refused_by_name(images, message):
    with pytest.raises(ValueError, match=message):
        fit_code_lookups([sentence("paired", images, task="gray")], FOUR_CODES)


def test_the_pixel_report_scores_the_lookup_on_each_prompts_query():
    torch.manual_seed(0)
    vqgan = VQGANModel(tiny_config()).eval()
    size, codes = vqgan.config.resolution, vqgan.config.num_embeddings
    generator = torch.Generator().manual_seed(0)
    contexts = torch.rand(4, 3, 3, size, size, generator=generator)
    permutation = torch.randperm(codes, generator=generator)
    query_codes = encode_images(vqgan, contexts[:, -1])
    answer = as_uint8_levels(decode_codes(vqgan, permutation[query_codes]))
    truth = (answer + 0.05 * torch.randn(answer.shape, generator=generator)).clamp(0, 1)
    prompts = {"edges": PromptSet("edges", contexts, truth)}
    generated = {"edges": torch.rand(4, 3, size, size, generator=generator)}
    # Fitted on pairs that show the permutation for every code, the table writes exactly `answer`.
    every_code = np.arange(codes)[None]
    lookup = CodeLookup.fit(every_code, permutation.numpy()[every_code], codes)
    report = pixel_report(generated, prompts, vqgan, {"edges": lookup, "gray": lookup})
    assert report["baseline_psnr"]["edges"]["code_lookup"] == pytest.approx(set_psnr(answer, truth))
    assert report["psnr_gain_interval"]["edges"].keys() == report["baseline_psnr"]["edges"].keys()
    # The identity table on the same queries is a different (worse) answer: the report used the table given.
    identity = CodeLookup(np.arange(codes))
    worse = pixel_report(generated, prompts, vqgan, {"edges": identity})["baseline_psnr"]["edges"]["code_lookup"]
    assert worse < report["baseline_psnr"]["edges"]["code_lookup"] - 3
    assert "code_lookup" not in pixel_report(generated, prompts, vqgan)["baseline_psnr"]["edges"]
