"""The naive alternative the suite compares against: one transformers model with PEFT behind FastAPI.

What a user might write instead of a LoRA gateway: load the base model, `load_adapter` every
adapter into one `PeftModel`, and for each request `set_adapter` and `model.generate` under a
lock (a PEFT model has one active adapter, so requests cannot share a forward pass). The answer is
sent back whole, as one server-sent event followed by a usage event, so the suite's streaming load
generator can drive it unchanged; its "time to first token" is therefore the whole request latency.

Run as `python -m bench.peft_server --model DIR --adapters DIR --port N` (one sub-folder per adapter).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path

from bench.servers import free_port, running


def build_app(model_dir: Path, adapters_dir: Path, dtype: str):  # -> FastAPI (imported lazily: heavy)
    """The FastAPI app: /health and a non-streaming-inside, SSE-outside /v1/chat/completions."""
    import torch
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, StreamingResponse
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype))
    folders = sorted(p for p in adapters_dir.iterdir() if (p / "adapter_config.json").exists())
    model = PeftModel.from_pretrained(base, folders[0], adapter_name=folders[0].name)
    for folder in folders[1:]:
        model.load_adapter(folder, adapter_name=folder.name)
    model.eval()
    lock = asyncio.Lock()  # one generate at a time: PEFT has a single active adapter per model
    app = FastAPI()

    def generate(adapter: str | None, messages: list[dict], max_tokens: int) -> tuple[str, int, int]:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)
        with torch.inference_mode():
            if adapter:
                model.set_adapter(adapter)
                out = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False)
            else:
                with model.disable_adapter():
                    out = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False)
        new = out[0, ids["input_ids"].shape[1]:]
        return tokenizer.decode(new, skip_special_tokens=True), ids["input_ids"].shape[1], len(new)

    @app.get("/health")
    async def health() -> dict:
        return {"adapters": [f.name for f in folders]}

    @app.post("/v1/chat/completions")
    async def chat(body: dict):
        adapter = body.get("adapter")
        if adapter and adapter not in model.peft_config:
            return JSONResponse({"error": {"message": f"unknown adapter {adapter}"}}, status_code=404)
        async with lock:
            text, prompt, completion = await asyncio.to_thread(generate, adapter, body["messages"],
                                                               int(body.get("max_tokens", 64)))
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if not body.get("stream"):
            return {"id": cid, "object": "chat.completion", "created": created, "model": body.get("model"),
                    "adapter": adapter, "usage": usage,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": "length" if completion >= body.get("max_tokens", 64) else "stop"}]}

        def events():
            yield "data: " + json.dumps({"id": cid, "adapter": adapter, "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": text}}]}) + "\n\n"
            yield "data: " + json.dumps({"id": cid, "choices": [], "usage": usage}) + "\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def peft_server(model_dir: Path, adapters_dir: Path, log: Path, dtype: str = "float32"):
    """Context manager: the naive PEFT server, ready, on a free port (see `running`)."""
    port = free_port()
    cmd = [sys.executable, "-m", "bench.peft_server", "--model", str(model_dir), "--adapters", str(adapters_dir),
           "--port", str(port), "--dtype", dtype]
    return running("peft", cmd, {}, "/health", port, log)


def main() -> None:
    """Entry point of the server process."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--adapters", type=Path, required=True, help="One PEFT adapter folder per adapter name.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dtype", default="float32", help="torch dtype of the base model (float32: CPU's fast path).")
    args = parser.parse_args()
    app = build_app(args.model, args.adapters, args.dtype)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
