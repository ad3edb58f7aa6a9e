"""The `llm-proxy` command."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __version__, capacity
from .config import Config, ConfigError, load_config
from .keys import cli as keys_cli
from .logstore import cli as logstore_cli


def _load(path: str | None) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        where = path or "the default config"
        print(f"llm-proxy: bad config ({where}): {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_serve(args: argparse.Namespace) -> int:
    config = _load(args.config)
    from .observe import ObserveConfigError, prepare_multiprocess, prepare_worker_starts, validate

    try:
        validate(config)
    except ObserveConfigError as exc:
        print(f"llm-proxy: {exc}", file=sys.stderr)
        return 2
    from granian import Granian
    from granian.constants import Interfaces, Loops
    from granian.http import HTTP1Settings

    os.environ["LLM_PROXY_CONFIG"] = str(Path(args.config).resolve()) if args.config else ""
    if args.grpc_port is not None:
        os.environ["LLM_PROXY_GRPC_PORT"] = str(args.grpc_port)
    host = args.host or config.server.host
    from .keys import KeyStoreError, check_exposure, prepare_store

    try:
        check_exposure(config, host)
        # Once here, not in each worker: a worker that failed would be respawned forever.
        prepare_store(config)
    except (ConfigError, KeyStoreError) as exc:
        print(f"llm-proxy: {exc}", file=sys.stderr)
        return 2
    os.environ["LLM_PROXY_HOST"] = host
    port = config.server.port if args.port is None else args.port
    workers = args.workers or config.server.workers
    grace = max(1, round(config.server.shutdown_grace_s))
    prepare_multiprocess(workers)
    prepare_worker_starts(workers)
    server = Granian(
        "llm_proxy.worker:create_app",
        factory=True,
        address=host,
        port=port,
        interface=Interfaces.RSGI,
        workers=workers,
        loop=Loops.uvloop,
        log_access=False,
        workers_kill_timeout=grace,
        backlog=2048,
        # A worker that dies (an OOM kill, a crash) is started again, not the gateway stopped.
        respawn_failed_workers=True,
        respawn_interval=0.5,
        # Also bounds how long an idle keep-alive connection is kept.
        http1_settings=HTTP1Settings(
            header_read_timeout=max(1, round(config.server.keepalive_timeout_s * 1000))
        ),
    )
    print(f"llm-proxy serving http://{host}:{port} ({workers} worker(s))", flush=True)
    server.serve()
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    config = _load(args.file)
    print(f"config OK: {len(config.providers)} provider(s), {len(config.models)} model(s)")
    for name, model in config.models.items():
        for d in model.routes():
            kind = config.providers[d.provider].__struct_config__.tag
            print(f"  {name:<28} -> {d.provider} ({kind}) {d.model}")
    return 0


def cmd_deployments(args: argparse.Namespace) -> int:
    from .routing.status import deployments_command

    key = args.admin_key or os.environ.get("LLM_PROXY_ADMIN_KEY")
    return deployments_command(args.url, key, args.json)


def cmd_mock_upstream(args: argparse.Namespace) -> int:
    from .testing.mock_upstream import main as mock_main

    argv = ["--host", args.host, "--port", str(args.port), "--delay-ms", str(args.delay_ms)]
    return int(mock_main(argv))


def cmd_prices(args: argparse.Namespace) -> int:
    from .pricing import price_rows, render_prices

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"llm-proxy: {exc}", file=sys.stderr)
        return 2
    rows = price_rows(config, args.all)
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(render_prices(rows, config.pricing.unknown_model))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm-proxy", description=__doc__)
    parser.add_argument("--version", action="version", version=f"llm-proxy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway (HTTP and gRPC front doors)")
    serve.add_argument("--config", help="YAML config file (default: built-in mock models)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--grpc-port", type=int, help="override server.grpc_port (0 turns it off)")
    serve.add_argument("--workers", type=int)
    serve.set_defaults(func=cmd_serve)

    config = sub.add_parser("config", help="config tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate a config file and list its models")
    check.add_argument("file")
    check.set_defaults(func=cmd_config_check)

    mock = sub.add_parser("mock-upstream", help="run the mock OpenAI/Anthropic upstream")
    mock.add_argument("--host", default="127.0.0.1")
    mock.add_argument("--port", type=int, default=8090)
    mock.add_argument("--delay-ms", type=int, default=0)
    mock.set_defaults(func=cmd_mock_upstream)
    logs = sub.add_parser("logs", help="recent calls from the request log")
    stats = sub.add_parser("stats", help="calls, errors, latency, tokens and cost")
    logstore_cli.add_arguments(logs, stats)
    logs.set_defaults(func=logstore_cli.logs_command)
    stats.set_defaults(func=logstore_cli.stats_command)

    deployments = sub.add_parser(
        "deployments", help="each model group's deployments: breaker, in-flight, latency, errors"
    )
    deployments.add_argument(
        "--url", default="http://127.0.0.1:8081", help="the gateway's admin listener"
    )
    deployments.add_argument(
        "--admin-key", help="the admin key (default: the LLM_PROXY_ADMIN_KEY variable)"
    )
    deployments.add_argument("--json", action="store_true", help="print the JSON as served")
    deployments.set_defaults(func=cmd_deployments)

    keys_cli.add_commands(sub)

    prices = sub.add_parser("prices", help="the effective price table (shipped table + config)")
    prices.add_argument("--config", help="the config file serve uses (default: built-in config)")
    prices.add_argument("--all", action="store_true", help="every priced model, not only yours")
    prices.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    prices.set_defaults(func=cmd_prices)

    cap = sub.add_parser("capacity", help="cores (workers) needed for a load, from a bench result")
    capacity.add_arguments(cap)
    cap.set_defaults(func=capacity.capacity_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
