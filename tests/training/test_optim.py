import pickle

import pytest
import torch
from torch import nn

from lvm.model import LLaMA, ModelConfig
from lvm.training.optim import (
    Muon,
    build_adamw,
    build_muon,
    muon_parameters,
    newton_schulz_dtype,
    parameter_groups,
    warmup_cosine_lr,
    warmup_cosine_scheduler,
)
from tests.spec import spec_lr as schedule_of_spec

PEAK, END, WARMUP, DECAY = 1.5e-4, 3e-5, 10, 50


def spec_lr(step: int) -> float:
    return schedule_of_spec(step, PEAK, END, WARMUP, DECAY)


def test_scheduler_follows_formula_step_by_step():
    param = nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([param], lr=PEAK)
    scheduler = warmup_cosine_scheduler(optimizer, warmup_steps=WARMUP, decay_steps=DECAY, end_lr=END)
    seen = []
    for _ in range(DECAY + 10):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    for step in (0, 1, 5, WARMUP - 1, WARMUP, 20, 30, DECAY - 1, DECAY, DECAY + 9):
        assert seen[step] == pytest.approx(spec_lr(step), rel=1e-9, abs=1e-15), step
    assert seen[0] == 0.0 and max(seen) == pytest.approx(PEAK)
    assert seen[(WARMUP + DECAY) // 2] == pytest.approx((PEAK + END) / 2)  # cosine midpoint


def test_function_and_scheduler_agree_for_every_group():
    model = LLaMA(ModelConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, vocab_size=64))
    optimizer = build_adamw(model, lr=PEAK, exclude_norms_and_embeddings=True)
    scheduler = warmup_cosine_scheduler(optimizer, warmup_steps=WARMUP, decay_steps=DECAY, end_lr=END)
    for step in range(30):
        expected = warmup_cosine_lr(step, PEAK, END, WARMUP, DECAY)
        assert all(g["lr"] == pytest.approx(expected, abs=1e-15) for g in optimizer.param_groups)
        optimizer.step()
        scheduler.step()


def test_decay_steps_before_warmup_is_refused():
    optimizer = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="decay_steps 5 must be ≥ warmup_steps 10"):
        warmup_cosine_scheduler(optimizer, warmup_steps=10, decay_steps=5, end_lr=0.0)


def test_original_recipe_decays_every_parameter():
    model = LLaMA(ModelConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, vocab_size=64))
    optimizer = build_adamw(model, lr=1e-3)
    (group,) = optimizer.param_groups
    assert group["weight_decay"] == 0.1 and group["betas"] == (0.9, 0.95) and group["eps"] == 1e-8
    assert {id(p) for p in group["params"]} == {id(p) for p in model.parameters()}


def test_alternative_groups_split_linear_weights_from_norms_and_embeddings():
    model = LLaMA(ModelConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, vocab_size=64))
    decay, no_decay = parameter_groups(model, 0.1, exclude_norms_and_embeddings=True)
    linear = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    assert {id(p) for p in decay["params"]} == linear
    assert no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert id(model.embed_tokens.weight) in {id(p) for p in no_decay["params"]}


# --- Muon on the decoder blocks' matrices, AdamW on the rest ---------------------------------------------

TINY = ModelConfig(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, vocab_size=64, image_positions=4)


def block_matrices(model: LLaMA) -> dict[int, str]:
    """id → name of the weight of every nn.Linear inside the decoder blocks."""
    return {id(m.weight): name for name, m in model.layers.named_modules() if isinstance(m, nn.Linear)}


def loss_of(model: LLaMA) -> torch.Tensor:
    ids = torch.randint(64, (4, 33), generator=torch.Generator().manual_seed(0))
    return nn.functional.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())


def newton_schulz_reference(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Muon's orthogonalization (Jordan et al., 2024), in float64: the quintic iteration on G/‖G‖_F."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.double() / g.double().norm()
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


def test_muon_takes_the_block_matrices_and_adamw_everything_else():
    model = LLaMA(TINY)
    hidden, rest = muon_parameters(model)
    assert {id(p) for p in hidden} == set(block_matrices(model)) and len(hidden) == 2 * 7
    assert not {id(p) for p in hidden} & {id(p) for p in rest}
    assert {id(p) for p in hidden} | {id(p) for p in rest} == {id(p) for p in model.parameters()}
    for p in (model.embed_tokens.weight, model.embed_image_positions.weight, model.lm_head.weight, model.norm.weight):
        assert any(p is q for q in rest)
    optimizer = build_muon(model, lr=1e-3, muon_lr=0.02)
    assert [g["lr"] for g in optimizer.param_groups] == [0.02, 1e-3]
    with pytest.raises(ValueError, match="decoder blocks in .layers"):
        build_muon(nn.Linear(2, 2), lr=1e-3)


def test_muon_step_is_the_orthogonalized_gradient_and_the_rest_is_plain_adamw():
    torch.manual_seed(0)
    model = LLaMA(TINY)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = build_muon(model, lr=1e-3, muon_lr=0.02, weight_decay=0.0, ns_dtype="bfloat16")  # torch's own step
    loss_of(model).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    optimizer.step()

    # the rest: exactly what torch's AdamW alone does to a copy
    reference = LLaMA(TINY)
    reference.load_state_dict(before)
    _, rest = muon_parameters(reference)
    adamw = torch.optim.AdamW(rest, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    loss_of(reference).backward()
    adamw.step()
    matrices = block_matrices(model)
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        if id(p) not in matrices:
            assert torch.equal(p, q), name

    # the block matrices: W ← W − lr·√max(1, rows/cols)·NS(G); torch runs NS in bf16, the reference in float64
    for name, p in model.named_parameters():
        if id(p) in matrices:
            rows, cols = p.shape
            step = (before[name] - p.detach()) / (0.02 * max(1.0, rows / cols) ** 0.5)
            expected = newton_schulz_reference(grads[name])
            assert (step.double() - expected).norm() < 0.1 * expected.norm(), name
            # and far from a step along the gradient itself (what SGD or a rescaled gradient would take)
            along = grads[name].double() * expected.norm() / grads[name].double().norm()
            assert (step.double() - along).norm() > 0.3 * expected.norm(), name


@pytest.mark.parametrize("nesterov, adjust_lr_fn", [(True, "original"), (False, "match_rms_adamw")])
def test_muon_in_float32_takes_torchs_update_with_an_exact_orthogonalization(nesterov, adjust_lr_fn):
    """Two steps of momentum, Nesterov or not, decoupled decay and the lr adjustment, against the update rule
    written out here in float64 as torch.optim.Muon's step takes it (the momentum an exponential average):
    float32 Newton–Schulz is exact to 1e-5, where torch's bf16 one is off by about 1 %."""
    torch.manual_seed(0)
    shapes = [(24, 8), (8, 24), (16, 16)]
    params = [nn.Parameter(torch.randn(shape)) for shape in shapes]
    expected = [p.detach().double().clone() for p in params]
    buffers = [torch.zeros(shape, dtype=torch.float64) for shape in shapes]
    lr, decay, momentum = 0.02, 0.1, 0.95
    optimizer = Muon(
        params, ns_dtype=torch.float32, lr=lr, weight_decay=decay, momentum=momentum, nesterov=nesterov,
        adjust_lr_fn=adjust_lr_fn,
    )  # fmt: skip
    for _ in range(2):
        grads = [torch.randn(shape) for shape in shapes]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        optimizer.step()
        for i, g in enumerate(grads):
            g = g.double()
            buffers[i] = momentum * buffers[i] + (1 - momentum) * g
            update = (1 - momentum) * g + momentum * buffers[i] if nesterov else buffers[i]
            rows, cols = shapes[i]
            scale = (max(1, rows / cols) ** 0.5) if adjust_lr_fn == "original" else 0.2 * max(rows, cols) ** 0.5
            expected[i] = expected[i] * (1 - lr * decay) - lr * scale * newton_schulz_reference(update)
    for p, e in zip(params, expected):
        assert torch.allclose(p.detach().double(), e, rtol=0, atol=1e-5)


def test_muon_in_bfloat16_is_torchs_own_step():
    torch.manual_seed(0)
    ours, torchs = nn.Parameter(torch.randn(24, 8)), nn.Parameter(torch.randn(24, 8))
    torchs.data.copy_(ours.data)
    a = Muon([ours], ns_dtype=torch.bfloat16, lr=0.02, adjust_lr_fn="original")
    b = torch.optim.Muon([torchs], lr=0.02, adjust_lr_fn="original")
    for _ in range(2):
        ours.grad = torch.randn(24, 8)
        torchs.grad = ours.grad.clone()
        a.step()
        b.step()
    assert torch.equal(ours, torchs)


def test_newton_schulz_dtype_is_float32_only_on_a_cpu_without_bf16_units(monkeypatch):
    for has_bf16, expected in ((False, torch.float32), (True, torch.bfloat16)):
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda has_bf16=has_bf16: has_bf16)
        assert newton_schulz_dtype("auto", torch.device("cpu")) == expected
        assert newton_schulz_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert newton_schulz_dtype("float32", torch.device("cuda")) == torch.float32
    with pytest.raises(ValueError, match="ns_dtype: 'fp8' is not one of auto, bfloat16, float32"):
        newton_schulz_dtype("fp8", torch.device("cpu"))


def test_muon_state_round_trips_and_a_scheduler_drives_both_halves():
    def run(model: LLaMA, steps: int, state: dict | None = None) -> tuple[dict, list[list[float]]]:
        optimizer = build_muon(model, lr=1e-3, muon_lr=0.02)
        scheduler = warmup_cosine_scheduler(optimizer, warmup_steps=2, decay_steps=6, end_lr=1e-5)
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        lrs = []
        for _ in range(steps):
            lrs.append([g["lr"] for g in optimizer.muon.param_groups + optimizer.adamw.param_groups])
            optimizer.zero_grad()
            loss_of(model).backward()
            optimizer.step()
            scheduler.step()
        return {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, lrs

    torch.manual_seed(0)
    straight = LLaMA(TINY)
    resumed = LLaMA(TINY)
    resumed.load_state_dict(straight.state_dict())
    _, lrs = run(straight, 5)
    state, _ = run(resumed, 3)
    state = pickle.loads(pickle.dumps(state))  # as a checkpoint file holds it
    _, resumed_lrs = run(resumed, 2, state)
    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
    assert resumed_lrs == lrs[3:]  # the loaded halves read the lrs the scheduler sets
    assert lrs[0] == [0.0, 0.0] and lrs[2] == [0.02, 1e-3]  # warmup, then each half from its own peak
    assert lrs[4][0] == pytest.approx(warmup_cosine_lr(4, 0.02, 1e-5, 2, 6))
    assert lrs[4][1] == pytest.approx(warmup_cosine_lr(4, 1e-3, 1e-5, 2, 6))


def test_a_group_added_later_reaches_the_half_that_steps_it():
    """What a finetuning callback does (Lightning's BaseFinetuning.unfreeze_and_add_param_group): the new
    parameters must move, by AdamW by default and by Muon when the group asks for it."""
    torch.manual_seed(0)
    model = LLaMA(TINY)
    optimizer = build_muon(model, lr=1e-3, muon_lr=0.02)
    extra_vector, extra_matrix = nn.Parameter(torch.randn(8)), nn.Parameter(torch.randn(8, 8))
    optimizer.add_param_group({"params": [extra_vector], "lr": 1e-2})
    optimizer.add_param_group({"params": [extra_matrix], "muon": True})
    assert [len(g["params"]) for g in optimizer.param_groups] == [14, 1, 8, 1]  # Muon's groups, then AdamW's
    assert optimizer.param_groups[1]["lr"] == 0.02 and optimizer.param_groups[3]["lr"] == 1e-2
    before = extra_vector.detach().clone(), extra_matrix.detach().clone()
    extra_vector.grad, extra_matrix.grad = torch.ones(8), torch.randn(8, 8)
    optimizer.step()
    # AdamW's first step moves every coordinate by lr (its update is sign-like), plus the decay
    assert torch.allclose(before[0] - extra_vector.detach(), 1e-2 + 1e-2 * 0.1 * before[0], atol=1e-6)
    # Muon's is an orthogonalized matrix: all its singular values near 1 (lr 0.02, square: no lr adjustment)
    step = (before[1] * (1 - 0.02 * 0.1) - extra_matrix.detach()) / 0.02
    assert torch.linalg.svdvals(step).min() > 0.5 and torch.linalg.svdvals(step).max() < 1.5
    with pytest.raises(ValueError, match="already in a parameter group"):
        optimizer.add_param_group({"params": [extra_vector], "muon": True})  # in AdamW's half already
    with pytest.raises(TypeError, match="ordered collections"):  # torch's own check still runs
        optimizer.add_param_group({"params": {nn.Parameter(torch.randn(2))}})


def test_muon_refuses_fsdp_shards():
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    store = torch.distributed.HashStore()
    torch.distributed.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        model = LLaMA(TINY)
        for block in model.layers:
            fully_shard(block, mesh=init_device_mesh("cpu", (1,)))
        with pytest.raises(ValueError, match="sharded \\(FSDP\\).*strategy=ddp"):
            build_muon(model, lr=1e-3)
    finally:
        torch.distributed.destroy_process_group()
