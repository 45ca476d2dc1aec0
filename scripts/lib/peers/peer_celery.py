"""Celery with Redis as broker and result backend, one worker with 2 prefork processes: chain50
as a chain of 50 tasks, fanout200 as a chord (a group of 200, then the join). Every task runs
`true` as a subprocess and answers the time it finished."""
import os, subprocess, sys, time

from celery import Celery, chain, chord

from common import CHAIN, FANOUT, now, stop

NAME = "Celery + Redis, 2 worker processes"
QUEUE = "goflow_peers"
# The worker imports this module too; it finds the broker in the environment.
app = Celery("peer_celery", broker=os.environ.get("PEERS_REDIS_URL"), backend=os.environ.get("PEERS_REDIS_URL"))
app.conf.update(task_default_queue=QUEUE, result_expires=600, broker_connection_retry_on_startup=True,
                worker_hijack_root_logger=False)


def version():
    import celery, kombu, redis
    return f"Celery {celery.__version__}, kombu {kombu.__version__}, redis-py {redis.__version__}"


@app.task(name="peer_celery.true_task")
def true_task():
    subprocess.run(["true"], check=True)
    return now()


def start_worker(folder, redis_url):
    command = [sys.executable, "-m", "celery", "-A", "peer_celery", "worker", "--pool", "prefork",
               "--concurrency", "2", "--queues", QUEUE, "--without-gossip", "--without-mingle",
               "--without-heartbeat", "--loglevel", "WARNING"]
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.abspath(__file__)), PEERS_REDIS_URL=redis_url)
    log = open(os.path.join(folder, "celery-worker.log"), "w")
    return subprocess.Popen(command, env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)


def run(workload, folder, redis_url, measure_memory):
    """Runs the workload once: (trigger, last finish, PSS MB of the driver, worker and Redis)."""
    app.conf.update(broker_url=redis_url, result_backend=redis_url)
    app.connection_for_write().default_channel.client.flushdb()
    worker = start_worker(folder, redis_url)
    try:
        # The warm-up, as goflow's: also waits until the worker takes tasks.
        deadline = time.time() + 60
        while True:
            try:
                true_task.delay().get(timeout=5)
                break
            except Exception:
                if worker.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"the Celery worker did not start (exit {worker.poll()}); "
                                       f"see {folder}/celery-worker.log")
        trigger = now()
        if workload == "chain50":
            result = chain(true_task.si() for _ in range(CHAIN)).apply_async()
        else:
            result = chord(true_task.si() for _ in range(FANOUT))(true_task.si())
        last = result.get(timeout=300)
        return trigger, last, measure_memory()
    finally:
        stop(worker)
        app.connection_for_write().default_channel.client.flushdb()
