"""Closed-loop load on an OpenAI-compatible server: c streams always in flight, token arrivals.

The load generator runs an asyncio loop on a thread of its own with one kept HTTP client
(aiohttp, keep-alive). Each of ``concurrency`` slots sends a streaming completion, reads
its server-sent events to the end and sends the next at once, so ``c`` requests are in
flight at all times until :meth:`LoadGenerator.stop_issuing`. Every streamed chunk's
arrival time is kept (CLOCK_MONOTONIC, the meter's clock), so a window counts exactly the
tokens that arrived inside it. The loop's own CPU time and its lag (how late a 5 ms timer
fires) are recorded too: a saturated client would under-report the server.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from array import array
from dataclasses import dataclass, field

# A 5 ms timer on the loop; how late it fires is the loop's lag.
LAG_PERIOD_S = 0.005
# Token ids of prompts: in [16, 1000), valid in every real vocabulary (the first 16 are
# special tokens in most).
PROMPT_ID_LOW, PROMPT_ID_HIGH = 16, 1000
# After a failed request a slot waits this long before the next (no hot loop on a 500).
ERROR_BACKOFF_S = 0.05


@dataclass(frozen=True)
class LoadSpec:
    """What to send.

    Attributes:
        base_url: the server's OpenAI base, ``http://HOST:PORT/v1``.
        model: the served model's name (the request's ``model``).
        concurrency: requests in flight at all times.
        input_len, output_len: prompt tokens and output tokens per request.
        seed: seed of the prompts.
        request_timeout_s: longest wait for the next chunk of a stream.
        vocab_high: prompts draw token ids below this (at most :data:`PROMPT_ID_HIGH`).
    """

    base_url: str
    model: str
    concurrency: int
    input_len: int
    output_len: int
    seed: int = 0
    request_timeout_s: float = 120.0
    vocab_high: int = PROMPT_ID_HIGH

    def body(self, prompt: list[int]) -> dict:
        """The request: streamed, greedy, exact length where the server supports it."""
        return {"model": self.model, "prompt": prompt, "max_tokens": self.output_len,
                "min_tokens": self.output_len, "ignore_eos": True, "temperature": 0.0,
                "stream": True, "stream_options": {"include_usage": True}}


@dataclass
class Request:
    """One request as the client saw it (times on CLOCK_MONOTONIC, ns).

    ``arrivals_ns`` holds one time per streamed chunk that carried tokens, and
    ``chunk_tokens`` the tokens each carried (1 where the chunk does not say).
    """

    slot: int
    start_ns: int
    arrivals_ns: array = field(default_factory=lambda: array("q"))
    chunk_tokens: array = field(default_factory=lambda: array("l"))
    end_ns: int | None = None
    usage_output: int | None = None
    usage_input: int | None = None
    error: str | None = None

    @property
    def first_ns(self) -> int | None:
        return self.arrivals_ns[0] if self.arrivals_ns else None

    @property
    def streamed_tokens(self) -> int:
        return int(sum(self.chunk_tokens))

    @property
    def output_tokens(self) -> int:
        """The real count: the server's usage where it reports one, else the chunks'."""
        return self.usage_output if self.usage_output is not None else self.streamed_tokens


class ServerGone(Exception):
    """The server refuses connections (it is not running)."""


class LoadGenerator:
    """``concurrency`` streams in flight against one server until told to stop issuing.

    Use: :meth:`start`, :meth:`wait_steady`, read :attr:`requests` and the loop figures
    with :meth:`client_figures`, :meth:`stop`.
    """

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.requests: list[Request] = []
        self.gone: str | None = None  # why the server is unreachable, once it is
        self.last_arrival_ns: int | None = None
        self._steady = threading.Event()
        self._first_seen: set[int] = set()
        self._issuing = True
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done = threading.Event()
        self._lag: list[tuple[int, float]] = []  # (time ns, lag s)
        self._loop_thread_id: int | None = None
        rng = random.Random(spec.seed)
        high = max(PROMPT_ID_LOW + 1, min(spec.vocab_high, PROMPT_ID_HIGH))
        self._prompts = [[rng.randrange(PROMPT_ID_LOW, high) for _ in range(spec.input_len)]
                         for _ in range(spec.concurrency)]

    # -- control (any thread) --------------------------------------------------------
    def start(self) -> LoadGenerator:
        self._thread = threading.Thread(target=self._run, name="joulebench-loadgen",
                                        daemon=True)
        self._thread.start()
        return self

    def wait_steady(self, timeout_s: float) -> bool:
        """Block until every slot has had its first token (ramp-up over); True if so."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self._steady.wait(0.05):
                return True
            if self.gone or self._done.is_set():
                return False
        return False

    def stop_issuing(self) -> None:
        """No new requests; those in flight run to their end (ramp-down)."""
        self._issuing = False

    def stop(self, drain_s: float = 30.0) -> None:
        """Stop issuing, let the requests in flight finish (at most ``drain_s``), close."""
        self.stop_issuing()
        if self._thread is None:
            return
        if not self._done.wait(drain_s) and self._loop is not None:
            self._loop.call_soon_threadsafe(self._cancel_all)
        self._thread.join(10.0)

    def loop_cpu_s(self) -> float | None:
        """CPU time the loop's thread has used, s (None before it started)."""
        if self._loop_thread_id is None:
            return None
        try:
            return time.clock_gettime(time.pthread_getcpuclockid(self._loop_thread_id))
        except (OSError, AttributeError):
            return None

    def lag_s(self, t0_ns: int, t1_ns: int) -> list[float]:
        """The loop's lag samples taken inside [t0_ns, t1_ns), s."""
        return [lag for t, lag in list(self._lag) if t0_ns <= t < t1_ns]

    # -- the loop (its own thread) ---------------------------------------------------
    def _run(self) -> None:
        self._loop_thread_id = threading.get_ident()
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()
            self._done.set()

    def _cancel_all(self) -> None:
        for t in asyncio.all_tasks(self._loop):
            t.cancel()

    async def _main(self) -> None:
        import aiohttp

        conn = aiohttp.TCPConnector(limit=self.spec.concurrency + 4, force_close=False,
                                    enable_cleanup_closed=True)
        timeout = aiohttp.ClientTimeout(total=None, connect=10.0,
                                        sock_read=self.spec.request_timeout_s)
        async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
            lag = asyncio.ensure_future(self._watch_lag())
            try:
                await asyncio.gather(*(self._slot(session, i)
                                       for i in range(self.spec.concurrency)))
            except asyncio.CancelledError:
                pass
            finally:
                lag.cancel()

    async def _watch_lag(self) -> None:
        while True:
            t = time.monotonic_ns()
            await asyncio.sleep(LAG_PERIOD_S)
            now = time.monotonic_ns()
            self._lag.append((now, max(0.0, (now - t) * 1e-9 - LAG_PERIOD_S)))

    async def _slot(self, session, slot: int) -> None:
        url = self.spec.base_url.rstrip("/") + "/completions"
        body = self.spec.body(self._prompts[slot])
        while self._issuing and self.gone is None:
            req = Request(slot, time.monotonic_ns())
            self.requests.append(req)
            try:
                await self._one(session, url, body, req)
            except ServerGone as exc:
                self.gone = str(exc)
            req.end_ns = time.monotonic_ns()
            if req.error is not None:
                await asyncio.sleep(ERROR_BACKOFF_S)

    async def _one(self, session, url: str, body: dict, req: Request) -> None:
        import aiohttp

        try:
            async with session.post(url, json=body) as resp:
                if resp.status != 200:
                    await resp.read()
                    req.error = f"http {resp.status}"
                    return
                await self._read_stream(resp, req)
        except aiohttp.ClientConnectorError as exc:
            req.error = "connect"
            raise ServerGone(f"cannot connect to {self.spec.base_url} ({exc.os_error})") \
                from None
        except TimeoutError:
            req.error = "timeout"
        except aiohttp.ServerDisconnectedError:
            req.error = "disconnected"
        except (aiohttp.ClientPayloadError, aiohttp.ClientResponseError,
                aiohttp.ClientOSError) as exc:
            req.error = f"stream broken ({exc.__class__.__name__})"
        except ValueError as exc:  # a chunk that is not JSON
            req.error = f"bad chunk ({exc})"

    async def _read_stream(self, resp, req: Request) -> None:
        """Parse server-sent events: one arrival per chunk that carries tokens."""
        buf = b""
        finished = False
        async for data in resp.content.iter_any():
            now = time.monotonic_ns()
            buf += data
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                for line in event.split(b"\n"):
                    if not line.startswith(b"data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        finished = True
                        continue
                    self._chunk(json.loads(payload), now, req)
        if not finished:
            req.error = "stream ended early"

    def _chunk(self, msg: dict, now: int, req: Request) -> None:
        usage = msg.get("usage")
        if usage:
            req.usage_output = usage.get("completion_tokens")
            req.usage_input = usage.get("prompt_tokens")
        for ch in msg.get("choices") or ():
            ids = ch.get("token_ids")
            n = len(ids) if isinstance(ids, list) else (1 if ch.get("text") or
                                                         ch.get("finish_reason") is None
                                                         else 0)
            if n:
                req.arrivals_ns.append(now)
                req.chunk_tokens.append(n)
                self.last_arrival_ns = now
                if req.slot not in self._first_seen:
                    self._first_seen.add(req.slot)
                    if len(self._first_seen) == self.spec.concurrency:
                        self._steady.set()
