#!/usr/bin/env python3
"""Runs one peer on one workload once, in a fresh process, and prints one JSON line:
{"peer", "name", "version", "workload", "tasks", "wall_s", "pss_mb"}.

Usage: run.py floor|celery|luigi|dagster|prefect chain50|fanout200 --folder DIR [--redis-url URL]
wall_s = the trigger (just before the run is handed to the peer, after a one-task warm-up) to the
last task's finish, stamped by the task itself; pss_mb = the summed PSS of the driver and its
live descendants (Celery's worker and Redis, Prefect's server) once all is done. Celery needs
--redis-url (a database it may empty: it is flushed before and after) or redis-server on PATH (a
private one is started on a free port in DIR)."""
import argparse, importlib, json, os, socket, subprocess, sys, time

sys.dont_write_bytecode = True
import common  # noqa: E402

MODULES = {"floor": "peer_floor", "celery": "peer_celery", "luigi": "peer_luigi", "dagster": "peer_dagster",
           "prefect": "peer_prefect"}


def private_redis(folder):
    """A redis-server on a free port, nothing saved; stopped with its process group."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(os.path.join(folder, "redis.log"), "w")
    server = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                               "--appendonly", "no", "--dir", folder], stdout=log, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL)
    deadline = time.time() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return server, f"redis://127.0.0.1:{port}/0"
        except OSError:
            pass
        if server.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"redis-server did not start; see {folder}/redis.log")
        time.sleep(0.02)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("peer", choices=sorted(MODULES))
    ap.add_argument("workload", choices=sorted(common.WORKLOADS))
    ap.add_argument("--folder", required=True)
    ap.add_argument("--redis-url")
    args = ap.parse_args()
    peer = importlib.import_module(MODULES[args.peer])
    redis, url = None, args.redis_url
    if args.peer == "celery" and not url:
        redis, url = private_redis(args.folder)
    try:
        trigger, last, pss = peer.run(args.workload, args.folder, url, common.tree_pss_mb)
    finally:
        if redis is not None:
            redis.terminate()
            redis.wait(timeout=15)
    print(json.dumps({"peer": args.peer, "name": peer.NAME, "version": peer.version(), "workload": args.workload,
                      "tasks": common.WORKLOADS[args.workload], "wall_s": round(last - trigger, 4),
                      "pss_mb": round(pss, 1)}), flush=True)


if __name__ == "__main__":
    main()
