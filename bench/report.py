"""The benchmark's results as text for a person and as JSON for a file or a script."""

from __future__ import annotations

import os
from typing import Any

from bench.measure import Measurements, Options

# The last column is everything else the machine did meanwhile.
CPU_COLUMNS = ("client", "gateway", "authorize", "token", "registry", "bookings", "postgres",
               "redis", "other")
# Each measurement straight to its service, and the one through the gateway it compares with.
DIRECT = {"authorize (direct)": "authorize", "exchange (direct)": "exchange",
          "refresh (direct)": "refresh"}


def machine() -> dict[str, Any]:
    return {"cores": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()]}


def text(measured: Measurements, options: Options, before: dict[str, Any],
         store_touches: dict[str, dict[str, float]], *, interpreter: str | None = None) -> str:
    lines = [
        f"Otesse Auth benchmark: {options.requests} requests per measurement "
        f"({options.requests // 2} for the direct ones), concurrency {options.concurrency}, "
        f"warm-up {options.warmup}",
        *([f"The services ran on {interpreter}."] if interpreter else []),
        f"The load generator shares the machine's {before['cores']} cores with every server "
        f"(load average before: {' '.join(map(str, before['load_average']))}).",
        "",
    ]
    lines += [r.line() for r in measured.results]
    by_name = {r.name: r for r in measured.results}
    overhead = []
    for direct, through in DIRECT.items():
        if direct in by_name and through in by_name:
            extra = by_name[through].p50_ms - by_name[direct].p50_ms
            overhead.append(f"{through} {extra:+.2f} ms")
    if overhead:
        lines += ["", "Gateway overhead at p50 (through the gateway minus direct): "
                  + ", ".join(overhead)]
    if any(r.cpu_ms for r in measured.results):
        lines += ["", "CPU per request (ms), by process; 'client' is this load generator, "
                  "'redis' the whole Redis server, 'other' everything else on the machine:"]
        ours = CPU_COLUMNS[:-1]
        lines.append(f"  {'':<19}" + "".join(f"{c:>10}" for c in ours) + f"{'total':>10}"
                     + f"{'other':>10}")
        for r in measured.results:
            cells = [r.cpu_ms.get(c, 0.0) for c in ours]
            lines.append(f"  {r.name:<19}" + "".join(f"{v:>10.3f}" for v in cells)
                         + f"{sum(cells):>10.3f}{r.cpu_ms.get('other', 0.0):>10.3f}")
    if any(r.rss_kib for r in measured.results):
        names = [c for c in CPU_COLUMNS if any(c in r.rss_kib for r in measured.results)]
        lines += ["", "Resident memory (MiB, VmRSS) of each service as each measurement ended, "
                  "under load:"]
        lines.append(f"  {'':<19}" + "".join(f"{c:>10}" for c in names))
        for r in measured.results:
            lines.append(f"  {r.name:<19}" + "".join(
                f"{r.rss_kib.get(c, 0) / 1024:>10.1f}" for c in names))
    if store_touches:
        lines += ["", "Redis commands per request on the benchmark's keys (a sequential "
                  "sample watched with MONITOR):"]
        for name, touches in store_touches.items():
            parts = [f"{k} {v:.2f}" for k, v in touches.items()]
            lines.append(f"  {name:<19} " + (", ".join(parts) or "none"))
    lines.append("")
    if measured.errors:
        lines.append(f"ERRORS: {measured.errors} (warm-ups included)")
        samples = list(measured.warmup_error_samples)
        for r in measured.results:
            samples += [f"{r.name}: {s}" for s in r.error_samples]
        lines += [f"  {s}" for s in samples[:10]]
    else:
        lines.append("0 errors.")
    return "\n".join(lines)


def as_json(measured: Measurements, options: Options, before: dict[str, Any],
            after: dict[str, Any], store_touches: dict[str, dict[str, float]], *,
            interpreter: str | None = None) -> dict[str, Any]:
    return {
        "interpreter": interpreter,
        "options": {"requests": options.requests, "concurrency": options.concurrency,
                    "warmup": options.warmup, "direct_requests": options.direct_requests},
        "machine": {**before, "load_average_after": after["load_average"],
                    "note": "the load generator shares these cores with every server"},
        "results": [r.as_json() for r in measured.results],
        "store_touches_per_request": store_touches,
        "errors": measured.errors,
        "warmup_errors": measured.warmup_errors,
        "warmup_error_samples": list(measured.warmup_error_samples),
    }

