"""Prefect with its local API: a `prefect server start` of its own (SQLite, in the run's folder),
and a flow run from this process against it. chain50: 50 task calls, each after the one before;
fanout200: 200 tasks submitted to the flow's default task runner (threads), then a join that
waits for them all. Every task runs `true` as a subprocess and answers the time it finished."""
import os, socket, subprocess, sys, time, urllib.request

from common import CHAIN, FANOUT, now, stop

NAME = "Prefect, local API server"


def version():
    import prefect
    return f"Prefect {prefect.__version__}"


def start_server(folder):
    """A Prefect server on a free port with its own home and SQLite file; its API URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home = os.path.join(folder, "prefect")
    os.environ.update(PREFECT_HOME=home, PREFECT_SERVER_ANALYTICS_ENABLED="false",
                      PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home}/prefect.db",
                      PREFECT_API_URL=f"http://127.0.0.1:{port}/api", PREFECT_LOGGING_LEVEL="WARNING")
    log = open(os.path.join(folder, "prefect-server.log"), "w")
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
                if r.status == 200:
                    return server
        except OSError:
            pass
        if server.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"the Prefect server did not start; see {folder}/prefect-server.log")
        time.sleep(0.1)


def run(workload, folder, _redis_url, measure_memory):
    """Runs the workload once: (trigger, last finish, PSS MB of this process and the server)."""
    server = start_server(folder)
    try:
        from prefect import flow, task  # after the environment names the server

        @task
        def run_true():
            subprocess.run(["true"], check=True)
            return now()

        @flow
        def warmup():
            return run_true()

        @flow
        def chain50():
            return [run_true() for _ in range(CHAIN)][-1]

        @flow
        def fanout200():
            leaves = [run_true.submit() for _ in range(FANOUT)]
            return run_true.submit(wait_for=leaves).result()

        warmup()
        trigger = now()
        last = chain50() if workload == "chain50" else fanout200()
        return trigger, last, measure_memory()
    finally:
        stop(server)
