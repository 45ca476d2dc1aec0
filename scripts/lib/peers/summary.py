"""The peers' figures as scripts/bench prints them: one driver's output line read back, the
medians of a peer's runs, and the footer's rows (measured here, or the canned figures of
2026-11-24 when the peers were not rerun). Pure: no processes, no clock."""
import json, statistics

PEERS = ["floor", "celery", "luigi", "dagster", "prefect"]  # the order they run and are printed in
WORKLOADS = ["chain50", "fanout200"]
CANNED_DATE = "2026-11-24"
# The peers' trigger-to-all-done medians on a 2-core machine of this kind, measured on
# CANNED_DATE: printed when `scripts/bench peers` did not rerun them.
CANNED = [  # (peer, chain50 s, fanout200 s, PSS MB)
    ("the floor: a loop of `sh -c true` + 3 SQLite commits a task", 0.042, 0.119, 12),
    ("Celery 5.7 + Redis, 2 workers", 0.215, 0.747, 120),
    ("Luigi 3.8, local scheduler, 2 workers", 0.352, 1.06, 30),
    ("Dagster 1.13, in-process", 0.98, 1.86, 100),
    ("Prefect 3.9, local API", 1.10, 2.10, 380),
    ("Airflow 2.10, `dags test`", 3.42, 10.4, 128),
    ("Airflow 2.10, scheduler + LocalExecutor + PostgreSQL", 60.2, 89.0, None),
]


def parse_result(text):
    """The one JSON line a driver (run.py) printed last; ValueError naming what is wrong."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError("the driver printed nothing")
    try:
        result = json.loads(lines[-1])
    except json.JSONDecodeError as e:
        raise ValueError(f"not a JSON line: {lines[-1][:200]!r} ({e})")
    missing = [k for k in ("peer", "name", "version", "workload", "wall_s", "pss_mb") if k not in result]
    if missing:
        raise ValueError(f"the driver's line lacks {', '.join(missing)}: {lines[-1][:200]!r}")
    if not isinstance(result["wall_s"], (int, float)) or result["wall_s"] <= 0:
        raise ValueError(f"wall_s is not a positive number: {result['wall_s']!r}")
    return result


def spread(values):
    """{median, min, max, runs} of the values, None when there are none."""
    if not values:
        return None
    return {"median": round(statistics.median(values), 4), "min": min(values), "max": max(values),
            "runs": list(values)}


def summarize(results):
    """Parsed results of any peers and workloads -> one entry a peer, in PEERS order:
    {peer, name, version, chain50: spread, fanout200: spread, pss_mb: spread over all runs}."""
    out = []
    for peer in PEERS:
        mine = [r for r in results if r["peer"] == peer]
        if not mine:
            continue
        entry = {"peer": peer, "name": mine[0]["name"], "version": mine[0]["version"]}
        for workload in WORKLOADS:
            entry[workload] = spread([r["wall_s"] for r in mine if r["workload"] == workload])
        entry["pss_mb"] = spread([r["pss_mb"] for r in mine if r.get("pss_mb") is not None])
        out.append(entry)
    return out


def median_of(entry, key):
    return entry[key]["median"] if entry.get(key) else None


def footer_rows(summaries):
    """(label, chain50 s, fanout200 s, PSS MB) a peer: the measured ones when there are any,
    else the canned ones, labelled with their date."""
    if not summaries:
        return [(f"{peer} ({CANNED_DATE})", c, f, m) for peer, c, f, m in CANNED]
    return [(f"{s['name']} ({s['version']})", median_of(s, "chain50"), median_of(s, "fanout200"),
             median_of(s, "pss_mb")) for s in summaries]


def json_peers(summaries):
    """The JSON output's "peers": measured here (with every run), or the canned figures."""
    if not summaries:
        return [{"peer": peer, "measured": CANNED_DATE, "chain50_s": c, "fanout200_s": f, "pss_mb": m}
                for peer, c, f, m in CANNED]
    return [{"peer": s["name"], "key": s["peer"], "version": s["version"], "measured": "this run",
             "chain50_s": median_of(s, "chain50"), "fanout200_s": median_of(s, "fanout200"),
             "pss_mb": median_of(s, "pss_mb"), "chain50": s["chain50"], "fanout200": s["fanout200"]}
            for s in summaries]
