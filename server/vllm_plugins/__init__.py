"""vLLM plugins: modules vLLM itself loads, through the `vllm.general_plugins` entry points in pyproject.toml,
in every process it starts (the gateway's, the engine core's and its workers').

They run inside vLLM's processes, not on the gateway's HTTP path, and import only vLLM and the standard library:
`lora_ops` (faster CPU LoRA kernels), `engine_wait` (the engine core sleeps instead of spinning while its worker
computes) and `orphan_guard` (vLLM's processes end when the gateway dies). docs/architecture.md, "vLLM plugins",
says why each exists.
"""
