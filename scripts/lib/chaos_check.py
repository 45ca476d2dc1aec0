"""scripts/chaos's checker: the invariants of docs/chaos.md over the commands' history file and
the final store, and the figures per fault kind. Pure: it takes what was collected and returns
verdicts (no processes, no I/O but reading the run's folder)."""
import json, os, re, statistics
from collections import defaultdict

# A try's process group gets 2 s between SIGTERM and SIGKILL (agent/src/runner TERM_GRACE); a
# heartbeat comes every 0.2 s; one more second for the clocks of a loaded machine.
GRACE = 3.5
# From a try's end to its report reaching the store, on a loaded 2-core machine.
REPORT_SLACK = 1.0
FINAL_TRY_STATES = {"success", "failed", "timed_out", "lost", "killed"}
STAMPED = re.compile(rb"^[0-9T:.Z-]+ out\| (.*)$")
NOTE = re.compile(rb"^[0-9T:.Z-]+ err\| \[goflow: [^\]]*\]$")
CONFLICTS = {"kill", "mark", "delete"}  # operator verbs the suite never issues


class Run:
    """What one run left behind, read once."""

    def __init__(self, folder, store, samples, faults, expected, cron, started_wall, ended_wall):
        self.folder, self.store, self.samples, self.faults = folder, store, samples, faults
        self.expected, self.cron = expected, cron
        self.started_wall, self.ended_wall = started_wall, ended_wall
        self.lines = []  # (raw line, record)
        try:
            with open(os.path.join(folder, "history.jsonl")) as f:
                for raw in f:
                    raw = raw.rstrip("\n")
                    try:
                        self.lines.append((raw, json.loads(raw)))
                    except ValueError:
                        self.lines.append((raw, {"ev": "torn"}))
        except OSError:
            pass
        self.starts, self.ends = defaultdict(list), defaultdict(list)
        for raw, r in self.lines:
            if r.get("ev") == "start":
                self.starts[r["attempt"]].append((raw, r))
            elif r.get("ev") == "end":
                self.ends[r["attempt"]].append((raw, r))
        self.attempts = {a["id"]: a for a in store["attempts"]}
        self.by_instance = defaultdict(list)
        for a in store["attempts"]:
            self.by_instance[(a["task"], a["day"])].append(a)
        for tries in self.by_instance.values():
            tries.sort(key=lambda a: a["try"])

    def beat(self, attempt):
        """(mono, wall) of the try's last sign of life, None without one."""
        try:
            with open(os.path.join(self.folder, "att", attempt + ".beat")) as f:
                mono, wall = f.read().split()[:2]
                return float(mono), float(wall)
        except (OSError, ValueError):
            return None

    def printed(self, attempt):
        try:
            with open(os.path.join(self.folder, "att", attempt + ".out"), "rb") as f:
                return f.read()
        except OSError:
            return None

    def last_alive(self, attempt):
        """(mono, wall): its end record, or else its last heartbeat."""
        if self.ends.get(attempt):
            r = self.ends[attempt][-1][1]
            return r["mono"], r["wall"]
        b = self.beat(attempt)
        if b:
            return b
        r = self.starts[attempt][0][1]
        return r["mono"], r["wall"]

    def frozen_when_it_ended(self, attempt):
        """Whether the agent of this try was SIGSTOPped when the try wrote its end record, or was
        SIGSTOPped or SIGKILLed within REPORT_SLACK after it (its report could not have gone out
        yet), or was SIGKILLed before it while the try ran on (the shim keeps a try alive for its
        lease; its end then has no agent to report it) and the store declared the try lost after
        it ended."""
        a, ends = self.attempts.get(attempt), self.ends.get(attempt)
        if not a or not ends:
            return False
        at = ends[-1][1]["wall"]
        def stopped(f):
            if f.get("agent_id") != a["agent"]:
                return False
            if f["kind"] == "agent_sigstop":
                return f["wall"] - REPORT_SLACK <= at <= f.get("healed_wall", f["wall"])
            if f["kind"] != "agent_sigkill" or at < f["wall"] - REPORT_SLACK:
                return False
            outlived = a.get("state") == "lost" and a.get("finished_at") is not None \
                and at <= a["finished_at"] / 1000
            return at <= f["wall"] or outlived
        return any(stopped(f) for f in self.faults)

    def history_of(self, *attempts):
        """The history lines of these tries, each try followed by what the store says of it."""
        out = []
        for a in attempts:
            out += [raw for raw, _ in self.starts.get(a, []) + self.ends.get(a, [])]
            s = self.attempts.get(a)
            if s:
                done = f"{s['finished_at'] / 1000:.3f}" if s["finished_at"] is not None else "-"
                out.append(f"  store: try {a} {s['state']} on {s['agent']}, epoch {s['epoch']}, started "
                           f"{s['started_at'] / 1000:.3f}, finished {done}: {s.get('message', '')[:200]}")
        return out


class Verdicts:
    def __init__(self):
        self.invariants, self.violations = [], []

    def add(self, name, problems, summary):
        """problems: [(detail, [history lines])]."""
        ok = not problems
        details = summary if ok else f"{len(problems)} violation(s); first: {problems[0][0]}"
        self.invariants.append({"name": name, "ok": ok, "details": details})
        for detail, lines in problems:
            self.violations.append({"invariant": name, "detail": detail, "history": lines[:16]})


def check(run):
    v = Verdicts()
    store = run.store
    # 1. No two tries of one instance alive at once; a try is started once.
    problems, spans = [], defaultdict(list)
    for attempt, recs in run.starts.items():
        r = recs[0][1]
        if len(recs) > 1:
            problems.append((f"try {attempt} started {len(recs)} times", run.history_of(attempt)))
        spans[(r["task"], r["day"])].append((r["mono"], run.last_alive(attempt)[0], attempt))
    pairs = 0
    for key, items in spans.items():
        items.sort()
        for i, (s1, e1, a1) in enumerate(items):
            for s2, e2, a2 in items[i + 1:]:
                pairs += 1
                if s2 < e1:
                    problems.append((f"{key[0]}@{key[1]}: try {a2} started {e1 - s2:.2f} s before try {a1} "
                                     f"was last seen alive", run.history_of(a1, a2)))
    v.add("1 no two tries of one instance alive at once", problems,
          f"{len(run.starts)} tries started, {len(spans)} instances, {pairs} pairs of tries compared")

    # 2. No instance created twice; each due cron fire created once.
    problems = []
    seen = defaultdict(int)
    for row in store["instances"]:
        seen[(row["task"], row["etl_day"])] += 1
    problems += [(f"{t}@{d} listed {n} times", []) for (t, d), n in seen.items() if n > 1]
    for key, items in spans.items():
        if key not in seen:
            problems.append((f"{key[0]}@{key[1]} ran but the store has no such instance",
                             run.history_of(*[a for _, _, a in items])))
    frozen_reruns = []
    for attempt, recs in run.ends.items():  # a success is final: nothing of it starts again
        r = recs[-1][1]
        if r.get("exit") == 0:
            again = [a for a, s in run.starts.items() if (s[0][1]["task"], s[0][1]["day"]) == (r["task"], r["day"])
                     and s[0][1]["mono"] > r["mono"]]
            if again and run.frozen_when_it_ended(attempt):
                # Its agent was SIGSTOPped or SIGKILLed as the try ended: no report could go
                # out, the agent was declared dead, and running it again is what at-least-once
                # means.
                frozen_reruns.append(f"{r['task']}@{r['day']}")
            elif again:
                problems.append((f"{r['task']}@{r['day']} started again ({', '.join(again)}) after try "
                                 f"{attempt} succeeded", run.history_of(attempt, *again)))
    cron_rows = [r for r in store["instances"] if r["task"] == run.cron["task"]]
    due = set(run.cron["due_days"])
    for day in sorted(due):
        n = sum(1 for r in cron_rows if r["etl_day"] == day)
        if n != 1:
            problems.append((f"cron {run.cron['task']}: due day {day} has {n} instances", []))
    for r in cron_rows:
        if r["etl_day"] not in due:
            problems.append((f"cron {run.cron['task']}: instance for {r['etl_day']}, which was not due", []))
    v.add("2 no instance created twice; each due cron fire created once", problems,
          f"{len(store['instances'])} instances, unique; cron days {sorted(due)} created once each"
          + (f"; run again after a success while its agent was frozen or killed as it ended (allowed): {', '.join(frozen_reruns)}"
             if frozen_reruns else ""))

    # 3. Every instance ends success, but the always-failing tasks and their downstreams.
    problems, counts = [], defaultdict(int)
    rows = {(r["task"], r["etl_day"]): r for r in store["instances"]}
    for key, kind in run.expected.items():
        row = rows.get(key)
        state = row["state"] if row else "missing"
        counts[state] += 1
        want = {"ok": {"success"}, "fail": {"failed"}, "down": {"failed", "waiting"}}[kind]
        if state not in want:
            tries = [a["id"] for a in run.by_instance.get(key, [])]
            msg = f" ({row.get('message')})" if row and row.get("message") else ""
            problems.append((f"{key[0]}@{key[1]} ended {state}, expected {'/'.join(sorted(want))}{msg}",
                             run.history_of(*tries)))
    for key in rows:
        if key not in run.expected and key[0] != run.cron["task"]:
            problems.append((f"{key[0]}@{key[1]}: an instance the workload never asked for", []))
    v.add("3 every instance ends as the workload says", problems,
          f"{len(run.expected)} workload instances: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))

    # 4. A try the store calls success ran to its end record with exit 0.
    problems, n = [], 0
    for a in store["attempts"]:
        if a["state"] != "success":
            continue
        n += 1
        ends = run.ends.get(a["id"])
        if not ends or ends[-1][1].get("exit") != 0:
            problems.append((f"try {a['id']} ({a['task']}@{a['day']}) is success in the store but "
                             f"{'never wrote its end record' if not ends else 'ended with exit ' + str(ends[-1][1].get('exit'))}",
                             run.history_of(a["id"])))
    v.add("4 a success in the store ran to its end with exit 0", problems, f"{n} successful tries checked")

    # 5. Killed means killed: nothing of a try runs once its kill or loss is recorded.
    problems, n = [], 0
    for a in store["attempts"]:
        if a["state"] not in ("lost", "killed", "killing") or a["finished_at"] is None or a["id"] not in run.starts:
            continue
        n += 1
        recorded = a["finished_at"] / 1000
        alive = run.last_alive(a["id"])[1]
        if alive > recorded + GRACE:
            problems.append((f"try {a['id']} ({a['task']}@{a['day']}) recorded {a['state']} at {recorded:.3f} "
                             f"but ran until {alive:.3f} ({alive - recorded:.1f} s later, grace {GRACE} s)",
                             run.history_of(a["id"])))
    v.add("5 killed means killed", problems, f"{n} lost or killed tries that had started, checked")

    # 6. Each try's stored log is exactly what the command printed, in order.
    problems, n = [], 0
    for a in store["attempts"]:
        if a["id"] not in run.starts:
            continue
        n += 1
        chunks, stored, gap = store["logs"].get(a["id"], []), b"", None
        for offset, data in chunks:
            if offset != len(stored) and gap is None:
                gap = f"a chunk at byte {offset} after {len(stored)} bytes"
            stored += data
        stored = unstamped(stored)
        printed = run.printed(a["id"]) or b""
        finished = bool(run.ends.get(a["id"])) and a["state"] in ("success", "failed")
        bad = None
        if gap:
            bad = gap
        elif finished and stored != printed:
            bad = f"stored {len(stored)} bytes, the command printed {len(printed)}: {first_difference(stored, printed)}"
        elif not finished and not expected_prefix(stored, a["id"], printed):
            bad = f"stored {len(stored)} bytes are not a prefix of what it printed: {first_difference(stored, printed)}"
        if bad:
            problems.append((f"try {a['id']} ({a['state']}): {bad}", run.history_of(a["id"])))
    v.add("6 each stored log is exactly what was printed", problems, f"{n} tries' logs compared")

    # 7. States move only along the state machine's edges.
    problems = []
    for a in store["attempts"]:
        if a["state"] not in FINAL_TRY_STATES | {"running", "killing"}:
            problems.append((f"try {a['id']} in unknown state {a['state']}", run.history_of(a["id"])))
    for key, tries in run.by_instance.items():
        for earlier, later in zip(tries, tries[1:]):
            if earlier["state"] == "success":
                problems.append((f"{key[0]}@{key[1]}: try {later['try']} after a successful try {earlier['try']}",
                                 run.history_of(earlier["id"], later["id"])))
            if earlier["finished_at"] is None or later["started_at"] < earlier["finished_at"]:
                problems.append((f"{key[0]}@{key[1]}: the store started try {later['try']} before try "
                                 f"{earlier['try']} was finished", run.history_of(earlier["id"], later["id"])))
        row = rows.get(key)
        if row:
            last = tries[-1]["state"]
            ok = {"success": last == "success", "failed": last in ("failed", "timed_out", "lost", "killed"),
                  "up_for_retry": last != "success", "queued": last != "success",
                  "running": last == "running", "waiting": False, "killed": False}.get(row["state"], False)
            if not ok:
                problems.append((f"{key[0]}@{key[1]} is {row['state']} but its last try ({tries[-1]['try']}) is "
                                 f"{last}", run.history_of(*[t["id"] for t in tries])))
    for attempt, recs in run.starts.items():
        r = recs[0][1]
        a = run.attempts.get(attempt)
        if a is None:
            problems.append((f"try {attempt} ran but the store has no such try", run.history_of(attempt)))
        elif a["try"] != r["try"]:
            problems.append((f"try {attempt} ran as try {r['try']}, the store says {a['try']}", run.history_of(attempt)))
    actions = defaultdict(int)
    for op in store["operations"]:
        actions[op.get("action")] += 1
        if any(word in (op.get("action") or "") for word in CONFLICTS):
            problems.append((f"operation {op.get('action')} {op.get('target')} that the suite never issued", []))
    v.add("7 states move only along the state machine's edges", problems,
          f"{len(store['attempts'])} tries; operations: " + ", ".join(f"{k} x{n}" for k, n in sorted(actions.items())))

    # 8. Nothing stays queued or running at the end.
    problems = [(f"{r['task']}@{r['etl_day']} is still {r['state']}", [])
                for r in store["instances"] if r["state"] in ("queued", "running", "up_for_retry")]
    problems += [(f"try {a['id']} is still {a['state']}", run.history_of(a["id"]))
                 for a in store["attempts"] if a["state"] in ("running", "killing")]
    v.add("8 nothing stays queued or running", problems, "none queued, running or up for retry")

    # 9. One leader at the end, and the fencing tokens only grow.
    problems = []
    final = [c for c in store["coordinators"] if c.get("leader")]
    if len(final) != 1:
        problems.append((f"{len(final)} leaders at the end: {final}", []))
    last = None
    for s in run.samples:
        for token in s["tokens"]:
            if last is not None and token < last[0]:
                problems.append((f"the leader's fencing token went from {last[0]} (at +{last[1]:.1f} s) to "
                                 f"{token} (at +{s['t']:.1f} s)", []))
            last = (token, s["t"])
    for key, tries in run.by_instance.items():
        for earlier, later in zip(tries, tries[1:]):
            if later["epoch"] < earlier["epoch"]:
                problems.append((f"{key[0]}@{key[1]}: try {later['try']} carries epoch {later['epoch']}, below "
                                 f"try {earlier['try']}'s {earlier['epoch']}",
                                 run.history_of(earlier["id"], later["id"])))
    top = max((c.get("token") or 0 for c in final), default=0)
    over = [a for a in store["attempts"] if a["epoch"] > top]
    if final and over:
        problems.append((f"{len(over)} tries carry an epoch above the final leader's token {top}, e.g. "
                         f"{over[0]['id']} with {over[0]['epoch']}", run.history_of(over[0]["id"])))
    tokens = sorted({t for s in run.samples for t in s["tokens"]})
    v.add("9 one leader at the end; fencing tokens only grow", problems,
          f"leader at the end: {final[0].get('address') if len(final) == 1 else '-'}; tokens seen {tokens}")
    return v


def unstamped(stored):
    """The stored log as the command printed it: the agent stores each line of standard output
    as `<time> out| <text>` and adds notes of its own as `<time> err| [goflow: ...]`; any other
    line is kept whole, so it differs from what was printed."""
    out = []
    for line in stored.split(b"\n"):
        if NOTE.match(line):
            continue  # goflow's own note, e.g. `err| [goflow: exit code 1]`: not the command's
        m = STAMPED.match(line)
        out.append(m.group(1) if m else line)
    return b"\n".join(out)


def expected_prefix(stored, attempt, printed):
    """A killed try's log: whole numbered lines 1..k of this attempt (k at most what was recorded
    as printed, plus the one line it may have printed but not recorded yet)."""
    if stored and not stored.endswith(b"\n"):
        stored = stored[:stored.rfind(b"\n") + 1]  # a line cut by the kill
    lines = stored.decode(errors="replace").splitlines()
    for i, line in enumerate(lines, 1):
        if line != f"chaos {attempt} line {i:04d}":
            return False
    return len(lines) <= printed.count(b"\n") + 1


def first_difference(stored, printed):
    a, b = stored.decode(errors="replace").splitlines(), printed.decode(errors="replace").splitlines()
    for i, (x, y) in enumerate(zip(a, b), 1):
        if x != y:
            return f"line {i}: stored {x!r}, printed {y!r}"
    if len(a) > len(b):
        return f"stored {len(a)} lines, printed {len(b)}; stored line {len(b) + 1}: {a[len(b)]!r}"
    if len(a) < len(b):
        return f"stored {len(a)} lines, printed {len(b)}; first missing: {b[len(a)]!r}"
    return "same lines, different bytes"


def figures(run):
    """Per fault kind: time to a new leader, time to re-dispatch a dead agent's tries, tries lost."""
    out = defaultdict(lambda: {"faults": 0, "new_leader_s": [], "redispatch_s": [], "tries_lost": 0})
    faults = sorted(run.faults, key=lambda f: f["wall"])
    for i, f in enumerate(faults):
        # A partition of the coordinator that led is its own row: its new-leader time is the
        # takeover from a leader cut off (not dead), the one that did not lead moves nothing.
        row = out[f["kind"] + (" (leader)" if f.get("led") else "")]
        row["faults"] += 1
        until = faults[i + 1]["wall"] if i + 1 < len(faults) else run.ended_wall
        before = [s for s in run.samples if s["wall"] <= f["wall"] and s["tokens"]]
        token = before[-1]["tokens"][0] if before else None
        if token is not None:
            later = next((s for s in run.samples if f["wall"] < s["wall"] <= until and s["tokens"]
                          and s["tokens"][0] > token), None)
            if later:
                row["new_leader_s"].append(later["wall"] - f["wall"])
        for a in run.store["attempts"]:
            done = (a["finished_at"] or 0) / 1000
            if a["state"] in ("lost", "killed") and f["wall"] <= done < until:
                row["tries_lost"] += 1
                if f["kind"].startswith("agent") and a["agent"] == f.get("agent_id"):
                    nxt = [t for t in run.by_instance[(a["task"], a["day"])] if t["try"] > a["try"]]
                    if nxt and nxt[0]["id"] in run.starts:
                        row["redispatch_s"].append(run.starts[nxt[0]["id"]][0][1]["wall"] - f["wall"])
    result = []
    for kind, row in sorted(out.items()):
        result.append({"kind": kind, "faults": row["faults"], "tries_lost": row["tries_lost"],
                       "new_leader_s": summary(row["new_leader_s"]), "redispatch_s": summary(row["redispatch_s"])})
    return result


def summary(values):
    if not values:
        return None
    return {"n": len(values), "median": round(statistics.median(values), 2), "max": round(max(values), 2)}
