"""The naive alternative the suite compares against: one transformers model with PEFT behind FastAPI.

What a user might write instead of a LoRA gateway: load the base model, `load_adapter` every
adapter into one `PeftModel`, and for each request `set_adapter` and `model.generate` under a
lock (`set_adapter` makes one adapter active for the whole model, so these requests cannot share a
forward pass). The answer is
sent back whole, as one server-sent event followed by a usage event, so the suite's streaming load
generator can drive it unchanged; its "time to first token" is therefore the whole request latency.

`--batched` is what a capable user would write instead: requests that arrive while a batch runs wait and
go together into the next one, each row on its own adapter through PEFT's mixed-adapter batches
(`generate(..., adapter_names=[...])`, "__base__" for the bare model), left-padded, up to `--max-batch` rows.
The batch is static: it ends when its longest answer does, as `generate` does.

Run as `python -m bench.peft_server --model DIR --adapters DIR --port N [--batched]` (one sub-folder per
adapter).
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

Answer = tuple[str, int, int]  # text, prompt tokens, completion tokens
BASE = "__base__"  # PEFT's adapter name for "no adapter" in a mixed batch


def build_app(model_dir: Path, adapters_dir: Path, dtype: str, batched: bool = False, max_batch: int = 16):
    """The FastAPI app: /health and a non-streaming-inside, SSE-outside /v1/chat/completions (-> FastAPI,
    imported lazily: heavy)."""
    import torch
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, StreamingResponse
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
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

    eos = model.generation_config.eos_token_id
    stops = set(eos if isinstance(eos, list) else [eos])

    def generate_batch(items: list[tuple[str | None, list[dict], int]]) -> list[Answer]:
        """One `generate` over every request in `items`, each row on its own adapter."""
        texts = [tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for _, m, _ in items]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**enc, adapter_names=[a or BASE for a, _, _ in items], do_sample=False,
                                 max_new_tokens=max(t for _, _, t in items), pad_token_id=tokenizer.pad_token_id)
        width, answers = enc["input_ids"].shape[1], []
        for row, mask, (_, _, limit) in zip(out, enc["attention_mask"], items, strict=True):
            new = row[width:width + limit].tolist()
            end = next((i + 1 for i, t in enumerate(new) if t in stops), len(new))  # the serial path stops there
            answers.append((tokenizer.decode(new[:end], skip_special_tokens=True), int(mask.sum()), end))
        return answers

    batcher = Batcher(generate_batch, max_batch)

    async def answer(adapter: str | None, messages: list[dict], max_tokens: int) -> Answer:
        if batched:
            return await batcher.submit((adapter, messages, max_tokens))
        async with lock:
            return await asyncio.to_thread(generate, adapter, messages, max_tokens)

    @app.get("/health")
    async def health() -> dict:
        return {"adapters": [f.name for f in folders]}

    @app.post("/v1/chat/completions")
    async def chat(body: dict):
        adapter = body.get("adapter")
        if adapter and adapter not in model.peft_config:
            return JSONResponse({"error": {"message": f"unknown adapter {adapter}"}}, status_code=404)
        text, prompt, completion = await answer(adapter, body["messages"], int(body.get("max_tokens", 64)))
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


class Batcher:
    """Requests queue while a batch runs; the next batch takes all that wait (up to `max_batch`)."""

    def __init__(self, run, max_batch: int):  # run: list of items -> list of answers, in a worker thread
        self._run, self._max = run, max_batch
        self._queue: asyncio.Queue | None = None

    async def submit(self, item):
        if self._queue is None:  # created in the server's event loop, on the first request
            self._queue = asyncio.Queue()
            asyncio.get_running_loop().create_task(self._serve())
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def _serve(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                answers = await asyncio.to_thread(self._run, [item for item, _ in batch])
            except Exception as e:  # every request of the batch gets the error; the next batch still runs
                answers = [e] * len(batch)
            for (_, future), result in zip(batch, answers, strict=True):
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)


def peft_server(model_dir: Path, adapters_dir: Path, log: Path, dtype: str = "float32", batched: bool = False):
    """Context manager: the naive PEFT server (`batched`: its mixed-adapter batching variant), ready, on a free
    port (see `running`)."""
    port = free_port()
    cmd = [sys.executable, "-m", "bench.peft_server", "--model", str(model_dir), "--adapters", str(adapters_dir),
           "--port", str(port), "--dtype", dtype, *(["--batched"] if batched else [])]
    return running("peft-batched" if batched else "peft", cmd, {}, "/health", port, log)


def main() -> None:
    """Entry point of the server process."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--adapters", type=Path, required=True, help="One PEFT adapter folder per adapter name.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dtype", default="float32", help="torch dtype of the base model (float32: CPU's fast path).")
    parser.add_argument("--batched", action="store_true",
                        help="Batch the requests that wait, each row on its own adapter (PEFT's adapter_names).")
    parser.add_argument("--max-batch", type=int, default=16, help="Most requests in one batch (with --batched).")
    args = parser.parse_args()
    app = build_app(args.model, args.adapters, args.dtype, args.batched, args.max_batch)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
