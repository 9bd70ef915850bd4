"""What ``rlm models`` prints: the groups, their deployments, whether each answers, and what each served.

:func:`models_view` renders a config's groups (every deployment with its window,
order, tokenizer and endpoint), a health probe of each self-hosted deployment
(``GET {api_base}/models``, 2 s; hosted APIs are not probed: that would cost a
request to a paid provider), and per-deployment totals over recent runs from the
run log. :func:`serve_view` renders the Serve deployments of a cluster
(``rlm models status``). Both return ``(stdout, stderr)``.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rlm.config import RLMConfig
from rlm.routing.table import RouteTable, Target
from rlm.textutil import sanitize_for_terminal

__all__ = ["probe", "models_view", "serve_view"]

PROBE_TIMEOUT_S = 2.0


def probe(target: Target, timeout: float = PROBE_TIMEOUT_S) -> dict[str, Any]:
    """``{"health": "up"|"down"|"hosted", "ms": ..., "error": ...}`` for one deployment."""
    if not target.deployment.api_base:
        return {"health": "hosted"}
    url = target.deployment.api_base.rstrip("/") + "/models"
    headers = {"Authorization": f"Bearer {target.endpoint.api_key}"} if target.endpoint else {}
    started = time.monotonic()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
            response.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return {"health": "down", "error": f"{type(exc).__name__}: {exc}"[:200]}
    return {"health": "up", "ms": round((time.monotonic() - started) * 1000, 1)}


def _rows(table: RouteTable, health: dict[str, dict[str, Any]], totals: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for group, targets in table.groups.items():
        for t in targets:
            rows.append({"group": group, "deployment": t.name, "model": t.deployment.model,
                         "api_base": t.deployment.api_base, "order": t.order, "window": t.window,
                         "reply_tokens": t.reply_tokens, "tokenizer": t.tokenizer, "profile": t.profile.name,
                         "node": t.node,
                         **health.get(t.name, {}), "totals": totals.get(t.name)})
    return rows


def models_view(config: RLMConfig, totals: Sequence[Any] | None, *, as_json: bool, check: bool = True,
                days: float = 7.0) -> tuple[str, str]:
    """The groups and deployments of ``config``, their health, and ``totals`` (DeploymentTotals) by deployment."""
    table = RouteTable(config)
    targets = {t.name: t for t in table.targets()}
    health: dict[str, dict[str, Any]] = {}
    if check:
        with ThreadPoolExecutor(max_workers=8) as pool:
            health = dict(zip(targets, pool.map(probe, targets.values()), strict=True))
    by_name = {row.deployment: row.to_dict() for row in totals or ()}
    rows = _rows(table, health, by_name)
    note = "" if totals is not None else "run log unavailable: no per-deployment totals\n"
    if as_json:
        data = {"source": table.spec.source or None, "deployments": rows, "days": days}
        return json.dumps(data, ensure_ascii=False) + "\n", note
    return _text(table, rows, days), note


def _text(table: RouteTable, rows: list[dict[str, Any]], days: float) -> str:
    lines = [f"models: {table.spec.source or '(from --model/--sub-model/--api-base)'}"]
    group = None
    for row in rows:
        if row["group"] != group:
            group = row["group"]
            description = table.descriptions.get(group)
            lines.append(f"group {group}" + (f"  ({description})" if description else ""))
        window = f"{row['window']:,}" if row["window"] else "unknown"
        health = row.get("health", "not checked")
        if health == "up":
            health = f"up {row['ms']} ms"
        elif health == "down":
            health = f"DOWN ({row['error']})"
        lines.append(f"  {row['order']}. {row['deployment']}  window={window}  tokenizer={row['tokenizer']}  "
                     f"profile={row['profile']}  node={row['node']}  {health}")
        total = row["totals"]
        if total:
            cost = f"${total['cost_usd']:.4f}" + ("" if total["priced_calls"] == total["calls"] else " (some unpriced)")
            lines.append(f"       last {days:g} days: {total['calls']} calls ({total['failed']} failed) in "
                         f"{total['runs']} runs, {total['input_tokens']:,} in / {total['output_tokens']:,} out tokens, "
                         f"{cost}, {total['latency_s']:.1f}s")
    return sanitize_for_terminal("\n".join(lines)) + "\n"


def serve_view(rows: list[dict[str, Any]], stats: dict[str, list[dict[str, Any]]], as_json: bool) -> tuple[str, str]:
    """Serve deployments (:func:`rlm.agents.serving.serve_status` rows) with the replicas' sampled stats."""
    if as_json:
        return json.dumps([{**row, "stats": stats.get(row["deployment"], [])} for row in rows]) + "\n", ""
    if not rows:
        return "", "no Serve deployments on this cluster (start them with `rlm models serve`)\n"
    lines = []
    for row in rows:
        running = sum(1 for r in row["replicas"] if r["state"] == "RUNNING")
        lines.append(f"{row['deployment']}  {row['status']}  replicas {running}/{len(row['replicas'])}"
                     + (f"  {row['message']}" if row["message"] else ""))
        sampled = {s.get("replica"): s for s in stats.get(row["deployment"], [])}
        for replica in row["replicas"]:
            seen = sampled.get(replica["replica_id"])
            queue = f"  queue {seen['ongoing']}  served {seen['served']}" if seen else ""
            lines.append(f"  {replica['replica_id']}  {replica['state']}  node {replica['node_id']} "
                         f"({replica['node_ip']}){queue}")
    return sanitize_for_terminal("\n".join(lines)) + "\n", ""
