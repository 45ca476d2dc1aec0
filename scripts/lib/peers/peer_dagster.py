"""Dagster, a job run in-process (`execute_in_process`: its in-process executor, an ephemeral
instance): chain50 as 50 ops each after the one before, fanout200 as 200 ops and a join op after
all of them. Every op runs `true` as a subprocess and answers the time it finished."""
import subprocess

import dagster as dg

from common import CHAIN, FANOUT, now

NAME = "Dagster, a job in-process"


def version():
    return f"Dagster {dg.__version__}"


def true_op(name):
    """An op that runs `true`; its one input only orders it after its upstreams (Nothing)."""
    @dg.op(name=name, ins={"after": dg.In(dg.Nothing)})
    def run_true():
        subprocess.run(["true"], check=True)
        return now()
    return run_true


def chain_job():
    ops = [true_op(f"chain_{i}") for i in range(CHAIN)]

    @dg.job(name="chain50")
    def job():
        last = ops[0]()
        for op in ops[1:]:
            last = op(after=last)
    return job, [op.name for op in ops]


def fanout_job():
    leaves = [true_op(f"leaf_{i}") for i in range(FANOUT)]
    join = true_op("join")

    @dg.job(name="fanout200")
    def job():
        join(after=[leaf() for leaf in leaves])
    return job, [op.name for op in leaves] + ["join"]


def warmup_job():
    op = true_op("warmup")

    @dg.job(name="warmup")
    def job():
        op()
    return job


def execute(job):
    result = job.execute_in_process()
    if not result.success:
        raise RuntimeError(f"the Dagster job {job.name} did not succeed")
    return result


def run(workload, folder, _redis_url, measure_memory):
    """Runs the workload once: (trigger, last finish, PSS MB of the process)."""
    job, names = chain_job() if workload == "chain50" else fanout_job()
    execute(warmup_job())
    trigger = now()
    result = execute(job)
    return trigger, max(result.output_for_node(name) for name in names), measure_memory()
