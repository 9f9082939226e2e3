"""The workload boundary: what the meter measures, behind one small interface an engine implements.

An engine is prepared once per model (built, loaded, compiled), warmed up per shape
outside any measured window, then called once per generate call inside windows; each
call returns its token counts and time marks. The Hugging Face reference path
(:class:`HfWorkload`) is the first implementation. No timing policy lives here: the
cells module decides windows and repeats.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Shape:
    """Tokens one generate call processes."""

    batch_size: int
    input_len: int
    output_len: int


@dataclass(frozen=True)
class CallResult:
    """One generate call: tokens made and read, and its marks on CLOCK_MONOTONIC (ns).

    ``first_token_ns`` is when prefill's logits were ready (the first output token).
    """

    output_tokens: int
    input_tokens: int
    start_ns: int
    first_token_ns: int
    end_ns: int

    @property
    def marks(self) -> tuple[int, int, int]:
        return (self.start_ns, self.first_token_ns, self.end_ns)


class Workload(Protocol):
    """An engine as the meter sees it: prepare once, warm up, run one call at a time."""

    engine: str

    def prepare(self) -> None:
        """Build or load the model once (never inside a measured window)."""

    def warm_up(self, shape: Shape, calls: int) -> None:
        """Run ``calls`` unmeasured calls of ``shape`` (compilation, allocation, clocks)."""

    def call(self, shape: Shape) -> CallResult:
        """One generate call of exactly ``shape``: the tokens it made and its marks.

        Raises:
            RuntimeError: the engine made another number of tokens.
        """
        ...

    def describe(self) -> dict[str, Any]:
        """What ran, recorded with every cell: ``name`` (the engine), its version and the
        settings that change the figures."""
        ...

    def close(self) -> None:
        """Release the model and the engine's memory."""


def make_prompts(shape: Shape, vocab_size: int, seed: int = 0,
                 device: str = "cpu") -> torch.Tensor:
    """Random token ids of shape (batch, input_len), reproducible from ``seed``.

    Ids avoid the first 16 (special tokens in most vocabularies).
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    low = min(16, vocab_size - 1)
    ids = torch.randint(low, vocab_size, (shape.batch_size, shape.input_len), generator=g)
    return ids.to(device)


def prepare(model: Any, device: str = "cpu", compile: bool = True) -> None:
    """Make the model generate to exactly ``max_new_tokens``: no EOS, greedy.

    No cache implementation is set here: :class:`HfWorkload` passes a static cache of
    its own (one per shape group), which is what makes transformers compile the decode
    step (torch.compile, reduce-overhead: CUDA graphs) on a GPU; prefill stays eager.
    ``compile=False`` turns that off (``disable_compile``).
    """
    gc = model.generation_config
    gc.cache_implementation = None
    gc.disable_compile = not compile
    gc.eos_token_id = None
    gc.do_sample = False
    gc.temperature = None
    gc.top_p = None
    gc.top_k = None
    if gc.pad_token_id is None:
        gc.pad_token_id = 0


class _FirstTokenMark:
    """A logits processor that records when the first new token's logits are ready.

    Called once per step after the forward pass, outside any compiled region. With
    ``synced`` it synchronises the device first, so the mark is when the first token's
    logits exist on the device, not when its kernels were queued (the device check
    compares the two). Stock generate syncs the host every step anyway (its stop
    check), so the unsynced mark is already within one step's launch latency.
    """

    def __init__(self, synced: bool = False) -> None:
        self.first_ns: int | None = None
        self.synced = synced

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.first_ns is None:
            if self.synced and scores.is_cuda:
                import torch

                torch.cuda.synchronize(scores.device)
            self.first_ns = time.monotonic_ns()
        return scores


def _cache_kwarg(model: Any) -> str:
    """``cache`` (transformers 5.24 and later) or ``past_key_values`` (before)."""
    import inspect

    try:  # generate takes **kwargs and passes the cache on to forward: ask forward
        params = inspect.signature(inspect.unwrap(type(model).forward)).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def generate_exact(model: Any, input_ids: torch.Tensor, output_len: int,
                   cache: Any = None, synced_mark: bool = False,
                   bucket: int | None = None) -> CallResult:
    """Greedy generation of exactly ``output_len`` new tokens per sequence.

    Args:
        cache: a transformers cache to fill (reset here first), or None for generate's own.
        synced_mark: synchronise the device at the first-token mark.
        bucket: with a static ``cache`` and :data:`ATTENTION`, attend over the current
            context rounded up to a multiple of ``bucket`` positions (see
            :class:`_AttendCurrentContext`), not over the whole cache.

    Returns:
        The call's tokens (batch x output_len made, batch x input_len read) and marks.

    Raises:
        RuntimeError: generation stopped at another length.
    """
    import torch
    from transformers import LogitsProcessorList

    kw: dict[str, Any] = {}
    mark = _FirstTokenMark(synced_mark)
    processors: list[Any] = [mark]
    with torch.inference_mode():
        if cache is not None:
            # in place: the tensors keep their addresses, so the CUDA graphs replay
            cache.reset()
            kw[_cache_kwarg(model)] = cache
            if bucket is not None:
                span = _AttendCurrentContext(input_ids.shape[1] + output_len, bucket)
                span.prefill(input_ids.shape[1])
                processors.append(span)
        start = time.monotonic_ns()
        try:
            out = model.generate(
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=output_len,
                min_new_tokens=None,
                do_sample=False,
                eos_token_id=None,
                logits_processor=LogitsProcessorList(processors),
                **kw,
            )
        finally:
            _set_attended_keys(None)
    end = time.monotonic_ns()
    made = out.shape[1] - input_ids.shape[1]
    if made != output_len:
        raise RuntimeError(f"generate made {made} tokens per sequence, not {output_len}")
    batch, input_len = input_ids.shape[0], input_ids.shape[1]
    return CallResult(batch * made, batch * input_len, start,
                      mark.first_ns if mark.first_ns is not None else end, end)


# The attention the reference engine registers with transformers. Under torch.compile
# with a static cache, transformers' SDPA path expands K and V to every query head
# (repeat_kv) at each decode step: its GQA fast path needs no mask, and a static cache
# always passes one. That copies the whole cache 4x (8B) to 8x (70B, Qwen3-MoE) per step,
# work no serving engine does. For one query token, this path folds each KV head's query
# heads into the query-length axis instead, (B, H, 1, D) -> (B, H_kv, H / H_kv, D), so
# SDPA reads K and V once and the mask (shared by all heads) broadcasts. Everything
# else goes to transformers' own SDPA function.
#
# It also attends over the current context, not the whole static cache: the cache is
# input + output long, and without this every decode step would read all of it (768
# positions per step for 512 + 256 where the context averages ~640). The number of keys
# to attend comes from :data:`_attended_keys`, a plain int set between steps (eager, by
# :class:`_AttendCurrentContext`); under torch.compile dynamo guards on its value, so
# each distinct value is one graph with static shapes. Decode rounds it up to a bucket
# of positions, so a shape group compiles one graph (one CUDA graph) per bucket, not one
# per step; all of them are met in warm-up, which runs the same full shape.
ATTENTION = "joulebench_sdpa"

# Keys the next forward attends (the current context, bucketed), or None: all of them.
_attended_keys: int | None = None

# Default bucket of attended positions, and the most buckets one shape group compiles
# (more: the bucket grows; see :func:`attention_bucket`).
ATTENTION_BUCKET = 128
MAX_BUCKETS = 8


def _set_attended_keys(keys: int | None) -> None:
    global _attended_keys
    _attended_keys = keys


def attended_keys(keys: int, cache_len: int, bucket: int) -> int:
    """``keys`` rounded up to a multiple of ``bucket``, at most the cache's length."""
    return min(cache_len, -(-keys // bucket) * bucket)


def attention_bucket(shape: Shape, bucket: int = ATTENTION_BUCKET,
                     max_buckets: int = MAX_BUCKETS) -> int:
    """The bucket (positions) decode of ``shape`` rounds its context up to.

    ``bucket``, or, where the decode's contexts would span more than ``max_buckets`` of
    them, the smallest multiple of 64 that keeps it to ``max_buckets`` graphs (each one
    is a compile, and dynamo's recompile limit counts them).
    """
    while len(decode_spans(shape, bucket)) > max_buckets:
        bucket += 64 - bucket % 64 if bucket % 64 else 64
    return bucket


def decode_spans(shape: Shape, bucket: int) -> list[int]:
    """The attended lengths the decode steps of ``shape`` use, in order met (one graph each).

    Decode step i (i = 1 .. output_len - 1; prefill made the first token) writes position
    input_len + i - 1 and attends its input_len + i keys.
    """
    cache_len = shape.input_len + shape.output_len
    spans: list[int] = []
    for keys in range(shape.input_len + 1, shape.input_len + shape.output_len):
        span = attended_keys(keys, cache_len, bucket)
        if not spans or spans[-1] != span:
            spans.append(span)
    return spans


class _AttendCurrentContext:
    """A logits processor that sets how many keys the next forward attends.

    Called eagerly after each forward (outside the compiled region) with the ids so far:
    the next forward writes position ``len(ids)`` and attends ``len(ids) + 1`` keys,
    rounded up to the bucket. Prefill (eager, before the first call) attends exactly the
    prompt. ``spans`` keeps what each forward was given (prefill first).
    """

    def __init__(self, cache_len: int, bucket: int) -> None:
        self.cache_len = cache_len
        self.bucket = bucket
        self.spans: list[int] = []

    def prefill(self, input_len: int) -> None:
        self._set(min(input_len, self.cache_len))

    def _set(self, keys: int) -> None:
        self.spans.append(keys)
        _set_attended_keys(keys)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self._set(attended_keys(input_ids.shape[1] + 1, self.cache_len, self.bucket))
        return scores


def packed_gqa_sdpa(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attention_mask: torch.Tensor | None, dropout: float = 0.0,
                    scaling: float | None = None, is_causal: bool | None = None,
                    **kwargs: Any) -> tuple[torch.Tensor, None]:
    """SDPA over the current context (:data:`_attended_keys`), with grouped KV heads kept
    packed for a single query token (decode)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    span = _attended_keys
    if span is not None and span < key.shape[-2]:
        # the positions cut off are masked anyway (unfilled, or after the query)
        key, value = key[:, :, :span], value[:, :, :span]
        if attention_mask is not None and attention_mask.shape[-1] > span:
            attention_mask = attention_mask[..., :span]
    n_rep = int(getattr(module, "num_key_value_groups", 1) or 1)
    b, h, q_len, _ = query.shape
    shared_mask = attention_mask is None or attention_mask.shape[1] == 1
    if (n_rep > 1 and q_len == 1 and shared_mask and kwargs.get("position_bias") is None
            and kwargs.get("softcap") is None):
        q = query.reshape(b, h // n_rep, n_rep, query.shape[-1])
        out = torch.nn.functional.scaled_dot_product_attention(
            q, key, value, attn_mask=attention_mask, dropout_p=0.0, scale=scaling)
        # (B, H_kv, n_rep, Dv) -> (B, H, 1, Dv) -> (B, 1, H, Dv), as the SDPA path returns
        return out.reshape(b, h, 1, value.shape[-1]).transpose(1, 2).contiguous(), None
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                  scaling=scaling, is_causal=is_causal, **kwargs)


def register_attention() -> None:
    """Make :data:`ATTENTION` an attention implementation transformers knows (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, packed_gqa_sdpa)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)


def exception_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes and contexts, outermost first (cycles cut)."""
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in out:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def is_oom(exc: BaseException) -> bool:
    """Whether out of memory is anywhere in the exception's cause chain.

    A failed CUDA-graph capture or an autotuning error wraps the OutOfMemoryError that
    caused it, so the top-level type alone misses it.
    """
    import torch

    return any(isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()
               for e in exception_chain(exc))


def is_compile_failure(exc: BaseException) -> bool:
    """Whether torch.compile (dynamo, inductor, Triton, the C compiler) failed, not the model."""
    names = ("BackendCompilerFailed", "InductorError", "TorchDynamoException",
             "CompilationError", "CalledProcessError")
    for e in exception_chain(exc):
        mod = type(e).__module__ or ""
        if type(e).__name__ in names or mod.startswith(("torch._dynamo", "torch._inductor",
                                                         "triton")):
            return True
    return False


def graphs_compiled() -> int:
    """Graphs dynamo has compiled in this process (never reset, ``torch._dynamo.reset``
    included): a count that rises during a measured call means a compile in a window."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


class _CaptureCounter:
    """Counts CUDA-graph captures (``torch.cuda.CUDAGraph.capture_begin``) in this process.

    Installed once, on a GPU only: cudagraph trees record through that method, so a count
    that rises during a measured call means a graph was recorded inside a window.
    """

    count = 0
    installed = False

    @classmethod
    def install(cls) -> None:
        if cls.installed:
            return
        import torch

        graph_cls = torch.cuda.CUDAGraph
        original = graph_cls.capture_begin

        def capture_begin(self: Any, *args: Any, **kwargs: Any) -> Any:
            cls.count += 1
            return original(self, *args, **kwargs)

        graph_cls.capture_begin = capture_begin  # type: ignore[method-assign]
        cls.installed = True


class HfWorkload:
    """The reference engine: PyTorch + Hugging Face transformers ``generate``.

    On a GPU with ``compile``: one static KV cache per shape group (batch, input and
    output length), exactly ``input_len + output_len`` long and passed to every call of
    the group, so the compiled decode step and its CUDA graphs are recorded once, in
    warm-up, and replayed inside windows; decode attention keeps GQA packed and attends
    over the current context rounded up to ``attention_bucket`` positions, one graph per
    bucket, all compiled in warm-up (:func:`packed_gqa_sdpa`); MoE decode keeps
    ``grouped_mm`` (transformers would switch it to ``batched_mm``, which copies each
    chosen expert's weights per token). A compile failure falls back to eager, and says
    so in :meth:`describe`.

    Args:
        spec: the model (``bench.models.ModelSpec``).
        dtype: fp32 | bf16 | fp16.
        torch_device: where the model runs (``cpu``, ``cuda:0``).
        seed: seed of the random weights and the prompts.
        compile: on CUDA, a static cache and torch.compile.
        num_devices: GPUs the model is placed over (``--gpus-per-cell``): with more than
            one, ``device_map="auto"`` within each GPU's ``max_memory``, eager (no
            compile), and labelled so in :meth:`describe`.
    """

    engine = "hf"

    def __init__(self, spec: Any, dtype: str, torch_device: str, seed: int = 0,
                 compile: bool = True, num_devices: int = 1) -> None:
        self.spec = spec
        self.num_devices = num_devices
        self.max_memory: dict[int, int] | None = None
        self.device_map: dict[str, Any] | None = None
        self.dtype = dtype
        self.torch_device = torch_device
        self.seed = seed
        self.compile = compile
        self.model: Any = None
        self._prompts: dict[tuple[int, int], Any] = {}
        self._cache: Any = None
        self._cache_shape: Shape | None = None
        self._compile_failed: str | None = None
        self._captures_in_calls = 0
        self._cell_shape: Shape | None = None
        self._captures_in_warm_up = 0
        # Decode attends over the current context rounded up to this many positions
        # (grown per shape group to at most MAX_BUCKETS graphs); None: the whole cache.
        self.attention_bucket: int | None = ATTENTION_BUCKET
        self._bucket: int | None = None
        self._spans: list[int] = []
        self._compiles_in_calls = 0
        self._compiles_in_warm_up = 0
        # Tests set these to run the compiled path on the CPU (backend "eager").
        self._compile_all_devices = False
        self._compile_backend = "inductor"

    @property
    def compiled(self) -> bool:
        """Whether decode is compiled: asked for, on a GPU (or forced), and not failed."""
        where = self.torch_device.startswith("cuda") or self._compile_all_devices
        return self.compile and where and self._compile_failed is None and \
            self.num_devices == 1

    def placement(self) -> tuple[dict[int, int], Any]:
        """``max_memory`` per GPU and the torch device of GPU i, for a multi-GPU model.

        On GPUs: what each can give (free plus PyTorch's cached blocks). On the CPU (tests
        with stand-in GPUs): the weights' share per device with half again as headroom,
        every block then allocated on the CPU.
        """
        n = self.num_devices
        if self.torch_device.startswith("cuda"):
            from bench import models

            free = [gpu_free_bytes(f"cuda:{i}") for i in range(n)]
            return models.max_memory_per_gpu(free), None
        from bench.models import arithmetic

        share = arithmetic.of(self.spec, self.dtype).weight_bytes / n
        return {i: int(share * 1.5) + 1 for i in range(n)}, (lambda i: self.torch_device)

    def prepare(self) -> None:
        from bench import models

        if self.num_devices > 1:
            self.max_memory, device_of = self.placement()
            self.model, self.device_map = models.build_over(
                self.spec, self.dtype, self.max_memory, self.seed, device_of)
            prepare(self.model, self.torch_device, False)
            return
        self.model = models.build(self.spec, self.dtype, self.torch_device, self.seed)
        prepare(self.model, self.torch_device, self.compiled)
        if not self.compiled:
            return
        from transformers import CompileConfig

        register_attention()
        self.model.set_attn_implementation(ATTENTION)
        # Static shapes: dynamo is reset per shape group (cache_for), so no dimension is
        # ever marked dynamic and the recompile limit (8) is never reached.
        cc = CompileConfig(fullgraph=False, dynamic=False, backend=self._compile_backend)
        if self._compile_backend != "inductor":
            cc.mode = None  # type: ignore[assignment]  # other backends take no mode
        if self._compile_all_devices:
            cc._compile_all_devices = True  # type: ignore[assignment]
        self.model.generation_config.compile_config = cc
        # generate() would swap grouped_mm for batched_mm during decode on a GPU: the
        # latter gathers a copy of each selected expert's weights per (token, expert)
        # pair, gigabytes per layer at batch 64 and more. Keep the implementation the
        # model was built with.
        if hasattr(self.model, "_optimize_model_for_decode"):
            import contextlib

            self.model._optimize_model_for_decode = contextlib.nullcontext
        if self.torch_device.startswith("cuda"):
            _CaptureCounter.install()

    def _ids(self, shape: Shape) -> torch.Tensor:
        key = (shape.batch_size, shape.input_len)
        if key not in self._prompts:
            self._prompts = {key: make_prompts(shape, self.spec.config["vocab_size"],
                                               self.seed, self.torch_device)}
        return self._prompts[key]

    def cache_for(self, shape: Shape) -> Any:
        """The shape's persistent static cache (compiled only; else None).

        Exactly ``input_len + output_len`` long: decode attention spans the cache, so a
        longer one (transformers keeps the longest it has seen) would do more work than
        the cell's own lengths need. One cache at a time: a new shape frees the last.
        """
        if not self.compiled:
            return None
        if self._cache_shape != shape:
            from transformers import StaticCache

            self._cache = None  # free the previous group's cache before allocating
            self._reset_compiled()
            self._cache = StaticCache(config=self.model.config,
                                      max_cache_len=shape.input_len + shape.output_len)
            self._cache_shape = shape
            self._bucket, self._spans = None, []
            if self.attention_bucket is not None:
                import torch

                self._bucket = attention_bucket(shape, self.attention_bucket)
                self._spans = decode_spans(shape, self._bucket)
                # one graph per bucket, each a recompile of the same frames: stay under
                # the limit, past which dynamo would quietly run the step eagerly
                cfg = torch._dynamo.config
                cfg.recompile_limit = max(cfg.recompile_limit, len(self._spans) + 2)
        return self._cache

    def start_cell(self) -> None:
        """Begin a new cell: release the last cell's cache and graphs (the worker calls
        this before the cell's memory check, which would otherwise count them as in use)
        and restart the per-cell records (graph captures, peak memory, the cell's shape)."""
        if self._cache is not None:
            self._cache, self._cache_shape = None, None
            self._reset_compiled()
        self._cell_shape = None
        self._captures_in_calls = self._captures_in_warm_up = 0
        self._compiles_in_calls = self._compiles_in_warm_up = 0
        if self.torch_device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats(self.torch_device)

    def _reset_compiled(self) -> None:
        """Drop compiled code and CUDA graphs: a new shape group records its own."""
        import torch

        torch._dynamo.reset()
        for attr in ("_compiled_call", "_last_compile_config", "_previous_max_cache_length"):
            if self.model is not None and attr in vars(self.model):
                delattr(self.model, attr)

    def _generate(self, shape: Shape, synced_mark: bool = False) -> CallResult:
        if self._cell_shape is None:
            self._cell_shape = shape  # the cell's own shape (its prefill-only one comes later)
        try:
            cache = self.cache_for(shape)
            return generate_exact(self.model, self._ids(shape), shape.output_len, cache,
                                  synced_mark, self._bucket if cache is not None else None)
        except Exception as exc:
            if not self.compiled or is_oom(exc) or not is_compile_failure(exc):
                raise
            why = exception_chain(exc)[-1]
            self._compile_failed = f"{type(why).__name__}: {str(why).splitlines()[0][:200]}" \
                if str(why) else type(why).__name__
        # compile failed: eager from now on, with a dynamic cache, and labelled so
        self._cache, self._cache_shape, self._bucket, self._spans = None, None, None, []
        self._reset_compiled()
        self.model.generation_config.disable_compile = True
        return generate_exact(self.model, self._ids(shape), shape.output_len, None, synced_mark)

    def warm_up(self, shape: Shape, calls: int) -> None:
        before, compiled_before = _CaptureCounter.count, graphs_compiled()
        for _ in range(calls):
            self._generate(shape)
        self._captures_in_warm_up += _CaptureCounter.count - before
        self._compiles_in_warm_up += graphs_compiled() - compiled_before

    def call(self, shape: Shape) -> CallResult:
        before, compiled_before = _CaptureCounter.count, graphs_compiled()
        # On CUDA the first-token mark synchronises the device once per call (at the
        # first token only), so TTFT and the timeline split mean prefill's end, not the
        # moment its kernels were queued.
        result = self._generate(shape, synced_mark=True)
        self._captures_in_calls += _CaptureCounter.count - before
        self._compiles_in_calls += graphs_compiled() - compiled_before
        return result

    def first_token_marks(self, shape: Shape) -> tuple[CallResult, CallResult]:
        """One call with the unsynced first-token mark and one with a synced mark."""
        return self._generate(shape), self._generate(shape, synced_mark=True)

    def describe(self) -> dict[str, Any]:
        from importlib import metadata

        cfg: Any = getattr(self.model, "config", None)
        experts = None
        if self.model is not None and hasattr(self.model, "get_experts_implementation") and \
                (getattr(cfg, "num_experts", None) or getattr(cfg, "num_local_experts", None)):
            experts = self.model.get_experts_implementation().get("")
        compiled = self.compiled
        shape = self._cell_shape
        # the cell's own bucket and decode lengths (one graph each), whatever ran last
        bucket = attention_bucket(shape, self.attention_bucket) \
            if compiled and shape and self.attention_bucket is not None else None
        return {"name": self.engine, "version": metadata.version("transformers"),
                "torch": metadata.version("torch"), "compiled": compiled,
                "mode": "compiled" if compiled else
                ("eager (compile failed)" if self._compile_failed else
                 f"eager (device_map over {self.num_devices} GPUs, no compile)"
                 if self.num_devices > 1 else "eager"),
                "num_devices": self.num_devices,
                "device_map": "auto" if self.num_devices > 1 else None,
                "max_memory_bytes": {str(k): v for k, v in self.max_memory.items()}
                if self.max_memory else None,
                "blocks_per_device": _blocks_per_device(self.device_map),
                "compile_error": self._compile_failed,
                "cache": "static" if compiled else "dynamic",
                "cache_len": shape.input_len + shape.output_len if compiled and shape
                else None,
                "attention": getattr(cfg, "_attn_implementation", None),
                "attention_span": self._attention_span(bucket),
                "attention_bucket": bucket,
                "attention_buckets": decode_spans(shape, bucket) if shape and bucket else None,
                "experts": experts,
                "cuda_graphs": bool(compiled and self.torch_device.startswith("cuda")),
                "graph_captures_in_warm_up": self._captures_in_warm_up,
                "graph_captures_in_windows": self._captures_in_calls,
                "graphs_compiled_in_warm_up": self._compiles_in_warm_up,
                "graphs_compiled_in_windows": self._compiles_in_calls,
                "peak_memory_bytes": self._peak_memory_bytes()}

    def _attention_span(self, bucket: int | None) -> str:
        """What decode attends over: the whole static cache, or the current context."""
        if not self.compiled:
            return "current context"  # the dynamic cache holds exactly the context
        if self.attention_bucket is None:
            return "full static cache"
        return f"current context, bucketed by {bucket or self.attention_bucket}"

    def _peak_memory_bytes(self) -> int | None:
        """Most memory PyTorch's tensors held on the GPU since the cell began."""
        if not self.torch_device.startswith("cuda"):
            return None
        import torch

        if self.num_devices > 1:
            return sum(int(torch.cuda.max_memory_allocated(f"cuda:{i}"))
                       for i in range(self.num_devices))
        return int(torch.cuda.max_memory_allocated(self.torch_device))

    def close(self) -> None:
        """Drop the model, its cache, compiled code and graphs (the caller frees memory)."""
        if self.model is not None:
            self._reset_compiled()
        self._cache, self._cache_shape = None, None
        self.model = None
        self._prompts = {}


def gpu_free_bytes(torch_device: str) -> float:
    """Free memory of one GPU plus PyTorch's cached, unused blocks there."""
    import torch

    free, _ = torch.cuda.mem_get_info(torch_device)
    cached = torch.cuda.memory_reserved(torch_device) - torch.cuda.memory_allocated(torch_device)
    return float(free + max(cached, 0))


def _blocks_per_device(device_map: dict[str, Any] | None) -> dict[str, int] | None:
    """How many of the model's placed blocks each GPU holds (``{"0": 9, "1": 8}``)."""
    if not device_map:
        return None
    out: dict[str, int] = {}
    for v in device_map.values():
        out[str(v)] = out.get(str(v), 0) + 1
    return out


# Engines beyond hf: name -> the module whose ``make_workload`` builds it.
PLUGGED_ENGINES = {"vllm": "bench.engines.vllm"}


def make_workload(engine: str, spec: Any, dtype: str, torch_device: str, seed: int = 0,
                  compile: bool = True, sweep: Any = None) -> Workload:
    """The workload of ``engine`` for one model on one device (not prepared yet).

    ``sweep`` (the resolved ``SweepConfig``) sizes engines that are built once for all of
    a model's cells (vllm: its largest batch and sequence).

    Raises:
        BenchError: an engine this harness does not have.
    """
    if engine == "hf":
        return HfWorkload(spec, dtype, torch_device, seed, compile,
                          num_devices=int(getattr(sweep, "gpus_per_cell", 1) or 1))
    if engine in PLUGGED_ENGINES:
        import importlib

        # Plugged by module name: the engine depends on this interface, never the reverse.
        module = importlib.import_module(PLUGGED_ENGINES[engine])
        return module.make_workload(spec, dtype, torch_device, seed, compile, sweep)
    from bench.errors import BenchError

    raise BenchError(f"unknown engine {engine!r}")
