"""Faster LoRA kernels for vLLM's CPU backend, installed into vLLM as a plugin.

vLLM's CPU LoRA ops (`vllm/lora/ops/torch_ops/lora_ops.py`) gather a whole rank x hidden weight matrix per
token (`weights[token_indices]`) and then do one matrix-vector product per token. Here every slot is
multiplied at once instead: shrink is one GEMM of the tokens against all slots' stacked A (then each token
keeps its slot's columns), expand spreads each token's shrunk vector into its slot's columns and does one
GEMM against all slots' stacked B. With `max_loras` slots of rank r that is a few more FLOPs than needed,
but as one dense GEMM instead of a per-token weight copy: 1.5-4x faster per call on this CPU (measured in
tests/gateway/test_lora_ops.py's shapes; docs/bench_suite.md has the end-to-end effect).

Semantics are vLLM's but for one fix: a token of a request without an adapter (index -1) gets no LoRA
delta. vLLM's torch ops index `weights[-1]`, the LAST SLOT, for it; once an adapter occupies that slot,
a base-model request batched beside any adapter request was answered with that adapter's weights (seen
end to end in float32: the base's greedy answer became the last slot's adapter's answer word for word;
tests/integration/test_lora_parity.py fills every slot to keep it out). vLLM's GPU kernels skip -1.
`register` is the entry point in the `vllm.general_plugins` group (pyproject.toml), so vLLM runs it in
every process it starts, the worker included. `VLLM_PLUGINS` (vLLM's allow-list) can leave it out.
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)


def _slots(weights: torch.Tensor) -> torch.Tensor:
    """[slots, 1, a, b] or [slots, a, b] -> [slots, a, b]."""
    return weights.squeeze(1) if weights.dim() == 4 else weights


def bgmv_shrink(
    inputs: torch.Tensor,
    lora_a_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    scaling: float = 1.0,
) -> None:
    """output[t, :r] = scaling * A[slot(t)] @ inputs[t], for every token t at once."""
    weights = _slots(lora_a_weights)  # [slots, r, hidden]
    slots, rank, hidden = weights.shape
    dtype = output_tensor.dtype
    slot = _one_slot(lora_indices_tensor)
    if slot is not None:  # every row on one adapter (or none): one GEMM against that slot alone
        if slot < 0:
            output_tensor[:, :rank] = 0
        else:
            output_tensor[:, :rank] = scaling * (inputs.to(dtype) @ weights[slot].to(dtype).t())
        return
    every_slot = inputs.to(dtype) @ weights.reshape(slots * rank, hidden).to(dtype).t()  # [tokens, slots*r]
    picked = every_slot.view(-1, slots, rank)[torch.arange(every_slot.shape[0]), lora_indices_tensor.clamp(min=0)]
    output_tensor[:, :rank] = scaling * picked * (lora_indices_tensor >= 0).unsqueeze(1)  # no adapter: zero


def _one_slot(indices: torch.Tensor) -> int | None:
    """The slot every token uses (-1: none has an adapter), or None for a batch that mixes slots.

    The common batch is one adapter's requests, or the base's alone: then shrink and expand are one GEMM
    against that slot's weights, not against every slot's (max_loras times fewer multiply-adds).
    """
    first = int(indices[0]) if indices.numel() else -1
    return first if bool((indices == first).all()) else None


def _expand(inputs: torch.Tensor, lora_b_weights: torch.Tensor, dtype: torch.dtype, indices: torch.Tensor,
            add: bool) -> torch.Tensor | None:
    """B[slot(t)] @ inputs[t] for every token t, as one GEMM (None: no token has an adapter, nothing to add)."""
    weights = _slots(lora_b_weights)  # [slots, out, r]
    slots, out, rank = weights.shape
    tokens = inputs.shape[0]
    slot = _one_slot(indices)
    if slot is not None:
        if slot < 0:
            return None if add else torch.zeros(tokens, out, dtype=dtype)
        return inputs.to(dtype) @ weights[slot].to(dtype).t()
    spread = torch.zeros(tokens, slots, rank, dtype=dtype)
    adapted = indices >= 0  # a token without an adapter keeps an all-zero row: its delta is zero
    spread[torch.arange(tokens)[adapted], indices[adapted]] = inputs.to(dtype)[adapted]
    return spread.view(tokens, slots * rank) @ weights.to(dtype).transpose(1, 2).reshape(slots * rank, out)


def bgmv_expand(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    add_inputs: bool = True,
) -> None:
    outputs = _expand(inputs, lora_b_weights, output_tensor.dtype, lora_indices_tensor, add_inputs)
    if outputs is None:
        return
    limit = 1 if outputs.shape[0] == 1 and output_tensor.shape[0] != 1 else output_tensor.shape[0]
    common = min(outputs.shape[1], output_tensor.shape[1])  # the LoRA and the model may pad differently
    if add_inputs:
        output_tensor[:, :common] += outputs[:limit, :common]
    else:
        output_tensor[:, :common] = outputs[:limit, :common]


def bgmv_expand_slice(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    slice_offset: int,
    slice_size: int,
    add_inputs: bool = True,
) -> None:
    outputs = _expand(inputs, lora_b_weights, output_tensor.dtype, lora_indices_tensor, add_inputs)
    if outputs is None:
        return
    if add_inputs:
        output_tensor[:, slice_offset : slice_offset + slice_size] += outputs
    else:
        output_tensor[:, slice_offset : slice_offset + slice_size] = outputs


def register() -> None:
    """vLLM plugin entry point: swap the CPU LoRA ops (the sgmv_* prefill ops call these too)."""
    from vllm.lora.ops.torch_ops import lora_ops
    from vllm.lora.punica_wrapper import punica_cpu

    for module in (lora_ops, punica_cpu):
        module.bgmv_shrink = bgmv_shrink
        module.bgmv_expand = bgmv_expand
        module.bgmv_expand_slice = bgmv_expand_slice
    logger.debug("flywheel: vLLM's CPU LoRA ops replaced by server.vllm_plugins.lora_ops")
