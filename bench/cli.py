"""The ``bench`` command line: parsing and printing only; the work is in library functions."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import bench
from bench.errors import BenchError


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit 2."""

    def error(self, message: str):
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def _int_list(text: str) -> tuple[int, ...]:
    parts = [p.strip() for p in text.split(",")]
    if any(p == "" for p in parts):
        raise argparse.ArgumentTypeError(
            f"{text!r}: an empty item; give integers separated by single commas")
    try:
        vals = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers") from None
    if any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"{text!r}: every value must be 1 or more")
    return vals


def _float_list(text: str) -> tuple[float, ...]:
    """Comma-separated numbers (ranges are the library's to check)."""
    try:
        return tuple(float(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of numbers") from None


def _str_list(text: str) -> tuple[str, ...]:
    parts = [p.strip() for p in text.split(",")]
    if any(p == "" for p in parts):
        raise argparse.ArgumentTypeError(
            f"{text!r}: an empty item; give names separated by single commas")
    return tuple(parts)


def _gpus_per_cell(text: str) -> int | str:
    return "auto" if text.strip().lower() == "auto" else _positive_int(text)


def _int_at_least(text: str, least: int) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < least:
        raise argparse.ArgumentTypeError(f"{text!r} must be {least} or more")
    return v


def _positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return v


def _number(text: str) -> float:
    """A number; its range is the library's to check."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _count(text: str) -> int:
    return _int_at_least(text, 0)


def _gpu(text: str) -> str | list[int]:
    """``--gpu``, parsed once here: all | auto | none | a list of NVML indices."""
    from bench.devices import parse_gpu_spec

    try:
        return parse_gpu_spec(text)
    except BenchError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (every command has help text)."""
    p = _Parser(prog="bench", description="joulebench: tokens per joule of transformer "
                "inference, measured, and what the electricity is worth.")
    p.add_argument("--version", action="version", version=f"joulebench {bench.__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    r = sub.add_parser("run", help="run the sweep and measure tokens per joule per cell",
                       description="Run reference inference over models x batch sizes x "
                       "lengths on the chosen devices and measure energy per cell.")
    r.add_argument("--gpu", type=_gpu, default="auto",
                   help="all | auto (default: every GPU, else the CPU) | none | NVML "
                   "indices such as 0,2")
    r.add_argument("--config", default=None, metavar="TOML",
                   help="sweep file (TOML); flags given here override its values")
    r.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue a run from its journal: only the missing cells")
    r.add_argument("--model", type=_str_list, default=None,
                   help="built-in model names or model JSON files, comma-separated "
                   "(default tiny-llama)")
    r.add_argument("--weights", default=None, metavar="PATH",
                   help="a local Hugging Face checkpoint folder to load instead of random "
                   "weights (nothing is downloaded)")
    r.add_argument("--batch", type=_int_list, default=None,
                   help="batch sizes, comma-separated (default 1,4,16)")
    r.add_argument("--input-len", type=_int_list, default=None,
                   help="prompt lengths in tokens (default 32)")
    r.add_argument("--output-len", type=_int_list, default=None,
                   help="generated tokens per sequence, exact (default 32)")
    r.add_argument("--dtype", choices=("fp32", "bf16", "fp16", "fp8"), default=None,
                   help="weights and activations (default bf16 on GPU, fp32 on CPU; fp8: "
                   "engine vllm on Hopper or newer)")
    r.add_argument("--min-window-s", type=_positive_float, default=None,
                   help="minimum measured window per repeat, s (default 5 on GPU, 2 on CPU)")
    r.add_argument("--repeats", type=_count, default=None,
                   help="windows per cell (default 3)")
    r.add_argument("--warmup", type=_count, default=None,
                   help="unmeasured generate calls before a cell (default 1; 2 when "
                   "compiling on a GPU)")
    r.add_argument("--warmup-cap-s", type=_number, default=None,
                   help="on GPUs, warm-up calls go on until the sampled power is steady or "
                   "this many seconds have passed (default 30 on GPU; 0: the --warmup "
                   "calls only)")
    r.add_argument("--seed", type=_count, default=None,
                   help="seed of weights and prompts (default 0)")
    r.add_argument("--idle-s", type=_positive_float, default=None,
                   help="idle-baseline window per GPU before its cells, s (default 3)")
    r.add_argument("--no-compile", action="store_true",
                   help="on GPUs: eager decode with the dynamic cache instead of a static "
                   "cache and torch.compile")
    r.add_argument("--cpu-w-per-thread", type=_positive_float, default=None,
                   help="assumed W per busy logical CPU for the CPU estimate where RAPL "
                   "is unreadable (default 4)")
    r.add_argument("--out", default=None,
                   help="run directory (default results/<run_id>)")
    r.add_argument("--node-power", default=None, metavar="URL",
                   help="the node's BMC for the node scope: redfish://BMC[:PORT][/CHASSIS] "
                   "or ipmi://[BMC[:PORT]] (credentials from BMC_USERNAME/BMC_PASSWORD or "
                   "--bmc-credentials; one device per run)")
    r.add_argument("--bmc-insecure", action="store_true",
                   help="do not verify the BMC's TLS certificate (most are self-signed)")
    r.add_argument("--bmc-ca-file", default=None, metavar="PEM",
                   help="CA bundle to verify the BMC's certificate with")
    r.add_argument("--bmc-credentials", default=None, metavar="FILE",
                   help="TOML file with the BMC's username and password (mode 600)")
    r.add_argument("--json", action="store_true",
                   help="end stdout with one JSON line: run_id, result path and cells")
    r.add_argument("--no-phases", action="store_true",
                   help="skip the prefill-only window (no subtraction-method phases)")
    r.add_argument("--report", action="store_true",
                   help="write the HTML report into RUN_DIR/report at the end")
    r.add_argument("--quiet", action="store_true", help="no per-cell progress lines")
    r.add_argument("--engine", choices=("hf", "vllm"), default=None,
                   help="what generates the tokens: hf (reference, default) or vllm (dummy "
                   "weights in the device worker); --endpoint measures a server instead")
    r.add_argument("--gpus-per-cell", type=_gpus_per_cell, default=None, metavar="N",
                   help="GPUs that run one cell together, in index order (default 1; auto: "
                   "the fewest that hold the weights): hf "
                   "places the model over them (device_map, eager), vllm runs tensor "
                   "parallel N; the cell's energy is their sum, each GPU's kept")
    r.add_argument("--gpu-memory-utilization", type=_positive_float, default=None,
                   help="engine vllm: fraction of the device's memory vLLM may take (on the "
                   "CPU backend: host memory for the KV cache; default 0.1 there, 0.9 on GPUs)")
    r.add_argument("--endpoint", default=None, metavar="URL",
                   help="measure an OpenAI-compatible server at URL (http://HOST:PORT/v1) "
                   "under closed-loop load; --model is the served model's name")
    r.add_argument("--concurrency", type=_int_list, default=None,
                   help="with --endpoint: requests in flight, comma-separated (the batch "
                   "axis; default 1,4,16)")
    r.add_argument("--serve-cmd", default=None, metavar="CMD",
                   help="with --endpoint: start the server with CMD, wait until it answers, "
                   "stop it at the end (SIGTERM, then SIGKILL)")
    r.add_argument("--request-timeout-s", type=_positive_float, default=None,
                   help="with --endpoint: longest wait for a stream's next chunk, s "
                   "(default 120)")
    # issue 15: the power-limit axis (sets the GPU's limit for the run; needs root)
    r.add_argument("--power-limit-w", type=_float_list, default=None, metavar="W[,W...]",
                   help="sweep the GPUs' power limit over these values, W (needs root; "
                   "the original limit is put back however the run ends)")
    r.add_argument("--power-limit-frac", type=_float_list, default=None, metavar="F[,F...]",
                   help="the same axis as fractions of each GPU's default power limit")
    r.add_argument("--cluster", default=None, metavar="ADDRESS",
                   help="run on a Ray cluster, one actor per GPU: local (start Ray here), "
                   "auto (the cluster in RAY_ADDRESS) or ray://HOST:PORT; --gpu takes the "
                   "cluster-wide indices of bench list devices --cluster")
    r.add_argument("--spread", action="store_true",
                   help="with --cluster: each cell once per GPU model, spread over that "
                   "model's GPUs across nodes (instead of on every GPU)")
    r.set_defaults(func=cmd_run)

    me = sub.add_parser("measure", help="measure the GPU and CPU energy of any command",
                        description="Run a command and measure GPU energy (NVML, sampled "
                        "by the numba loop) and CPU energy over its whole life. The exit "
                        "code is the command's.")
    me.add_argument("--gpu", type=_gpu, default="all",
                    help="all (default) | none | NVML indices such as 0,1")
    me.add_argument("--rate-hz", type=_positive_float, default=1000.0,
                    help="samples per second per GPU (default 1000)")
    me.add_argument("--cpu-w-per-thread", type=_positive_float, default=None,
                    help="assumed W per busy logical CPU where RAPL is unreadable (default 4)")
    me.add_argument("--json", action="store_true",
                    help="end stdout with one JSON object of the measurement")
    me.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]",
                    help="the command to run, after --")
    me.set_defaults(func=cmd_measure)

    pr = sub.add_parser("probe", help="what each GPU's power sensors can resolve",
                        description="Per GPU: supported readings, NVML call latency "
                        "(p50/p99), and the update periods of the energy counter and "
                        "the power fields, sampled at 1 kHz.")
    pr.add_argument("--gpu", type=_gpu, default="all",
                    help="all (default) | NVML indices such as 0,1")
    pr.add_argument("--duration-s", type=_positive_float, default=1.5,
                    help="sampling time per reading (default 1.5)")
    pr.add_argument("--json", action="store_true", help="end stdout with one JSON object")
    pr.add_argument("--cluster", default=None, metavar="ADDRESS",
                    help="probe every node of a Ray cluster: local, auto or ray://HOST:PORT")
    pr.set_defaults(func=cmd_probe)

    va = sub.add_parser("validate", help="check result documents with named rules",
                        description="Recompute and check result documents (files or run "
                        "directories): schema, hashes, figures, trace, physics, provenance, "
                        "estimates. Each rule prints PASS or FAIL with the reason; exit 1 on "
                        "any failure.")
    va.add_argument("paths", nargs="+", help="result.json files or run directories")
    va.set_defaults(func=cmd_validate)

    sm = sub.add_parser("submit", help="validate a run and file it as a vendor submission",
                        description="Validate RUN_DIR, then copy it to "
                        "DEST/<vendor>/<system>/<run_id>/ with a manifest of SHA-256 sums "
                        "and, with --key, an ed25519 signature.")
    sm.add_argument("run_dir", help="the run directory")
    sm.add_argument("--vendor", required=True, help="vendor name (letters, digits, . _ -)")
    sm.add_argument("--system", required=True, help="system name (letters, digits, . _ -)")
    sm.add_argument("--key", default=None,
                    help="ed25519 private key (PEM) to sign the manifest with")
    sm.add_argument("--dest", default="results/submissions",
                    help="submissions folder (default results/submissions)")
    sm.set_defaults(func=cmd_submit)

    cp = sub.add_parser("compare", help="two runs side by side per cell",
                        description="Compare run B against run A per cell; --fail sets a "
                        "threshold past which the exit code is 1.")
    cp.add_argument("a", help="baseline run (result.json or run directory)")
    cp.add_argument("b", help="run to compare")
    cp.add_argument("--fail", action="append", default=[], metavar="METRIC:PCT%",
                    help="fail when METRIC gets worse by more than PCT, e.g. tokens_per_j:5%%")
    cp.add_argument("--json", action="store_true", help="one JSON object on stdout")
    cp.set_defaults(func=cmd_compare)

    tb = sub.add_parser("table", help="the empirical table: one row per cell",
                        description="Collect result documents (files, run directories, "
                        "folders searched for result.json) and table files into one row "
                        "per cell with the documented columns.")
    tb.add_argument("paths", nargs="*", default=[],
                    help="result.json files, run directories, folders, .csv/.parquet "
                    "tables (default results/ where it exists)")
    tb.add_argument("--format", choices=("csv", "parquet", "json", "markdown"), default=None,
                    help="output format (default: from --out's extension, else csv)")
    tb.add_argument("--out", default=None, help="write to this file instead of stdout")
    tb.add_argument("--no-reference", action="store_true",
                    help="leave out the ML.ENERGY reference rows (results/reference/), which "
                    "are included by default")
    tb.set_defaults(func=cmd_table)

    im = sub.add_parser("import", help="convert published measurements into table rows",
                        description="Convert ML.ENERGY leaderboard model files into table "
                        "rows tagged source = external:ml.energy.")
    im.add_argument("origin", choices=("mlenergy",), help="the format of the files")
    im.add_argument("files", nargs="+", help="leaderboard model JSON files")
    im.add_argument("--out", default=None,
                    help="write here (format from the extension) instead of CSV on stdout")
    im.set_defaults(func=cmd_import)

    ec = sub.add_parser("econ", help="turn measured tokens/J into RMB per kWh and costs",
                        description="Revenue per kWh sold as tokens, the multiple over the "
                        "electricity price, electricity and all-in cost per million tokens, "
                        "margin and break-even price, per row of the table, under a scenario. "
                        "Actions: (none) the value table; check-claim: the 0.5 -> 10 RMB/kWh "
                        "claim; sensitivity: tornado and solar-efficiency curve; scenarios: "
                        "the built-in scenarios; optimize TABLE --scenario A --scenario B: "
                        "the (power limit, batch) of the best margin per GPU-hour and of the "
                        "most tokens per kWh.")
    ec.add_argument("args", nargs="*", metavar="[ACTION] [PATH...]",
                    help="optional action (check-claim, sensitivity, scenarios, optimize), "
                    "then result documents, run directories, folders or table files "
                    "(default results/)")
    ec.add_argument("--scenario", default=None, action="append",
                    help="built-in scenario name or a scenario TOML file (default "
                    "china-grid-reference); optimize takes several")
    ec.add_argument("--format", choices=("table", "csv", "json"), default="table",
                    help="table (default), csv or json (a list of row objects)")
    # Values are parsed here and checked in one place, the scenario (bench.econ.scenario).
    ec.add_argument("--price-rmb-per-mtok", type=_number, default=None,
                    help="one output-token price for every row (default: by model class from "
                    "the model's size)")
    ec.add_argument("--elec-rmb-per-kwh", type=_number, default=None,
                    help="electricity price override; on a scenario with an energy mix it "
                    "replaces the blended price (a note on stderr says so)")
    ec.add_argument("--pue", type=_number, default=None, help="PUE override (>= 1)")
    ec.add_argument("--gpu-share", type=_number, default=None,
                    help="GPU share of IT power override, in (0, 1]")
    ec.add_argument("--utilization", type=_number, default=None,
                    help="fraction of hours serving override, in (0, 1]")
    ec.add_argument("--cost-of-capital", type=_number, default=None,
                    help="cost of capital per year override (>= 0)")
    ec.add_argument("--years", type=_number, default=None,
                    help="depreciation life override (> 0)")
    ec.add_argument("--capex-rmb-per-gpu", type=_number, default=None,
                    help="server price per GPU override (default: by device name)")
    ec.add_argument("--fx", type=_number, default=None,
                    help="CNY per USD override")
    ec.add_argument("--no-reference", action="store_true",
                    help="leave out the ML.ENERGY reference rows (results/reference/), which "
                    "are included by default")
    ec.set_defaults(func=cmd_econ)

    rp = sub.add_parser("report", help="plots and a self-contained HTML report",
                        description="Write report.html (images inline, no network) and the "
                        "PNGs: tokens/J against batch, a power timeline with phase marks, "
                        "the Pareto front, RMB per kWh against the electricity price, and "
                        "the fraction of the energy roofline.")
    rp.add_argument("paths", nargs="*", default=["results"],
                    help="run directories, result.json files or folders (default results/)")
    rp.add_argument("--out", default="report", help="output folder (default report/)")
    rp.add_argument("--scenario", default="china-grid-reference",
                    help="economics scenario for the RMB per kWh plot")
    rp.add_argument("--with", dest="extra", action="append", default=[], metavar="TABLE",
                    help="a table file (e.g. bench import output) drawn as published points")
    rp.set_defaults(func=cmd_report)

    lb = sub.add_parser("leaderboard", help="a static site comparing vendor submissions",
                        description="Check every submission under SUBMISSIONS_DIR/<vendor>/"
                        "<system>/<run>/ (bench validate's rules, the signature's key "
                        "fingerprint), write a report per system and an index ranking systems "
                        "on the same model and lengths; failing submissions are listed with "
                        "their rule and reason, never ranked.")
    lb.add_argument("submissions", metavar="SUBMISSIONS_DIR",
                    help="folder of submissions (as bench submit writes them)")
    lb.add_argument("--out", required=True, metavar="SITE_DIR",
                    help="output folder for index.html and the system pages")
    lb.add_argument("--scenario", default="china-grid-reference",
                    help="economics scenario for RMB per kWh")
    lb.add_argument("--with", dest="extra", action="append", default=[], metavar="TABLE",
                    help="a table file (e.g. bench import output) shown as reference points")
    lb.set_defaults(func=cmd_leaderboard)

    ls = sub.add_parser("list", help="list built-in models or the devices of this machine",
                        description="List built-in models (with parameter counts) or "
                        "the devices a run can use.")
    ls.add_argument("what", nargs="?", choices=("models", "devices"), default=None,
                    help="models or devices (default both)")
    ls.add_argument("--json", action="store_true", help="one JSON object on stdout")
    ls.add_argument("--batch", type=_int_list, default=(1, 64),
                    help="batch sizes for the memory column (default 1,64)")
    ls.add_argument("--input-len", type=int, default=512,
                    help="prompt length for the memory column (default 512)")
    ls.add_argument("--output-len", type=int, default=256,
                    help="output length for the memory column (default 256)")
    ls.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="bf16",
                    help="dtype for bytes and memory (default bf16)")
    ls.add_argument("--cluster", default=None, metavar="ADDRESS",
                    help="the devices of every node of a Ray cluster: local, auto or "
                    "ray://HOST:PORT")
    ls.set_defaults(func=cmd_list)

    # issue 15: put back power limits a killed run left
    rs = sub.add_parser("restore-power", help="put back GPU power limits a killed run left",
                        description="A run with --power-limit-w/--power-limit-frac records "
                        "each GPU's original limit before changing it; after a SIGKILL this "
                        "puts it back (bench run and bench run --resume also do).")
    rs.add_argument("run_dir", nargs="?", default=None, metavar="RUN_DIR",
                    help="the run whose limits to put back (default: every GPU a killed "
                    "run left changed)")
    rs.set_defaults(func=cmd_restore_power)
    return p


def _err(prog: str, message: str) -> None:
    sys.stderr.write(f"{prog}: error: {message}\n")


def _sweep_flags(args: argparse.Namespace) -> dict:
    """The sweep settings given as flags (None: not given), by SweepConfig field."""
    if args.weights and args.model:
        raise BenchError("--weights names the model; leave out --model")
    if args.endpoint is None:
        for flag, v in (("--concurrency", args.concurrency), ("--serve-cmd", args.serve_cmd),
                        ("--request-timeout-s", args.request_timeout_s)):
            if v is not None:
                raise BenchError(f"{flag} needs --endpoint")
    elif args.engine is not None or args.batch is not None:
        raise BenchError("--endpoint measures a server: give --concurrency, not "
                         f"{'--engine' if args.engine else '--batch'}")
    return {"models": (args.weights,) if args.weights else args.model,
            "engine": "endpoint" if args.endpoint else args.engine,
            "endpoint": args.endpoint, "serve_cmd": args.serve_cmd,
            "request_timeout_s": args.request_timeout_s,
            "gpu_memory_utilization": args.gpu_memory_utilization,
            "gpus_per_cell": args.gpus_per_cell,
            "batch_sizes": args.concurrency if args.endpoint else args.batch,
            "input_lens": args.input_len,
            "output_lens": args.output_len, "dtype": args.dtype,
            "min_window_s": args.min_window_s, "repeats": args.repeats,
            "warmup": args.warmup, "warmup_cap_s": args.warmup_cap_s, "seed": args.seed,
            "cpu_w_per_logical_cpu": args.cpu_w_per_thread, "idle_s": args.idle_s,
            "phases": False if args.no_phases else None,
            "compile": False if args.no_compile else None,
            "node_power": args.node_power, "bmc_insecure": True if args.bmc_insecure else None,
            "bmc_ca_file": args.bmc_ca_file, "bmc_credentials": args.bmc_credentials,
            "power_limit_w": args.power_limit_w, "power_limit_frac": args.power_limit_frac}


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: the finished cells are written, then exit 143."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def _journal_engine(run_dir: str) -> str | None:
    """The engine a run was configured with (its journal header), or None."""
    from bench.rundir import open_journal

    return open_journal(run_dir).config.engine


def cmd_run(args: argparse.Namespace) -> int:
    """``bench run``: measure the sweep, print the table, write the result document."""
    import signal

    from bench import console, runner
    from bench.sweep import SweepConfig

    if args.resume:
        given = [f for f, v in (
            ("--config", args.config), ("--model", args.model), ("--weights", args.weights),
            ("--batch", args.batch), ("--input-len", args.input_len),
            ("--output-len", args.output_len), ("--dtype", args.dtype),
            ("--min-window-s", args.min_window_s), ("--repeats", args.repeats),
            ("--out", args.out), ("--engine", args.engine), ("--endpoint", args.endpoint),
            ("--concurrency", args.concurrency), ("--serve-cmd", args.serve_cmd),
            ("--node-power", args.node_power), ("--power-limit-w", args.power_limit_w),
            ("--power-limit-frac", args.power_limit_frac),
            ("--gpus-per-cell", args.gpus_per_cell), ("--spread", args.spread or None))
            if v is not None]
        if given:
            raise BenchError(f"--resume continues the run as it was configured; drop "
                             f"{given[0]}")
    else:
        flags = _sweep_flags(args)
        if args.spread:
            if not args.cluster:
                raise BenchError("--spread needs --cluster")
            flags["spread"] = True
        config = SweepConfig.from_sources(flags, args.config)
    if args.cluster:
        from bench import cluster

        cluster.check_address(args.cluster)
        if (getattr(args, "gpus_per_cell", None) or 1) > 1:
            raise BenchError("--gpus-per-cell > 1 is not measured on a cluster yet; leave "
                             "it out with --cluster")
        cluster.require_ray()
    progress = None
    started: list = []

    def on_start(run, todo) -> None:
        nonlocal progress
        started.append(run)
        if not args.quiet:
            what = (f"resuming {run.run_id} in {run.run_dir} ({len(todo)} cells left)"
                    if args.resume else f"{run.run_id} -> {run.run_dir}")
            sys.stderr.write(f"bench run: {what}\n")
            progress = console.RunProgress(todo)
            progress.start()

    def on_event(rec: dict) -> None:
        if progress:
            progress.update(rec)

    def notice(line: str) -> None:
        sys.stderr.write(f"bench run: {line}\n")

    from bench.engines import endpoint

    if not args.resume and config.engine == "vllm":
        from bench.engines.vllm import check_available

        check_available()
    if args.resume and not args.cluster:
        from bench.rundir import open_journal

        if any(d.info.get("node") for d in open_journal(args.resume).devices):
            raise BenchError(f"{args.resume} ran on a Ray cluster: resume it with --cluster "
                             "ADDRESS")
    if args.resume:
        mode = endpoint if _journal_engine(args.resume) == "endpoint" else runner
    else:
        mode = endpoint if config.engine == "endpoint" else runner
    old = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if args.cluster and args.resume:
            outcome = cluster.resume(args.resume, args.cluster, on_start, on_event)
        elif args.cluster:
            outcome = cluster.run(config, args.cluster, args.gpu, args.out, on_start,
                                  on_event, notice)
        elif args.resume:
            outcome = mode.resume(args.resume, on_start, on_event,
                                  **({"on_notice": notice} if mode is runner else {}))
        else:
            outcome = mode.run(config, args.gpu, args.out, on_start, on_event, notice)
    except KeyboardInterrupt as exc:
        if progress:
            progress.stop()
        if not started:
            raise
        run = started[0]
        _err("bench run", f"interrupted; finished cells are in {run.result_path} "
             f"(bench run --resume {run.run_dir} goes on)")
        return 143 if isinstance(exc, _Terminated) else 130
    except runner.RunFailed as exc:  # the workload's failure: report it, keep what was measured
        if progress:
            progress.stop()
        _err("bench run", f"{exc}; finished cells are in {exc.result_path}")
        return 1
    finally:
        signal.signal(signal.SIGTERM, old)
    if progress:
        progress.stop()
    run = outcome.run
    if args.resume and outcome.measured == 0:
        print(f"nothing to resume: every cell of {run.run_dir} is measured")
        return 0
    console.print_table(console.cells_table(run.cells, title=f"run {run.run_id}"))
    if any(c.get("energy_method") == "estimate" for c in run.cells):
        print("energy_method 'estimate': CPU energy is assumed W per busy thread x CPU time, "
              "not measured (no readable RAPL counter).")
    print(f"result: {outcome.result_path}")
    if args.report:
        from bench.report import make_report

        print(f"report: {make_report([run.run_dir], run.run_dir / 'report')}")
    if args.json:
        print(json.dumps({"run_id": run.run_id, "result": str(outcome.result_path), "cells": [
            {k: c[k] for k in ("cell_id", "status", "energy_method", "scope", "figures")}
            for c in run.cells]}, allow_nan=False))
    return 0


def _fmt(x, unit: str = "", digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}g}{unit}"


def cmd_measure(args: argparse.Namespace) -> int:
    """``bench measure -- CMD``: energy of a command; exits with the command's code."""
    from bench.measure import measure_command

    argv = list(args.cmd)
    if argv and argv[0] == "--":
        argv = argv[1:]
    rep = measure_command(argv, gpu=args.gpu, rate_hz=args.rate_hz,
                          w_per_thread=args.cpu_w_per_thread,
                          notify=lambda line: sys.stderr.write(f"bench measure: {line}\n"))
    from bench import console

    console.print_table(console.measure_table(rep))
    if args.json:
        print(json.dumps(rep, allow_nan=False))
    code = rep["exit_code"]
    if code is None:
        return 1
    return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as shells do


def cmd_probe(args: argparse.Namespace) -> int:
    """``bench probe``: sensor facts per GPU."""
    from bench import devices
    from bench.probe import probe_gpu

    if args.cluster:
        from bench import cluster

        results = cluster.probe(args.cluster, args.gpu, args.duration_s)
    else:
        inv = devices.discover()
        if not inv.gpus:
            raise BenchError(f"no GPU to probe ({inv.gpu_reason})")
        gpus, _ = devices.select(args.gpu, inv)
        if any(g.kind != "cuda" for g in gpus):
            raise BenchError("bench probe needs GPUs; --gpu none has nothing to probe")
        results = [probe_gpu(g.gpu_index, duration_s=args.duration_s) for g in gpus]
    for r in results:
        sup = ", ".join(k for k, v in r["supported"].items() if v) or "nothing"
        where = f" on {r['node']['hostname']} ({r['node']['node_id'][:12]})" \
            if r.get("node") else ""
        print(f"gpu{r['index']} {r['name']}{where}: supports {sup}")
        print(f"  energy counter update period {_fmt(r['energy_counter_update_period_s'], ' s')}"
              f"; power instant {_fmt(r['power_instant_update_period_s'], ' s')}"
              f", average {_fmt(r['power_average_update_period_s'], ' s')}"
              f", usage {_fmt(r['power_usage_update_period_s'], ' s')}")
        print(f"  NVML call latency p50 {_fmt(r['call_latency_p50_us'], ' us')}, "
              f"p99 {_fmt(r['call_latency_p99_us'], ' us')}; sampled at "
              f"{_fmt(r['sample_rate_hz'], ' Hz')}")
    if args.json:
        print(json.dumps({"devices": results}, allow_nan=False))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """``bench validate``: every rule for every document; exit 1 on any failure.

    A path that names no document (missing, or a folder without result.json) is a usage
    error (exit 2); a document that is there but cannot be loaded fails rule ``load``.
    """
    from bench.results.load import resolve
    from bench.results.validate import validate

    for path in args.paths:
        resolve(path)  # load.Invalid is a BenchError: one line, exit 2
    failed = False
    for path in args.paths:
        print(f"{path}:")
        for check in validate(path):
            print(f"  {check.line()}")
            failed |= not check.ok
    return 1 if failed else 0


def cmd_submit(args: argparse.Namespace) -> int:
    """``bench submit``: validate and file a run."""
    from bench.results.submit import submit

    target = submit(args.run_dir, args.vendor, args.system, key=args.key, dest=args.dest)
    print(f"submitted: {target}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """``bench compare A B``: per-cell changes; exit 1 past a --fail threshold."""
    from bench.results import compare as C
    from bench.results.load import load_document

    thresholds = [C.parse_threshold(t) for t in args.fail]
    # load.Invalid is a BenchError; a document of the wrong shape is one too
    docs = [C.check_document(load_document(p)[0], p) for p in (args.a, args.b)]
    rows, warnings, failures = C.compare(docs[0], docs[1], thresholds)
    for w in warnings:
        sys.stderr.write(f"bench compare: warning: {w}\n")
    if args.json:
        print(json.dumps({"rows": rows, "warnings": warnings, "failures": failures},
                         allow_nan=False))
    else:
        print(f"{'cell':<44} {'tok/J A':>9} {'tok/J B':>9} {'change':>8} {'tok/s A':>9} "
              f"{'tok/s B':>9} {'change':>8}")
        for r in rows:
            a1, b1, c1 = r["output_tokens_per_j"]
            a2, b2, c2 = r["output_tokens_per_s"]
            print(f"{r['cell']:<44} {_fmt(a1):>9} {_fmt(b1):>9} "
                  f"{(f'{c1:+.1%}' if c1 is not None else r['in']):>8} {_fmt(a2):>9} "
                  f"{_fmt(b2):>9} {(f'{c2:+.1%}' if c2 is not None else '-'):>8}")
        for f in failures:
            print(f"FAIL {f}")
    return 1 if failures else 0


def cmd_table(args: argparse.Namespace) -> int:
    """``bench table``: the empirical table of result documents."""
    from bench.results import table

    fmt = table.format_for(args.out, args.format)
    df = table.load_table(_table_paths(args.paths, ["results"]),
                          include_reference=not args.no_reference)
    text = table.write_table(df, fmt, args.out)
    if text is not None:
        sys.stdout.write(text)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """``bench import mlenergy FILE...``: published rows in the table's columns."""
    from pathlib import Path

    import pandas as pd

    from bench.results import load, mlenergy, table

    rows = []
    for f in args.files:
        # the safe loader's caps first: size, depth, no NaN (load.Invalid, one line)
        load.loads_json(load.read_capped(Path(f), load.MAX_DOCUMENT_BYTES), f)
        try:
            rows.extend(mlenergy.rows_from_mlenergy(f))
        except mlenergy.NotTokens as exc:
            print(f"skipped {exc}", file=sys.stderr)
    df = pd.DataFrame(rows, columns=list(table.COLUMN_NAMES))
    text = table.write_table(df, table.format_for(args.out, None), args.out)
    if text is not None:
        sys.stdout.write(text)
    return 0


ECON_ACTIONS = ("check-claim", "sensitivity", "scenarios", "optimize")


def cmd_econ(args: argparse.Namespace) -> int:
    """``bench econ``: the economics of the measured (and imported) rows."""
    from bench import econ
    from bench.results import load_table

    rest = list(args.args)
    action = rest.pop(0) if rest and rest[0] in ECON_ACTIONS else None
    if action == "scenarios":
        for name in econ.builtin_names():
            sc = econ.load(name)
            print(f"{name}: {sc.description}")
            for k, p in sc.params.items():
                print(f"  {k} = {p.value:g} [{p.low:g}, {p.high:g}]  {p.source}")
            for cls, p in sc.prices.items():
                print(f"  price {cls} = {p.value:.4g} RMB/Mtok [{p.low:.4g}, {p.high:.4g}]  "
                      f"{p.source}")
            for m in sc.mix:
                print(f"  mix {m['source']}: share {m['share']:g}, {m['rmb_per_kwh']:.4g} RMB/kWh "
                      f"[{m['low_rmb_per_kwh']:.4g}, {m['high_rmb_per_kwh']:.4g}]")
        return 0
    names = args.scenario or [econ.DEFAULT_SCENARIO]
    if len(names) > 1 and action != "optimize":
        raise BenchError("one --scenario (several only with bench econ optimize)")
    sc = econ.load(names[0], fx_usd_cny=args.fx)
    overrides = {k: v for k, v in (
        ("elec_rmb_per_kwh", args.elec_rmb_per_kwh), ("pue", args.pue),
        ("gpu_share_of_it_power", args.gpu_share), ("utilization", args.utilization),
        ("cost_of_capital", args.cost_of_capital), ("depreciation_years", args.years))
        if v is not None}
    sc = sc.with_values(**overrides) if overrides else sc
    for note in sc.notes:
        print(note, file=sys.stderr)
    with_ref = not args.no_reference
    paths = _table_paths(rest, ["results"])
    if action == "check-claim":
        table = load_table(paths, include_reference=with_ref) if (rest or with_ref or
                                                                  _has_results(paths)) else None
        needed, rows = econ.check_claim(table if table is not None and len(table) else None,
                                        scenario=sc)
        a = needed.attrs
        print(f"claim: {a['grid_rmb_per_kwh']:g} RMB/kWh on the grid sells for "
              f"{a['target_rmb_per_kwh']:g} RMB/kWh as tokens ({a['multiple']:g}x); "
              f"source: {a['source']}")
        print(f"GPU energy brought to the meter as {a['basis']} ({sc.name})")
        _emit(needed, args.format)
        if rows is not None:
            _emit(rows, args.format)
        return 0
    if action == "optimize":  # issue 15: the operating point per scenario
        return _econ_optimize(args, names, overrides, paths)
    table = load_table(paths, include_reference=with_ref)
    if not len(table):
        raise BenchError(f"no rows in {' '.join(paths) or 'results/'}: run bench run or "
                         "bench import first")
    if action == "sensitivity":
        econ.value_per_kwh(table, sc, price_rmb_per_mtok=args.price_rmb_per_mtok)  # checks
        best = econ.sensitivity_row(table)
        print(f"row: {best['device_name']} {best['model']} batch {best['batch_size']} "
              f"({best['energy_method']}), scenario {sc.name}")
        for metric in ("allin_cost_rmb_per_mtok", "revenue_rmb_per_kwh"):
            t = econ.tornado(best, sc, metric, price_rmb_per_mtok=args.price_rmb_per_mtok)
            print(f"tornado of {metric} (base {t.attrs['base']})")
            _emit(t, args.format)
        if sc.solar_efficiency:
            print("solar cell efficiency: LCOE falls per point; cost per million tokens")
            _emit(econ.solar_curve(best, sc, price_rmb_per_mtok=args.price_rmb_per_mtok),
                  args.format)
        return 0
    v = econ.value_per_kwh(table, sc, price_rmb_per_mtok=args.price_rmb_per_mtok,
                           capex_rmb_per_gpu=args.capex_rmb_per_gpu)
    if args.format == "table":
        from bench import console

        console.print_table(console.econ_table(v, sc.name))
        if v["estimate"].any():
            print("rows marked estimate: their energy is an estimate, not a measurement.")
        node = v[v["meter_basis"] == "measured node"]
        if len(node):
            share = node["gpu_share_measured"].dropna()
            measured = (f"GPU share of node power measured {share.min():.2f}-{share.max():.2f}"
                        if len(share) else "no GPU share measured")
            print(f"{len(node)} rows brought to the meter with measured node energy x PUE "
                  f"{sc.value('pue'):g}; {measured}, assumed "
                  f"{sc.value('gpu_share_of_it_power'):g} for the others.")
    else:
        _emit(v, args.format)
    return 0


def _econ_optimize(args: argparse.Namespace, names: list[str], overrides: dict,
                   paths: list[str]) -> int:
    """``bench econ optimize TABLE --scenario A [--scenario B]``: per device and model,
    the (power limit, batch) of the best margin per GPU-hour and of the most tokens per kWh."""
    from bench import econ
    from bench.econ import optimize
    from bench.results import load_table

    table = load_table(paths, include_reference=False)  # imported rows set no limit
    if not len(table):
        raise BenchError(f"no rows in {' '.join(paths)}: run bench run first")
    scenarios = []
    for name in names:
        sc = econ.load(name, fx_usd_cny=args.fx)
        scenarios.append(sc.with_values(**overrides) if overrides else sc)
    points = optimize.operating_points(table, scenarios,
                                       price_rmb_per_mtok=args.price_rmb_per_mtok,
                                       capex_rmb_per_gpu=args.capex_rmb_per_gpu)
    if args.format == "table":
        for line in optimize.describe(points):
            print(line)
    else:
        _emit(points, args.format)
    return 0


def _has_results(paths) -> bool:
    from pathlib import Path

    return all(Path(p).exists() for p in paths)


def _table_paths(given: list[str], default: list[str]) -> list[str]:
    """The paths named, else the default ones that exist (a fresh clone may lack them)."""
    from pathlib import Path

    return list(given) if given else [p for p in default if Path(p).exists()]


def _emit(df, fmt: str) -> None:
    if fmt == "json":
        recs = json.loads(df.to_json(orient="records"))  # NaN -> null
        print(json.dumps(recs, allow_nan=False))
    elif fmt == "csv":
        sys.stdout.write(df.to_csv(index=False))
    else:
        print(df.to_string(index=False, float_format=lambda x: f"{x:.4g}"))


def cmd_report(args: argparse.Namespace) -> int:
    """``bench report``: plots and report.html."""
    from bench.report import make_report

    page = make_report(args.paths, args.out, args.scenario, args.extra)
    print(f"report: {page}")
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    """``bench leaderboard``: the static site over submissions."""
    from bench.report.leaderboard import build_site

    index, subs = build_site(args.submissions, args.out, args.scenario, args.extra)
    ok = sum(s.ok for s in subs)
    print(f"leaderboard: {index} ({ok} valid and ranked, {len(subs) - ok} failing)")
    for s in subs:
        if not s.ok:
            f = s.failing[0]
            print(f"  FAIL {s.vendor}/{s.system}/{s.run}: {f.rule}: {f.reason}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """``bench list``: built-in models and this machine's devices."""
    from bench import devices, models

    out: dict = {}
    if args.what in (None, "models"):
        out["models"] = [models.describe(name, args.dtype, args.batch, args.input_len,
                                         args.output_len) for name in models.builtin_names()]
    if args.what in (None, "devices") and args.cluster:
        from bench import cluster

        out.update(cluster.list_devices(args.cluster))
        out["gpu_reason"] = None
    elif args.what in (None, "devices"):
        inv = devices.discover()
        out["devices"] = [d.to_dict() for d in (*inv.gpus, inv.cpu)]
        out["gpu_reason"] = inv.gpu_reason
        out["skipped"] = list(inv.skipped)  # GPUs that exist but cannot be measured
    if args.json:
        print(json.dumps(out, allow_nan=False))
        return 0
    if out.get("models"):
        mem_cols = list(out["models"][0]["memory_bytes"])
        print(f"{'model':<16} {'type':<10} {'params':>9} {'active':>9} {'layers':>6} "
              f"{'GFLOP/tok':>9} {'weights GB':>10} {'KV KB/tok':>9} "
              + " ".join(f"{'mem GB b' + b:>10}" for b in mem_cols)
              + f"   ({args.dtype}, {args.input_len} in / {args.output_len} out)")
        for m in out["models"]:
            print(f"{m['name']:<16} {m['model_type']:<10} {m['parameters'] / 1e9:8.3g}B "
                  f"{m['active_parameters'] / 1e9:8.3g}B {m['layers']:>6} "
                  f"{m['decode_flops_per_token'] / 1e9:9.3g} {m['weight_bytes'] / 1e9:10.3g} "
                  f"{m['kv_bytes_per_token'] / 1e3:9.4g} "
                  + " ".join(f"{m['memory_bytes'][b] / 1e9:10.3g}" for b in mem_cols))
    for d in out.get("devices", []):
        label = f"gpu{d['index']}" if d["kind"] == "cuda" else "cpu"
        node = d.get("node")
        where = (f"  node {node['hostname']} ({node['node_id'][:12]}) NVML {d['nvml_index']}"
                 f" {d['uuid']}") if node else ""
        print(f"device {label:<16} {d['name']}{where}")
    for line in out.get("skipped", []):
        print(f"skipped {line}")
    if "devices" in out and out["gpu_reason"]:
        print(f"(no GPU: {out['gpu_reason']})")
    return 0


def cmd_restore_power(args: argparse.Namespace) -> int:
    """``bench restore-power [RUN_DIR]``: put back the power limits a killed run left."""
    from bench import powerlimit, runner
    from bench.devices import Device

    if args.run_dir is not None:
        devs = [Device("cuda", int(e["index"]), "", e.get("uuid"))
                for e in powerlimit.saved_entries(args.run_dir)]
        if not devs:
            print(f"{args.run_dir}: no power limit to put back")
            return 0
        with runner.GpuLock(devs):
            lines = powerlimit.restore(args.run_dir)
    else:
        with runner.GpuLock(powerlimit.stale_devices()):
            lines = powerlimit.restore_stale(None)
    for line in lines:
        print(line)
    if not lines:
        print("no power limit to put back")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 failure, 2 usage error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except BenchError as exc:
        _err(f"bench {args.command}", str(exc))
        return 2
    except BrokenPipeError:  # the reader went away (bench list | head): nothing to report
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
