#!/usr/bin/env python3
"""The command every task of scripts/chaos runs (standard library only).

Usage: python3 chaos_task.py WORKDIR MODE SECS LINES
  MODE: ok (exit 0), fail (always exit 1), flaky:N (exit 1 on tries before N, then 0).
It prints LINES numbered lines spread over SECS seconds, each naming its attempt, so that the
checker can compare the stored log with what was printed. It records:
  WORKDIR/history.jsonl  a start and an end record (one line each, appended with O_APPEND)
  WORKDIR/att/ATTEMPT.out  every line printed, appended after it was printed (the prefix a
                         killed try printed)
  WORKDIR/att/ATTEMPT.beat  "MONO WALL" of its last sign of life, rewritten every 0.2 s (a
                         try whose group was killed stops beating)
"""
import hashlib, json, os, sys, time

BEAT = 0.2


def record(path, rec):
    """One line, one write() on an O_APPEND descriptor: concurrent tries never interleave."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(rec, separators=(",", ":")) + "\n").encode())
    finally:
        os.close(fd)


def main():
    work, mode, secs, lines = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    env = os.environ
    attempt = env.get("GOFLOW_ATTEMPT_ID", "?")
    try_number = int(env.get("GOFLOW_TRY_NUMBER", "0") or 0)
    base = {"task": env.get("GOFLOW_TASK_ID", "?"), "day": env.get("GOFLOW_ETL_DAY", "?"),
            "try": try_number, "attempt": attempt, "pid": os.getpid(), "pgid": os.getpgid(0)}
    history = os.path.join(work, "history.jsonl")
    out_path = os.path.join(work, "att", attempt + ".out")
    beat_fd = os.open(os.path.join(work, "att", attempt + ".beat"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

    def beat():
        os.pwrite(beat_fd, f"{time.monotonic():.6f} {time.time():.6f}\n".encode(), 0)

    beat()
    record(history, {"ev": "start", **base, "mono": time.monotonic(), "wall": time.time()})
    digest = hashlib.sha256()
    out = open(out_path, "a")
    step = secs / max(lines, 1)
    for i in range(1, lines + 1):
        line = f"chaos {attempt} line {i:04d}\n"
        sys.stdout.write(line)
        sys.stdout.flush()
        out.write(line)
        out.flush()
        digest.update(line.encode())
        deadline = time.monotonic() + step
        while True:
            beat()
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(BEAT, left))
    if mode == "fail":
        code = 1
    elif mode.startswith("flaky:"):
        code = 1 if try_number < int(mode.split(":", 1)[1]) else 0
    else:
        code = 0
    record(history, {"ev": "end", **base, "mono": time.monotonic(), "wall": time.time(), "exit": code,
                     "lines": lines, "sha256": digest.hexdigest()})
    beat()
    sys.exit(code)


if __name__ == "__main__":
    main()
