"""The floor: no engine, just what any scheduler must do for a task. A loop that, for every
task, commits three state changes to SQLite (queued, running, success; WAL, synchronous=NORMAL)
and runs `sh -c true`. fanout200 keeps two processes running at once (this machine's 2 cores),
then runs the join."""
import os, sqlite3, subprocess

from common import CHAIN, FANOUT, now

NAME = "the floor: a loop of `sh -c true` + 3 SQLite commits a task"


def version():
    return f"SQLite {sqlite3.sqlite_version}"


class Store:
    """One SQLite file; every statement is its own commit (autocommit)."""

    def __init__(self, folder):
        self.db = sqlite3.connect(os.path.join(folder, "floor.db"), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE instances (task TEXT PRIMARY KEY, state TEXT NOT NULL, "
                        "started REAL, finished REAL)")

    def queued(self, task):
        self.db.execute("INSERT INTO instances (task, state) VALUES (?, 'queued')", (task,))

    def running(self, task):
        self.db.execute("UPDATE instances SET state = 'running', started = ? WHERE task = ?", (now(), task))

    def succeeded(self, task):
        finished = now()
        self.db.execute("UPDATE instances SET state = 'success', finished = ? WHERE task = ?", (finished, task))
        return finished


def start(store, task):
    store.queued(task)
    store.running(task)
    return subprocess.Popen(["sh", "-c", "true"])


def finish(store, task, process):
    if process.wait() != 0:
        raise RuntimeError(f"{task}: sh -c true exited {process.returncode}")
    return store.succeeded(task)


def run(workload, folder, _redis_url, measure_memory):
    """Runs the workload once: (trigger, last finish, PSS MB of the loop)."""
    store = Store(folder)
    finish(store, "warmup", start(store, "warmup"))
    trigger = now()
    if workload == "chain50":
        for i in range(CHAIN):
            last = finish(store, f"chain_{i}", start(store, f"chain_{i}"))
        return trigger, last, measure_memory()
    waiting = [f"leaf_{i}" for i in range(FANOUT)]
    running = {}  # pid -> (task, Popen)
    while waiting or running:
        while waiting and len(running) < 2:
            task = waiting.pop(0)
            process = start(store, task)
            running[process.pid] = (task, process)
        pid, status = os.waitpid(-1, 0)
        task, process = running.pop(pid)
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen.wait answers it
        finish(store, task, process)
    last = finish(store, "join", start(store, "join"))
    return trigger, last, measure_memory()
