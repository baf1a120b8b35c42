"""Activation checkpointing → compile → FSDP, applied from outside the model in torchtitan's order."""

import torch
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper

from lvm.model.config import ModelConfig
from lvm.model.llama import LLaMA
from lvm.training.parallelize import apply_activation_checkpointing, parallelize


def test_activation_checkpointing_gives_the_same_loss_and_gradients_and_saves_activations():
    torch.manual_seed(0)
    config = ModelConfig(hidden_size=64, intermediate_size=128, num_layers=3, num_heads=4, vocab_size=97)
    plain, checkpointed = LLaMA(config), LLaMA(config)
    checkpointed.load_state_dict(plain.state_dict())
    apply_activation_checkpointing(checkpointed)
    ids = torch.randint(0, 97, (2, 24))
    saved = {}
    for name, model in (("plain", plain), ("checkpointed", checkpointed)):
        model.train()
        count = [0]

        def pack(tensor, count=count):  # every tensor autograd keeps for the backward pass
            count[0] += tensor.numel()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = torch.nn.functional.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        saved[name] = (loss.detach(), count[0])
    torch.testing.assert_close(saved["checkpointed"][0], saved["plain"][0], rtol=0, atol=0)
    for (name, p), q in zip(plain.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-7, msg=name)
    # The blocks' internals are recomputed, not stored: far fewer saved activations.
    assert saved["checkpointed"][1] < 0.5 * saved["plain"][1]
    assert checkpointed.state_dict().keys() == plain.state_dict().keys()  # checkpoints load either way


def test_the_order_is_checkpointing_then_compile_then_sharding():
    model = LLaMA(ModelConfig(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, vocab_size=40))
    names = list(model.state_dict())
    seen = []

    def shard(sharded: LLaMA) -> None:  # stands in for FSDP2Strategy.shard: records what it is handed
        seen.extend((type(block), block._compiled_call_impl is not None) for block in sharded.layers)

    parallelize(model, activation_checkpointing=True, compile_options={"dynamic": False}, shard=shard)
    assert seen == [(CheckpointWrapper, True)] * 2  # it shards compiled, checkpointed blocks
    assert list(model.state_dict()) == names  # checkpoints keep their parameter names
    logits = model(torch.zeros(1, 4, dtype=torch.long))
    assert logits.shape == (1, 4, 40)
