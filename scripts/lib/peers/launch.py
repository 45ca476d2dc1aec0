"""How scripts/bench installs the peers and runs one of them once: a fresh driver process
(run.py) in its own process group, so that a failure, a timeout or Ctrl-C stops its workers,
servers and Redis with it. Standard library only (it runs in the bench's Python)."""
import os, signal, subprocess

from . import summary

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))


class PeerFailed(RuntimeError):
    """A peer's run that failed; the message says what, with its driver's log."""


def install():
    """scripts/ensure-tools --peers (the pins in requirements.txt, into .tools/peers when missing
    or changed); answers that venv's python3."""
    r = subprocess.run([os.path.join(ROOT, "scripts", "ensure-tools"), "--peers"], stdout=subprocess.PIPE, text=True)
    if r.returncode != 0 or not r.stdout.strip():
        raise PeerFailed("scripts/ensure-tools --peers failed: the peers cannot be run")
    return r.stdout.strip().splitlines()[-1]


def log_tail(path, lines=30):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as e:
        return f"({e})\n"


def run_once(python, peer, workload, folder, redis_url=None, timeout=600):
    """One run of one peer on one workload: the driver's parsed result (summary.parse_result).
    Its log is folder/driver.log; its temporary files (Dagster's, Prefect's) go to the folder."""
    command = [python, os.path.join(HERE, "run.py"), peer, workload, "--folder", folder]
    command += ["--redis-url", redis_url] if redis_url else []
    log_path = os.path.join(folder, "driver.log")
    with open(log_path, "w") as err:
        driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, text=True,
                                  cwd=folder, start_new_session=True, env=dict(os.environ, TMPDIR=folder))
    try:
        out, _ = driver.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise PeerFailed(f"{peer} {workload}: not done within {timeout} s; its log ends:\n{log_tail(log_path)}")
    finally:
        # The whole group, whatever it left behind (a worker of a driver that died).
        try:
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        driver.wait()
    if driver.returncode != 0:
        raise PeerFailed(f"{peer} {workload}: the driver exited {driver.returncode}; its log ends:\n"
                         f"{log_tail(log_path)}")
    try:
        return summary.parse_result(out)
    except ValueError as e:
        raise PeerFailed(f"{peer} {workload}: {e}")
