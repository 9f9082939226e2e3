"""A stand-in OpenAI-compatible completions server (streaming) with scripted faults, for tests.

Run as a script: ``python tests/fake_openai_server.py --port 0 [faults]``; it prints
``PORT <n>`` once it listens on 127.0.0.1 and exits by itself after ``--lifetime-s``.
Faults: ``--delay-s`` between tokens (slow tokens), ``--fail-every K`` (every K-th request
answers HTTP 500), ``--short N`` (ignores ``ignore_eos``: N tokens, then stop),
``--die-after-tokens N`` (the process exits mid-stream once it has sent N tokens),
``--no-usage`` (no usage chunk).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from aiohttp import web


def make_app(args: argparse.Namespace) -> web.Application:
    state = {"requests": 0, "tokens": 0}

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": args.model,
                                                              "object": "model"}]})

    async def version(request: web.Request) -> web.Response:
        return web.json_response({"version": "fake-1.0"})

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="")

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        state["requests"] += 1
        if args.fail_every and state["requests"] % args.fail_every == 0:
            return web.json_response({"error": "scripted failure"}, status=500)
        want = int(body.get("max_tokens", 16))
        if args.short:
            want = min(want, args.short)
        prompt = body.get("prompt")
        n_in = len(prompt) if isinstance(prompt, list) else len(str(prompt).split())
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        pending = []
        for i in range(want):
            chunk = {"id": "c", "object": "text_completion", "model": args.model,
                     "choices": [{"index": 0, "text": " t", "finish_reason":
                                  "length" if i == want - 1 else None}]}
            pending.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            state["tokens"] += 1
            if args.die_after_tokens and state["tokens"] >= args.die_after_tokens:
                await resp.write(b"".join(pending))
                os._exit(3)
            if len(pending) >= args.burst or i == want - 1:
                await resp.write(b"".join(pending))
                pending = []
                if args.delay_s:
                    await asyncio.sleep(args.delay_s)
                else:
                    await asyncio.sleep(0)
        tail = b""
        if not args.no_usage:
            usage = {"prompt_tokens": n_in, "completion_tokens": want,
                     "total_tokens": n_in + want}
            tail = b"data: " + json.dumps({"id": "c", "choices": [], "usage": usage}).encode() \
                + b"\n\n"
        await resp.write(tail + b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_get("/version", version)
    app.router.add_get("/health", health)
    app.router.add_post("/v1/completions", completions)
    return app


async def main(args: argparse.Namespace) -> None:
    runner = web.AppRunner(make_app(args), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port, backlog=2048)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"PORT {port}", flush=True)
    await asyncio.sleep(args.lifetime_s)
    await runner.cleanup()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--model", default="tiny-llama")
    p.add_argument("--delay-s", type=float, default=0.0)
    p.add_argument("--burst", type=int, default=1)
    p.add_argument("--fail-every", type=int, default=0)
    p.add_argument("--short", type=int, default=0)
    p.add_argument("--die-after-tokens", type=int, default=0)
    p.add_argument("--no-usage", action="store_true")
    p.add_argument("--lifetime-s", type=float, default=120.0)
    a = p.parse_args()
    try:
        asyncio.run(main(a))
    except KeyboardInterrupt:
        sys.exit(0)
