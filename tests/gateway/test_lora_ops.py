"""server/vllm_plugins/lora_ops.py computes what vLLM's CPU LoRA ops compute, for decode and prefill shapes."""

from __future__ import annotations

import pytest
import torch

from server.vllm_plugins import lora_ops as ours

vllm_ops = pytest.importorskip("vllm.lora.ops.torch_ops.lora_ops")
# vLLM's own functions, kept before any test registers the plugin (which swaps the module's names)
theirs = type("VllmOps", (), {name: staticmethod(getattr(vllm_ops, name))
                              for name in ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice")})


@pytest.mark.parametrize("batch", ["mixed", "one adapter", "no adapter"])
@pytest.mark.parametrize(("tokens", "slots", "rank", "hidden", "out"),
                         [(16, 4, 8, 576, 576), (64, 16, 8, 576, 192), (3, 4, 16, 576, 1536), (1, 1, 8, 64, 64)])
def test_same_results_as_vllms_ops(tokens, slots, rank, hidden, out, batch):
    torch.manual_seed(tokens + slots)
    x = torch.randn(tokens, hidden, dtype=torch.bfloat16)
    a = torch.randn(slots, 1, rank, hidden, dtype=torch.bfloat16)
    b = torch.randn(slots, 1, out, rank, dtype=torch.bfloat16)
    indices = torch.randint(-1, slots, (tokens,))
    indices[0] = -1  # a token without an adapter: vLLM's ops give it the last slot's delta, ours none
    if tokens > 1:
        indices[1] = slots - 1
    if batch != "mixed":  # one slot for every row: our one-GEMM path
        indices = torch.full((tokens,), slots - 1 if batch == "one adapter" else -1)
    # vLLM's ops with a last slot of zeros are what vLLM means (its GPU kernels skip -1): the reference
    a_ref, b_ref = torch.cat([a, torch.zeros_like(a[:1])]), torch.cat([b, torch.zeros_like(b[:1])])

    shrunk = [torch.zeros(tokens, rank) for _ in range(2)]
    theirs.bgmv_shrink(x, a_ref, shrunk[0], indices, 0.5)
    ours.bgmv_shrink(x, a, shrunk[1], indices, 0.5)
    torch.testing.assert_close(shrunk[1], shrunk[0], rtol=1e-3, atol=1e-2)
    assert not shrunk[1][indices == -1].any()

    for add in (True, False):
        y = [torch.randn(tokens, out + 8, dtype=torch.bfloat16) for _ in range(2)]
        y[1].copy_(y[0])
        theirs.bgmv_expand_slice(shrunk[0], b_ref, y[0], indices, 4, out, add)
        ours.bgmv_expand_slice(shrunk[0], b, y[1], indices, 4, out, add)
        torch.testing.assert_close(y[1].float(), y[0].float(), rtol=2e-2, atol=0.5)
        z = [torch.zeros(tokens, out, dtype=torch.bfloat16) for _ in range(2)]
        theirs.bgmv_expand(shrunk[0], b_ref, z[0], indices, add)
        ours.bgmv_expand(shrunk[0], b, z[1], indices, add)
        torch.testing.assert_close(z[1].float(), z[0].float(), rtol=2e-2, atol=0.5)


def test_a_token_without_an_adapter_gets_no_delta_even_with_every_slot_full():
    torch.manual_seed(0)
    x, a, b = torch.randn(2, 64), torch.randn(2, 1, 8, 64), torch.randn(2, 1, 64, 8)
    indices = torch.tensor([-1, 1])  # the base's token beside one of the last slot's adapter
    shrunk = torch.full((2, 8), 7.0)
    ours.bgmv_shrink(x, a, shrunk, indices, 1.0)
    assert not shrunk[0].any() and shrunk[1].abs().sum() > 0
    y = torch.ones(2, 64)
    ours.bgmv_expand(torch.randn(2, 8), b, y, indices, True)
    assert torch.equal(y[0], torch.ones(64)) and not torch.equal(y[1], torch.ones(64))
    vllm_y = torch.ones(2, 64)
    theirs.bgmv_expand(torch.randn(2, 8), b, vllm_y, indices, True)
    assert not torch.equal(vllm_y[0], torch.ones(64))  # the bug ours fixes: vLLM's ops add the last slot's delta


def test_the_plugin_replaces_vllms_cpu_ops():
    punica_cpu = pytest.importorskip("vllm.lora.punica_wrapper.punica_cpu")
    ours.register()
    assert punica_cpu.bgmv_shrink is ours.bgmv_shrink and vllm_ops.bgmv_expand is ours.bgmv_expand
