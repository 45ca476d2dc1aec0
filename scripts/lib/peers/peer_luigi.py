"""Luigi with its local scheduler and 2 workers (each task in a process of its own): chain50 as
50 tasks each requiring the one before, fanout200 as a join requiring 200 leaves. Every task
runs `true` as a subprocess, then writes the time it finished into its target, a local file:
how Luigi knows a task is done (it keeps no run history)."""
import logging, os, subprocess

import luigi

from common import CHAIN, FANOUT, now

NAME = "Luigi, local scheduler, 2 workers"
TARGETS = {"folder": None}  # set before a build; the forked workers inherit it


def version():
    return f"Luigi {luigi.__version__}"


class TrueTask(luigi.Task):
    def output(self):
        return luigi.LocalTarget(os.path.join(TARGETS["folder"], self.task_id))

    def run(self):
        subprocess.run(["true"], check=True)
        with self.output().open("w") as f:
            f.write(repr(now()))


class Chain(TrueTask):
    i = luigi.IntParameter()

    def requires(self):
        return [Chain(i=self.i - 1)] if self.i > 0 else []


class Leaf(TrueTask):
    i = luigi.IntParameter()


class Join(TrueTask):
    def requires(self):
        return [Leaf(i=i) for i in range(FANOUT)]


class Warmup(TrueTask):
    pass


def build(task):
    if not luigi.build([task], workers=2, local_scheduler=True, log_level="WARNING"):
        raise RuntimeError(f"luigi.build({task}) did not succeed")


def finished_at(task):
    with task.output().open("r") as f:
        return float(f.read())


def run(workload, folder, _redis_url, measure_memory):
    """Runs the workload once: (trigger, last finish, PSS MB of the driver)."""
    TARGETS["folder"] = os.path.join(folder, "targets")
    os.makedirs(TARGETS["folder"])
    logging.getLogger("luigi-interface").setLevel(logging.WARNING)
    build(Warmup())
    trigger = now()
    final = Chain(i=CHAIN - 1) if workload == "chain50" else Join()
    build(final)
    # The driver's PSS: every task's process has exited by now (they are forks of it).
    return trigger, finished_at(final), measure_memory()
