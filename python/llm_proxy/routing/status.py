"""What `GET /admin/v1/deployments` and `llm-proxy deployments` show of each deployment."""

from __future__ import annotations

import time
from typing import Any

from .router import Router


def deployments_state(router: Router) -> dict[str, Any]:
    """Each model group's deployments as JSON-able data: state, calls in flight, EWMA
    latency, breaker state and recent errors (this worker's view)."""
    now = time.monotonic()
    mask = router.secrets
    groups = []
    for group in router.groups.values():
        deployments = []
        for d in group.deployments:
            breaker = d.breaker
            state = breaker.state(now)
            deployments.append(
                {
                    "name": d.id,
                    "provider": d.deployment.provider,
                    "model": d.deployment.model,
                    "weight": d.weight,
                    "state": "healthy" if state == "closed" else "unhealthy",
                    "breaker": state,
                    "open_for_s": round(max(0.0, breaker.open_until - now), 3)
                    if state == "open"
                    else 0.0,
                    "in_flight": d.inflight,
                    "max_concurrency": d.limit,
                    "rpm": d.rpm,
                    "tpm": d.tpm,
                    "minute_requests": d.minute_requests if d.metered else None,
                    "minute_tokens": d.minute_tokens if d.metered else None,
                    "context_window": d.context_window,
                    "ewma_ttfb_ms": round(d.ewma_ttfb_s * 1000.0, 3),
                    "ewma_total_ms": round(d.ewma_total_s * 1000.0, 3),
                    "attempts": d.attempts,
                    "failures": d.failures,
                    "recent_errors": [
                        {"at": at, "status": status, "kind": kind, "message": mask(message)}
                        for at, status, kind, message in d.errors
                    ],
                }
            )
        groups.append(
            {
                "model": group.name,
                "strategy": group.strategy,
                "retries": group.retries,
                "timeout_s": group.timeout_s,
                "fallbacks": {k: [g.name for g in v] for k, v in group.fallbacks.items()},
                "deployments": deployments,
            }
        )
    return {"object": "list", "data": groups}


def render(state: dict[str, Any]) -> str:
    """The state as a table for a terminal."""
    lines = [
        f"{'model':<24} {'deployment':<28} {'breaker':<9} {'in-flight':>9} "
        f"{'ewma ms':>9} {'attempts':>8} {'failures':>8}  last error"
    ]
    for group in state.get("data", []):
        for d in group["deployments"]:
            errors = d["recent_errors"]
            last = f"{errors[-1]['status']} {errors[-1]['kind']}" if errors else ""
            lines.append(
                f"{group['model']:<24} {d['name']:<28} {d['breaker']:<9} {d['in_flight']:>9} "
                f"{d['ewma_total_ms']:>9.1f} {d['attempts']:>8} {d['failures']:>8}  {last}"
            )
    return "\n".join(lines)


def deployments_command(url: str, admin_key: str | None, as_json: bool) -> int:
    """`llm-proxy deployments`: the running gateway's admin view, as a table or JSON."""
    import json
    import sys
    import urllib.error
    import urllib.request

    target = url.rstrip("/") + "/admin/v1/deployments"
    request = urllib.request.Request(target)
    if admin_key:
        request.add_header("Authorization", f"Bearer {admin_key}")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            state = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        print(f"llm-proxy: {target} answered {exc.code}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"llm-proxy: cannot read {target}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(state, indent=2) if as_json else render(state))
    return 0
