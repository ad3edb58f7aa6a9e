"""`llm-proxy keys|teams|projects ...`: the key store straight from the config's database,
so an operator needs no running gateway (running ones pick the change up within a second)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..config import Config, ConfigError, load_config
from ..limits.spec import Budget, Limits
from .fields import InvalidField, group_fields, iso, key_fields
from .migrations import KeyStoreError
from .model import sha256_hex, split_key
from .store import Conflict, GroupKind, KeyStore, NotFound, iter_pages

_EPILOG = (
    "Times are ISO 8601 (2027-01-01T00:00:00Z); lists are comma-separated; "
    "--limits and --budgets take JSON (null clears), see docs/limits.md."
)
_LIMITS_HELP = 'JSON, e.g. \'{"rpm": 100, "tpm": 50000, "models": {"gpt-4o": {"rpm": 10}}}\''
_BUDGETS_HELP = 'JSON, e.g. \'[{"usd": 5.0, "period": "monthly", "alert_at": [0.5, 0.9]}]\''


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _key_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--alias")
    parser.add_argument("--team")
    parser.add_argument("--project")
    parser.add_argument("--models", help="allowed models: names and globs, e.g. 'gpt-4o*,mock-1'")
    parser.add_argument("--endpoints", help="allowed endpoints: chat,completions,embeddings")
    parser.add_argument("--expires", help="expiry time, or 'never'")
    parser.add_argument("--tags")
    parser.add_argument("--metadata", help="a JSON object")
    _spec_options(parser)


def _group_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", help="allowed models: names and globs")
    parser.add_argument("--metadata", help="a JSON object")
    _spec_options(parser)


def _spec_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limits", help=_LIMITS_HELP)
    parser.add_argument("--budgets", help=_BUDGETS_HELP)


def _config_option(parser: argparse.ArgumentParser) -> None:
    # Also after the subcommand (`keys create --config gw.yaml`); SUPPRESS keeps a value
    # given before it (`keys --config gw.yaml create`).
    parser.add_argument("--config", default=argparse.SUPPRESS, help="YAML config file")


def add_commands(sub: Any) -> None:
    """Add `keys`, `teams` and `projects` to the top-level subcommands."""
    keys = sub.add_parser("keys", help="virtual keys in the config's database", epilog=_EPILOG)
    keys.add_argument("--config", help="YAML config file (its auth.store or logging.store)")
    ks = keys.add_subparsers(dest="keys_command", required=True)
    create = ks.add_parser("create", help="create a key; prints it once")
    _key_options(create)
    listing = ks.add_parser("list", help="list keys")
    listing.add_argument("--team")
    listing.add_argument("--project")
    listing.add_argument("--blocked", choices=["true", "false"])
    listing.add_argument("--json", action="store_true")
    for name in ("show", "block", "unblock", "delete"):
        ks.add_parser(name, help=f"{name} a key").add_argument("id")
    update = ks.add_parser("update", help="change a key's fields")
    update.add_argument("id")
    _key_options(update)
    rotate = ks.add_parser("rotate", help="a new secret; the old one works for --grace seconds")
    rotate.add_argument("id")
    rotate.add_argument("--grace", type=float, default=0.0)
    hashing = ks.add_parser("hash", help="the id and secret_sha256 of a key, for auth.keys")
    hashing.add_argument("key")
    for command in ks.choices.values():
        _config_option(command)
    keys.set_defaults(func=keys_command)

    for kind in ("teams", "projects"):
        group = sub.add_parser(kind, help=f"{kind} in the config's database")
        group.add_argument("--config", help="YAML config file")
        gs = group.add_subparsers(dest="group_command", required=True)
        made = gs.add_parser("create")
        made.add_argument("name")
        _group_options(made)
        gs.add_parser("list")
        for name in ("show", "delete"):
            gs.add_parser(name).add_argument("name")
        changed = gs.add_parser("update")
        changed.add_argument("name")
        _group_options(changed)
        for command in gs.choices.values():
            _config_option(command)
        group.set_defaults(func=groups_command, kind=kind)


def _open(path: str | None) -> tuple[Config, KeyStore]:
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"llm-proxy: bad config ({path or 'the default config'}): {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    from . import store_url

    store = KeyStore(store_url(config))
    store.declared = {
        "teams": frozenset(config.auth.teams),
        "projects": frozenset(config.auth.projects),
    }
    store.migrate()
    return config, store


def _announce(config: Config) -> None:
    """Wake the gateways at once through Redis when configured (they poll anyway)."""
    if not config.auth.redis_url:
        return
    try:
        import redis

        client = redis.Redis.from_url(config.auth.redis_url, socket_timeout=1)
        client.publish(config.auth.redis_channel, "cli")
        client.close()
    except Exception as exc:
        print(f"llm-proxy: could not publish the change on Redis ({exc})", file=sys.stderr)


def _fields_of(args: argparse.Namespace) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name in ("alias", "team", "project"):
        value = getattr(args, name)
        if value is not None:
            data[name] = value or None
    if args.models is not None:
        data["allowed_models"] = _csv(args.models)
    if args.endpoints is not None:
        data["allowed_endpoints"] = _csv(args.endpoints)
    if args.expires is not None:
        data["expires_at"] = None if args.expires in ("never", "") else args.expires
    if args.tags is not None:
        data["tags"] = _csv(args.tags)
    return {**data, **_json_options(args)}


def _json_options(args: argparse.Namespace) -> dict[str, Any]:
    """--metadata, --limits and --budgets, decoded (not yet checked)."""
    data: dict[str, Any] = {}
    for name in ("metadata", "limits", "budgets"):
        text = getattr(args, name)
        if text is not None:
            try:
                data[name] = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InvalidField(name, f"is not JSON: {exc}") from None
    return data


def _summary(limits: Limits | None, budgets: list[Budget]) -> str:
    """Limits and budgets in a few words, for the list commands."""
    parts = []
    if limits is not None:
        for name in ("rpm", "tpm", "max_parallel"):
            value = getattr(limits, name)
            if value is not None:
                parts.append(f"{name}={value}")
        if limits.models:
            parts.append(f"models={','.join(sorted(limits.models))}")
    for budget in budgets:
        period = budget.window if budget.period == "rolling" else budget.period
        parts.append(f"${budget.usd:g}/{period}")
    return " ".join(parts) or "-"


def _show(data: dict[str, Any]) -> None:
    print(json.dumps(data, indent=2, sort_keys=False))


def keys_command(args: argparse.Namespace) -> int:
    from ..admin.routes import key_json

    command = args.keys_command
    if command == "hash":
        parts = split_key(args.key)
        if parts is None:
            print("llm-proxy: not an sk-lp-<id>-<secret> key", file=sys.stderr)
            return 2
        print(f"id: {parts[0]}\nsecret_sha256: {sha256_hex(parts[1])}")
        return 0
    try:
        config, store = _open(args.config)
        try:
            if command == "create":
                record, text = store.create_key(key_fields(_fields_of(args)))
                _announce(config)
                _show({**key_json(record), "key": text})
                print("Keep the key now: it is not stored and cannot be shown again.")
            elif command == "list":
                blocked = None if args.blocked is None else args.blocked == "true"
                records = list(
                    iter_pages(store, team=args.team, project=args.project, blocked=blocked)
                )
                if args.json:
                    _show({"data": [key_json(r) for r in records]})
                else:
                    print(
                        f"{'id':<14} {'alias':<20} {'team':<16} {'state':<8} {'expires':<21} limits"
                    )
                    for r in records:
                        state = "blocked" if r.blocked else "active"
                        print(
                            f"{r.id:<14} {r.alias or '-':<20} {r.team or '-':<16} {state:<8} "
                            f"{iso(r.expires_at) or 'never':<21} {_summary(r.limits, r.budgets)}"
                        )
            elif command == "show":
                _show(key_json(store.get_key(args.id)))
            elif command in ("block", "unblock"):
                record = store.update_key(args.id, {"blocked": command == "block"})
                _announce(config)
                print(f"key {record.id} {command}ed")
            elif command == "update":
                record = store.update_key(args.id, key_fields(_fields_of(args)))
                _announce(config)
                _show(key_json(record))
            elif command == "rotate":
                record, text = store.rotate_key(args.id, args.grace)
                _announce(config)
                _show({**key_json(record), "key": text})
            elif command == "delete":
                store.delete_key(args.id)
                _announce(config)
                print(f"key {args.id} deleted")
        finally:
            store.close()
    except (InvalidField, NotFound, Conflict, KeyStoreError) as exc:
        print(f"llm-proxy: {exc}", file=sys.stderr)
        return 1
    return 0


def groups_command(args: argparse.Namespace) -> int:
    from ..admin.routes import group_json

    kind: GroupKind = args.kind
    command = args.group_command
    try:
        config, store = _open(args.config)
        try:
            if command == "list":
                for record in store.list_groups(kind, limit=100000):
                    models = ",".join(record.allowed_models) or "(all models)"
                    limits = _summary(record.limits, record.budgets)
                    print(f"{record.name:<24} {models:<32} {limits}")
                return 0
            if command == "show":
                _show(group_json(store.get_group(kind, args.name), kind))
                return 0
            if command == "delete":
                store.delete_group(kind, args.name)
                _announce(config)
                print(f"{kind[:-1]} {args.name} deleted")
                return 0
            data: dict[str, Any] = {}
            if args.models is not None:
                data["allowed_models"] = _csv(args.models)
            data.update(_json_options(args))
            if command == "create":
                record = store.create_group(
                    kind, group_fields({"name": args.name, **data}, creating=True)
                )
            else:
                record = store.update_group(kind, args.name, group_fields(data, creating=False))
            _announce(config)
            _show(group_json(record, kind))
        finally:
            store.close()
    except (InvalidField, NotFound, Conflict, KeyStoreError, json.JSONDecodeError) as exc:
        print(f"llm-proxy: {exc}", file=sys.stderr)
        return 1
    return 0
