"""`chipfit serve MODEL --device D [--chips N] [--tp T] [--pp P] ...`: a language model's serving on one
deployment, simulated (chipfit.serve). The workload flags are shared with `plan --serve`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from rich.table import Table

from chipfit.cli.common import CliError, console, emit_json, positive
from chipfit.cli.model_args import add_device_file_arg
from chipfit.cli.price_args import add_price_args, resolve_pricing

__all__ = ["SERVE_ONLY", "add_parsers", "add_workload_args", "cmd_plan_serve", "resolve_llm", "resolve_workload"]

# plan's flags that belong to --serve (given without it: an error), and plan's own that do not apply to it
SERVE_ONLY = ("config", "input_len", "output_len", "offline", "concurrency", "rate", "requests", "ttft_ms",
              "tpot_ms", "kv_precision")  # fmt: skip
NOT_WITH_SERVE = ("train", "batch_sizes", "quant", "eval_data", "max_accuracy_drop", "max_latency_ms", "input_shape")

DEFAULT_LEN = "1024"  # tokens in and out when not given (the TensorRT-LLM overview's 1000/1000 row, rounded)
DEFAULT_REQUESTS = {"offline": 1000, "concurrency": 500, "rate": 500}


def _positive(unit: str) -> Callable[[str], float]:
    """argparse type: a finite number > 0 of `unit`, else a one-line usage error naming it."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            v = -1.0
        if not v > 0 or v == float("inf"):
            raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of {unit}")
        return v

    return parse


_rate, _ms = _positive("requests per second"), _positive("milliseconds")


def add_workload_args(p: argparse.ArgumentParser) -> None:
    """The language model (a preset or --config) and the workload: lengths, arrivals, SLO, scheduler."""
    from chipfit.serve.step import KV_PRECISIONS

    p.add_argument("--config", metavar="FILE", help="a Hugging Face-style config.json instead of a built-in MODEL")
    p.add_argument("--input-len", metavar="N|uniform:LO:HI|normal:MEAN:STD",
                   help=f"prompt tokens per request: fixed, or drawn (seeded); default {DEFAULT_LEN}")  # fmt: skip
    p.add_argument("--output-len", metavar="N|uniform:LO:HI|normal:MEAN:STD",
                   help=f"output tokens per request: fixed, or drawn (seeded); default {DEFAULT_LEN}")  # fmt: skip
    how = p.add_mutually_exclusive_group()
    how.add_argument("--offline", action="store_true", help="every request queued at once: maximum throughput "
                     "(the default)")  # fmt: skip
    how.add_argument("--concurrency", type=positive, metavar="C", help="C clients, each sending its next request "
                     "when the last is answered")  # fmt: skip
    how.add_argument("--rate", type=_rate, metavar="R", help="Poisson arrivals at R requests/s")
    p.add_argument("--requests", type=positive, metavar="N",
                   help=f"requests simulated (default {DEFAULT_REQUESTS['offline']} offline, "
                   f"{DEFAULT_REQUESTS['rate']} online)")  # fmt: skip
    p.add_argument("--ttft-ms", type=_ms, metavar="X", help="objective: time to first token at p99")
    p.add_argument("--tpot-ms", type=_ms, metavar="Y", help="objective: time per output token at p99")
    p.add_argument("--kv-precision", default=None, choices=KV_PRECISIONS,
                   help="the KV cache's format (default: bf16; fp16 where the chip has no BF16)")  # fmt: skip
    p.add_argument("--token-budget", type=positive, default=8192, help="tokens an iteration runs (default 8192)")
    p.add_argument("--max-seqs", type=positive, default=256, help="sequences an iteration runs (default 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of the lengths' and arrivals' draws (default 0)")


def resolve_llm(args: argparse.Namespace) -> Any:
    from chipfit.serve import get_llm, load_config

    if args.config and args.model:
        raise CliError(f"give a built-in MODEL or --config, not both (got {args.model} and --config {args.config})")
    if args.config:
        return load_config(args.config)
    if not args.model:
        from chipfit.serve import llm_names

        raise CliError(f"name a language model or give --config FILE; built-in: {', '.join(llm_names())}")
    return get_llm(args.model)


def resolve_workload(args: argparse.Namespace) -> Any:
    from chipfit.serve.sim import Arrivals, Lengths, Scheduler, Workload

    if args.concurrency:
        arrivals = Arrivals.CONCURRENCY
    elif args.rate:
        arrivals = Arrivals.RATE
    else:
        arrivals = Arrivals.OFFLINE
    n = args.requests or DEFAULT_REQUESTS[arrivals.value]
    work = Workload(
        Lengths.parse(args.input_len or DEFAULT_LEN, "--input-len"),
        Lengths.parse(args.output_len or DEFAULT_LEN, "--output-len"), n, arrivals,
        args.concurrency or 0, args.rate or 0.0, args.seed,
    )  # fmt: skip
    return work, Scheduler(token_budget=args.token_budget, max_seqs=args.max_seqs)


def cmd_serve(args: argparse.Namespace) -> int:
    from chipfit.hardware import get_device
    from chipfit.serve.api import Slo, serve
    from chipfit.serve.step import default_kv

    files = args.device_file or ()
    cfg = resolve_llm(args)
    dev = get_device(args.device, files)
    work, sched = resolve_workload(args)
    pricing = resolve_pricing(args, files)
    slo = Slo(args.ttft_ms, args.tpot_ms)
    ep = True if args.expert_parallel else None  # not given: searched
    r = serve(
        cfg, dev, work, chips=args.chips, tp=args.tp, pp=args.pp, expert_parallel=ep,
        precision=args.precision, kv_precision=default_kv(dev, args.kv_precision), slo=slo, scheduler=sched,
        pricing=pricing,
    )  # fmt: skip
    if args.json:
        emit_json(r.as_dict())
        return 0
    _print(r)
    return 0


def _print(r: Any) -> None:
    d = r.as_dict()
    c = console()
    c.print(f"[bold]{d['model']}[/bold] on {d['chips']} x {d['device']}, {d['precision']} "
            f"(KV {d['kv_format']}): {d['workload']}")  # fmt: skip
    t = Table(title="serving")
    t.add_column("metric")
    t.add_column("value", justify="right")
    usd = d["usd_per_million_output_tokens"]
    rows = [
        ("split", f"{r.split.describe()} x {d['replicas']} replica(s)"),
        ("output tokens/s", f"{d['output_tokens_per_s']:,.0f}"),
        ("output tokens/s per chip", f"{d['output_tokens_per_s_per_chip']:,.0f}"),
        ("tokens/s per user", f"{d['tokens_per_s_per_user']:,.1f}"),
        ("TTFT p50 / p99 ms", f"{d['ttft_ms_p50']:,.1f} / {d['ttft_ms_p99']:,.1f}"),
        ("TPOT p50 / p99 ms", f"{d['tpot_ms_p50']:,.2f} / {d['tpot_ms_p99']:,.2f}"),
        ("request latency mean ms", f"{d['request_latency_ms_mean']:,.0f}"),
        ("max concurrency (KV cache)", f"{d['max_concurrency']:,}"),
        ("$ / M output tokens", "-" if usd is None else f"{usd:,.3f}"),
        ("J / output token", f"{d['joules_per_output_token']:.3g}"),
    ]
    if r.slo.any:
        met = "met" if d["meets_slo"] else "missed"
        good = f"{d['slo_attainment']:.0%} of requests, goodput {d['goodput_requests_per_s']:,.2f} req/s"
        rows.append(("SLO " + r.slo.describe(), f"{met}, {good}"))
    for k, v in rows:
        t.add_row(k, v)
    c.print(t)
    for n in d["notes"]:
        c.print(f"- {n}")
    if d["splits_tried"]:
        c.print("other splits: " + "; ".join(f"{x['split']}: {x['outcome']}" for x in d["splits_tried"]))


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("serve", help="simulate serving a language model on a deployment (tokens/s, TTFT, TPOT, $)")
    p.add_argument("model", nargs="?", help="a built-in language model (llama-2-70b, mixtral-8x7b, ...)")
    p.add_argument("--device", required=True, help="the device (see `chipfit devices`)")
    p.add_argument("--chips", type=positive, help="chips in the deployment (default: the fewest that hold it)")
    p.add_argument("--tp", type=positive, help="tensor-parallel ranks per replica (default: searched)")
    p.add_argument("--pp", type=positive, help="pipeline stages per replica (default: searched)")
    p.add_argument("--expert-parallel", action="store_true", help="MoE: experts whole on each TP rank "
                   "(default: searched)")  # fmt: skip
    p.add_argument("--precision", default="bf16", help="the GEMMs' precision: bf16, fp16, fp8, int8, fp4, w8a16, "
                   "w4a16, ... (default bf16)")  # fmt: skip
    add_workload_args(p)
    add_device_file_arg(p)
    add_price_args(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_serve)


def cmd_plan_serve(args: argparse.Namespace) -> int:
    """`plan MODEL --serve ...`: devices x chip counts x precisions x splits for a language model."""
    from chipfit.cli.common import ints_arg
    from chipfit.hardware import get_device, list_devices
    from chipfit.serve.api import Slo
    from chipfit.serve.html import render_serve_html
    from chipfit.serve.plan import DEFAULT_SERVE_CHIPS, DEFAULT_SERVE_PRECISIONS, PLAN_REQUESTS, plan_serving

    for name in NOT_WITH_SERVE:
        if getattr(args, name, None) not in (None, False, [], ""):
            flag = "--" + name.replace("_", "-")
            raise CliError(f"{flag} does not apply to plan --serve (a language model's serving; objectives: "
                           "--ttft-ms, --tpot-ms)")  # fmt: skip
    files = args.device_file or ()
    cfg = resolve_llm(args)
    names = args.devices.split(",") if args.devices else [d.name for d in list_devices(device_files=files)]
    devices = [get_device(n.strip(), files) for n in dict.fromkeys(names)]
    chips = ints_arg(args.chips, "--chips") if args.chips else list(DEFAULT_SERVE_CHIPS)
    precisions = [x.strip() for x in args.precisions.split(",")] if args.precisions else list(DEFAULT_SERVE_PRECISIONS)
    from chipfit.hardware.precision import precision_names

    known = precision_names()
    bad = [x for x in precisions if x not in known]
    if bad:
        raise CliError(f"unknown precision {', '.join(map(repr, bad))}; known: {', '.join(known)}")
    if not args.requests:
        args.requests = PLAN_REQUESTS
    work, sched = resolve_workload(args)
    pricing = resolve_pricing(args, files)
    p = plan_serving(cfg, devices, work, chips=chips, precisions=precisions, kv_precision=args.kv_precision or "",
                     slo=Slo(args.ttft_ms, args.tpot_ms), scheduler=sched, pricing=pricing)  # fmt: skip
    if args.html:
        from chipfit.paths import write_text_atomic

        write_text_atomic(args.html, render_serve_html(p))
    if args.json:
        emit_json(p.as_dict())
        return 0
    _print_plan(p, args.top)
    return 0


def _print_plan(p: Any, top: int) -> None:
    from chipfit.serve.plan import label

    c = console()
    best = p.best
    c.print(f"[bold]Serving plan[/bold] for {p.model}: {p.workload.describe()}; objectives {p.slo.describe()}")
    c.print(f"[bold]Recommendation[/bold]: [bold green]{label(best) if best else 'none'}[/bold green]")
    for x in p.reasons():
        c.print(f"- {x}")
    t = Table(title=f"simulated configurations (cheapest {min(top, len(p.results))} of {len(p.results)})")
    for col in ("configuration", "tokens/s", "per chip", "per user", "TTFT p99 ms", "TPOT p99 ms", "meets",
                "$ / M tokens", "J / token"):  # fmt: skip
        t.add_column(col, justify="left" if col == "configuration" else "right", no_wrap=True)
    for r in p.results[:top]:
        usd = r.usd_per_million_output_tokens
        t.add_row(label(r), f"{r.output_tokens_per_s:,.0f}", f"{r.output_tokens_per_s_per_chip:,.0f}",
                  f"{r.tokens_per_s_per_user:,.1f}", f"{r.sim.ttft_s(99) * 1e3:,.0f}", f"{r.sim.tpot_s(99) * 1e3:,.1f}",
                  "yes" if r.meets_slo else "no", "-" if usd is None else f"{usd:,.3f}",
                  f"{r.joules_per_output_token:.3g}")  # fmt: skip
    c.print(t)
    if p.frontier:
        c.print(
            "frontier (clients: tokens/s per chip @ tokens/s per user): "
            + "; ".join(
                f"{f.clients}: {f.output_tokens_per_s_per_chip:,.0f} @ {f.tokens_per_s_per_user:,.1f}"
                for f in p.frontier
            )
        )
