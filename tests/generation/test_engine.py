"""The generation engine against `transformers`' `generate` on the same weights, and against its own
uncached, unpadded recomputation."""

from dataclasses import replace

import pytest
import torch
from torch._dynamo.utils import counters
from transformers import LlamaConfig, LlamaForCausalLM

from lvm.generation.engine import GenerationEngine, decode_compile_kwargs
from lvm.generation.sampler import SamplingConfig
from lvm.model import LLaMA, ModelConfig

VOCAB, VQ = 120, 100  # ids ≥ 100 play the LVM's special tokens
GREEDY = SamplingConfig(temperature=0, num_vq_codes=VQ)


@pytest.fixture(scope="module")
def hf_and_ours():
    """One random LlamaForCausalLM and our LLaMA holding the same weights."""
    torch.manual_seed(0)
    hf = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=96,
            rms_norm_eps=1e-6,
            initializer_range=0.3,
            tie_word_embeddings=False,
            bos_token_id=None,
            eos_token_id=None,
            pad_token_id=VQ,
        )
    ).eval()
    ours = LLaMA(
        ModelConfig(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, vocab_size=VOCAB, max_seq_len=96)
    )
    ours.load_state_dict({name.removeprefix("model."): t for name, t in hf.state_dict().items()})
    return hf, ours.eval()


def prompts_of_lengths(*lengths: int, seed: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VQ, (n,), generator=g) for n in lengths]


def hf_greedy(hf: LlamaForCausalLM, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """`transformers`' greedy continuation of one prompt, the specials suppressed."""
    return hf.generate(
        prompt[None],
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        do_sample=False,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        suppress_tokens=list(range(VQ, VOCAB)),
    )[0, len(prompt) :]


def test_greedy_equals_transformers_generate_for_a_ragged_batch(hf_and_ours):
    hf, ours = hf_and_ours
    prompts = prompts_of_lengths(20, 7, 13)
    batch = GenerationEngine(ours).generate(prompts, 30, GREEDY)
    assert batch.shape == (3, 30)
    for prompt, row in zip(prompts, batch):
        assert torch.equal(row, hf_greedy(hf, prompt, 30))
    assert len(batch.unique()) > 5  # non-degenerate paths, so the comparison means something


def test_cached_padded_batch_equals_unpadded_recomputation(hf_and_ours):
    _, ours = hf_and_ours
    prompts = prompts_of_lengths(5, 17, 1, 11, seed=4)
    engine = GenerationEngine(ours)
    cached = engine.generate(prompts, 24, GREEDY)
    assert torch.equal(cached, engine.generate(prompts, 24, GREEDY, use_kv_cache=False))
    assert not ours.has_kv_cache  # the cache is released afterwards
    # A row's continuation does not depend on its batch mates (their length, hence the padding).
    assert torch.equal(cached[1:2], engine.generate(prompts[1:2], 24, GREEDY))


def test_seeded_sampling_is_reproducible_and_matches_recomputation(hf_and_ours):
    _, ours = hf_and_ours
    prompts = prompts_of_lengths(9, 4, seed=5)
    sampling = SamplingConfig(temperature=1.0, top_k=50, top_p=0.9, num_vq_codes=VQ)
    run = lambda use_kv_cache: GenerationEngine(ours).generate(
        prompts, 16, sampling, n_candidates=3, generator=torch.Generator().manual_seed(7), use_kv_cache=use_kv_cache
    )
    a, b = run(True), run(True)
    assert a.shape == (6, 16) and torch.equal(a, b)
    assert not torch.equal(a[0], a[1])  # candidates of one prompt are independent draws
    # Candidates share one prefill; the draws are those of six separately computed rows.
    assert torch.equal(a, run(False))


def test_special_ids_are_never_written(hf_and_ours):
    _, ours = hf_and_ours
    with torch.no_grad():
        boosted = LLaMA(ours.config)
        boosted.load_state_dict(ours.state_dict())
        boosted.lm_head.weight[VQ:] *= 50  # specials now dominate the logits
    out = GenerationEngine(boosted).generate(
        prompts_of_lengths(6, 3),
        20,
        SamplingConfig(num_vq_codes=VQ),
        n_candidates=2,
        generator=torch.Generator().manual_seed(0),
    )
    assert int(out.max()) < VQ


def test_half_precision_cache_follows_the_model(hf_and_ours):
    _, ours = hf_and_ours
    half = LLaMA(ours.config).to(torch.bfloat16).eval()
    half.load_state_dict(ours.state_dict())
    out = GenerationEngine(half).generate(prompts_of_lengths(8, 12), 10, GREEDY)
    ref = GenerationEngine(half).generate(prompts_of_lengths(8, 12), 10, GREEDY, use_kv_cache=False)
    assert out.shape == (2, 10) and torch.equal(out, ref)


@pytest.mark.slow
def test_compiled_decode_step_writes_the_same_tokens(hf_and_ours):
    _, ours = hf_and_ours
    prompts = prompts_of_lengths(10, 6, seed=6)
    eager = GenerationEngine(ours).generate(prompts, 12, GREEDY)
    compiled = GenerationEngine(ours, compile_decode=True, compile_options={"dynamic": False})
    assert torch.equal(compiled.generate(prompts, 12, GREEDY), eager)


@pytest.mark.slow
def test_compiled_batch_one_step_turns_its_matmuls_into_reductions(hf_and_ours):
    """At batch 1 inductor's decompose-mm pass rewrites the block matmuls (the speed-up measured in the
    README) and the tokens stay those of the eager step; a `mode` leaves the options out (torch refuses both)."""
    hf, ours = hf_and_ours
    prompt = prompts_of_lengths(9, seed=7)
    torch._dynamo.reset()
    counters["inductor"].clear()
    compiled = GenerationEngine(ours, compile_decode=True, compile_options={"dynamic": False})
    out = compiled.generate(prompt, 12, GREEDY)
    assert counters["inductor"]["decompose_mm"] >= 7 * ours.config.num_layers  # q, k, v, o, gate, up, down
    assert torch.equal(out, GenerationEngine(ours).generate(prompt, 12, GREEDY))
    assert torch.equal(out[0], hf_greedy(hf, prompt[0], 12))
    assert decode_compile_kwargs({"mode": "reduce-overhead"}) == {"mode": "reduce-overhead"}
    assert decode_compile_kwargs({"options": {"post_grad_fusion_options": {}}})["options"] == {
        "post_grad_fusion_options": {}
    }


def test_bad_requests_are_refused(hf_and_ours):
    _, ours = hf_and_ours
    engine = GenerationEngine(ours)
    with pytest.raises(ValueError, match="exceeds the model's max_seq_len 96"):
        engine.generate([torch.zeros(90, dtype=torch.long)], 10)
    with pytest.raises(ValueError, match="prompt 1: expected a non-empty 1-D tensor"):
        engine.generate([torch.zeros(3, dtype=torch.long), torch.zeros(0, dtype=torch.long)], 4)
    with pytest.raises(ValueError, match="no prompts"):
        engine.generate([], 4)


def test_image_positions_follow_each_rows_own_positions_in_a_padded_cached_batch(hf_and_ours):
    # The image-position table is indexed by a token's position in its own prompt, not by its cache slot:
    # a left-padded row writes what it writes alone, and what recomputation without a cache writes.
    torch.manual_seed(5)
    model = LLaMA(replace(hf_and_ours[1].config, init_std=0.3, image_positions=8)).eval()
    prompts = prompts_of_lengths(16, 5, 11, seed=6)
    engine = GenerationEngine(model)
    cached = engine.generate(prompts, 20, GREEDY)
    assert torch.equal(cached, engine.generate(prompts, 20, GREEDY, use_kv_cache=False))
    for i, prompt in enumerate(prompts):
        assert torch.equal(cached[i], engine.generate([prompt], 20, GREEDY)[0])
    assert len(cached.unique()) > 5
