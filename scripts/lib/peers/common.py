"""What every peer's driver shares: the two workloads' shapes, the clock, and the memory of a
process tree. Standard library only."""
import os, subprocess, time

# chain50: 50 `true` tasks, each after the one before. fanout200: 200 independent `true` tasks,
# then one join task after all of them (docs/benchmarks.md, "The peers").
CHAIN = 50
FANOUT = 200
WORKLOADS = {"chain50": CHAIN, "fanout200": FANOUT + 1}  # workload -> tasks run


def now():
    """Wall-clock seconds: the drivers and the peers' worker processes stamp with the same clock."""
    return time.time()


def children(pid):
    """The pids of pid's live descendants, from /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                # The name (field 2) may hold spaces; the parent pid is the 2nd field after ')'.
                parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            pass
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for child, its_parent in parents.items():
            if its_parent == parent:
                found.append(child)
                todo.append(child)
    return found


def pss_mb(pids):
    """The summed PSS of these processes in MB (shared pages counted once across them); the
    ones gone meanwhile count nothing."""
    total_kb = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                total_kb += next((int(line.split()[1]) for line in f if line.startswith("Pss:")), 0)
        except OSError:
            pass
    return total_kb / 1024


def tree_pss_mb():
    """This process's PSS with every live descendant's (a peer's workers)."""
    me = os.getpid()
    return pss_mb([me] + children(me))


def stop(process):
    """Stops a peer's helper process (a worker, a server): SIGTERM for a warm shutdown, SIGKILL
    after 20 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
