"""server/vllm_plugins/lora_ops.py computes what vLLM's CPU LoRA ops compute, for decode and prefill shapes."""

from __future__ import annotations

import pytest
import torch

from server.vllm_plugins import lora_ops as ours

vllm_ops = pytest.importorskip("vllm.lora.ops.torch_ops.lora_ops")
# vLLM's own functions, kept before any test registers the plugin (which swaps the module's names)
theirs = type("VllmOps", (), {name: staticmethod(getattr(vllm_ops, name))
                              for name in ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice")})


@pytest.mark.parametrize(("tokens", "slots", "rank", "hidden", "out"),
                         [(16, 4, 8, 576, 576), (64, 16, 8, 576, 192), (3, 4, 16, 576, 1536), (1, 1, 8, 64, 64)])
def test_same_results_as_vllms_ops(tokens, slots, rank, hidden, out):
    torch.manual_seed(tokens + slots)
    x = torch.randn(tokens, hidden, dtype=torch.bfloat16)
    a = torch.randn(slots, 1, rank, hidden, dtype=torch.bfloat16)
    b = torch.randn(slots, 1, out, rank, dtype=torch.bfloat16)
    indices = torch.randint(-1, slots, (tokens,))  # -1 (no adapter) indexes the last slot, as in vLLM

    shrunk = [torch.zeros(tokens, rank) for _ in range(2)]
    theirs.bgmv_shrink(x, a, shrunk[0], indices, 0.5)
    ours.bgmv_shrink(x, a, shrunk[1], indices, 0.5)
    torch.testing.assert_close(shrunk[1], shrunk[0], rtol=1e-3, atol=1e-2)

    for add in (True, False):
        y = [torch.randn(tokens, out + 8, dtype=torch.bfloat16) for _ in range(2)]
        y[1].copy_(y[0])
        theirs.bgmv_expand_slice(shrunk[0], b, y[0], indices, 4, out, add)
        ours.bgmv_expand_slice(shrunk[0], b, y[1], indices, 4, out, add)
        torch.testing.assert_close(y[1].float(), y[0].float(), rtol=2e-2, atol=0.5)
        z = [torch.zeros(tokens, out, dtype=torch.bfloat16) for _ in range(2)]
        theirs.bgmv_expand(shrunk[0], b, z[0], indices, add)
        ours.bgmv_expand(shrunk[0], b, z[1], indices, add)
        torch.testing.assert_close(z[1].float(), z[0].float(), rtol=2e-2, atol=0.5)


def test_the_plugin_replaces_vllms_cpu_ops():
    punica_cpu = pytest.importorskip("vllm.lora.punica_wrapper.punica_cpu")
    ours.register()
    assert punica_cpu.bgmv_shrink is ours.bgmv_shrink and vllm_ops.bgmv_expand is ours.bgmv_expand
