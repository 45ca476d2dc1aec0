#!/usr/bin/env python3
"""Tests of scripts/chaos's checker on hand-made histories and stores: a clean run passes, and
each kind of breakage is named by its invariant. Run: python3 scripts/lib/test_chaos_check.py"""
import json, os, sys, tempfile, unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chaos_check  # noqa: E402

STAMP = "2026-12-06T10:00:00.000Z"


class Builder:
    """A run's folder and store, one try at a time."""

    def __init__(self, folder):
        self.folder = folder
        os.makedirs(os.path.join(folder, "att"))
        self.records, self.attempts, self.logs, self.instances = [], [], {}, {}

    def try_(self, task, day, n, start, end=None, exit=0, lines=3, state="success", finished=None, stored=None,
             beat=None, epoch=1, instance=1):
        attempt = f"{instance}-{n}"
        base = {"task": task, "day": day, "try": n, "attempt": attempt, "pid": 1, "pgid": 1}
        self.records.append({"ev": "start", **base, "mono": start, "wall": 1000 + start})
        printed = "".join(f"chaos {attempt} line {i:04d}\n" for i in range(1, lines + 1))
        if end is not None:
            self.records.append({"ev": "end", **base, "mono": end, "wall": 1000 + end, "exit": exit, "lines": lines})
        with open(os.path.join(self.folder, "att", attempt + ".out"), "w") as f:
            f.write(printed)
        last = beat if beat is not None else (end if end is not None else start)
        with open(os.path.join(self.folder, "att", attempt + ".beat"), "w") as f:
            f.write(f"{last} {1000 + last}\n")
        text = printed if stored is None else stored
        self.logs[attempt] = [(0, "".join(f"{STAMP} out| {line}\n" for line in text.splitlines()).encode())]
        done = finished if finished is not None else (end if end is not None else start + 1)
        self.attempts.append({"id": attempt, "task": task, "day": day, "try": n, "epoch": epoch, "agent": "a1",
                              "state": state, "started_at": int((1000 + start) * 1000),
                              "finished_at": int((1000 + done) * 1000)})
        self.instances[(task, day)] = state if state in ("success", "failed") else "failed"

    def run(self, expected=None):
        with open(os.path.join(self.folder, "history.jsonl"), "w") as f:
            for r in sorted(self.records, key=lambda r: r["mono"]):
                f.write(json.dumps(r) + "\n")
        instances = [{"task": t, "etl_day": d, "state": s} for (t, d), s in self.instances.items()]
        instances.append({"task": "cron_tick", "etl_day": "20261205", "state": "success"})
        store = {"instances": instances, "attempts": self.attempts, "logs": self.logs, "operations": [],
                 "coordinators": [{"address": "127.0.0.1:1", "leader": True, "token": 2}]}
        samples = [{"t": 0, "wall": 1000, "tokens": [1]}, {"t": 5, "wall": 1005, "tokens": [2]}]
        expected = expected or {k: "ok" for k in self.instances}
        return chaos_check.Run(self.folder, store, samples, [], expected,
                               {"task": "cron_tick", "due_days": ["20261205"]}, 1000, 1100)


def failing(verdicts):
    return sorted(i["name"].split()[0] for i in verdicts.invariants if not i["ok"])


class CheckerTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.b = Builder(self.tmp.name)

    def tearDown(self):
        self.tmp.cleanup()

    def test_a_clean_run_passes(self):
        self.b.try_("a", "20250101", 1, 1.0, 2.0)
        self.b.try_("b", "20250101", 1, 1.0, 1.5, exit=1, state="lost", finished=3.0, stored="", instance=2)
        self.b.try_("b", "20250101", 2, 4.0, 5.0, instance=2)
        self.b.instances[("b", "20250101")] = "success"
        self.assertEqual(failing(chaos_check.check(self.b.run())), [])

    def test_overlapping_tries_break_1(self):
        self.b.try_("a", "20250101", 1, 1.0, 10.0, state="lost", finished=5.0, instance=1)
        self.b.try_("a", "20250101", 2, 6.0, 8.0, instance=1)
        verdicts = chaos_check.check(self.b.run())
        self.assertIn("1", failing(verdicts))
        self.assertIn("5", failing(verdicts))  # ran 5 s past its loss
        self.assertTrue(any('"attempt": "1-1"' in line for v in verdicts.violations for line in v["history"]))

    def test_a_try_after_success_breaks_2(self):
        self.b.try_("a", "20250101", 1, 1.0, 2.0, state="lost", finished=3.0)
        self.b.try_("a", "20250101", 2, 4.0, 5.0)
        self.assertIn("2", failing(chaos_check.check(self.b.run())))

    def test_a_rerun_after_a_success_is_allowed_only_when_its_agent_was_frozen(self):
        self.b.try_("a", "20250101", 1, 1.0, 2.0, state="lost", finished=8.0)
        self.b.try_("a", "20250101", 2, 9.0, 10.0)
        run = self.b.run()
        run.faults.append({"kind": "agent_sigstop", "agent_id": "a1", "wall": 1001.5, "healed_wall": 1009.5})
        verdicts = chaos_check.check(run)
        self.assertEqual(failing(verdicts), [])
        self.assertIn("frozen or killed as it ended (allowed): a@20250101", verdicts.invariants[1]["details"])
        run.faults[0]["agent_id"] = "a2"  # another agent was frozen: no excuse
        self.assertEqual(failing(chaos_check.check(run)), ["2"])

    def test_a_rerun_after_a_success_is_allowed_when_its_agent_was_killed_right_after(self):
        self.b.try_("a", "20250101", 1, 1.0, 2.0, state="lost", finished=8.0)
        self.b.try_("a", "20250101", 2, 9.0, 10.0)
        run = self.b.run()
        run.faults.append({"kind": "agent_sigkill", "agent_id": "a1", "wall": 1002.5})
        self.assertEqual(failing(chaos_check.check(run)), [])
        run.faults[0]["wall"] = 1004.0  # killed 2 s after the end: its report had time
        self.assertEqual(failing(chaos_check.check(run)), ["2"])

    def test_a_rerun_is_allowed_when_its_agent_was_killed_while_the_try_ran_on(self):
        # The agent died at 1001.9; its shim let the try end at 1002.0, with nobody to report
        # it; the store declared it lost at 1008.0 and ran it again.
        self.b.try_("a", "20250101", 1, 1.0, 2.0, state="lost", finished=8.0)
        self.b.try_("a", "20250101", 2, 9.0, 10.0)
        run = self.b.run()
        run.faults.append({"kind": "agent_sigkill", "agent_id": "a1", "wall": 1001.9})
        self.assertEqual(failing(chaos_check.check(run)), [])
        # Declared lost before the try ended: the end is no lost report, the rerun no excuse.
        run.store["attempts"][0]["finished_at"] = 1001_950
        self.assertEqual(failing(chaos_check.check(run)), ["2"])

    def test_an_unexpected_outcome_breaks_3(self):
        self.b.try_("bad", "20250101", 1, 1.0, 2.0, exit=1, state="failed")
        self.assertEqual(failing(chaos_check.check(self.b.run())), ["3"])
        self.assertEqual(failing(chaos_check.check(self.b.run({("bad", "20250101"): "fail"}))), [])

    def test_a_success_without_its_end_breaks_4(self):
        self.b.try_("a", "20250101", 1, 1.0, None, state="success", finished=2.0)
        self.assertIn("4", failing(chaos_check.check(self.b.run())))

    def test_a_gap_or_repeat_in_the_log_breaks_6(self):
        self.b.try_("a", "20250101", 1, 1.0, 2.0, stored="chaos 1-1 line 0001\nchaos 1-1 line 0003\n")
        self.b.try_("b", "20250101", 1, 1.0, 2.0, lines=2, instance=2,
                    stored="chaos 2-1 line 0001\nchaos 2-1 line 0001\nchaos 2-1 line 0002\n")
        verdicts = chaos_check.check(self.b.run())
        self.assertEqual(failing(verdicts), ["6"])
        self.assertEqual(len(verdicts.violations), 2)

    def test_a_cut_log_of_a_lost_try_is_a_prefix(self):
        self.b.try_("a", "20250101", 1, 1.0, None, lines=3, state="lost", finished=2.0,
                    stored="chaos 1-1 line 0001\n")
        self.b.try_("a", "20250101", 2, 3.0, 4.0)
        self.assertEqual(failing(chaos_check.check(self.b.run())), [])

    def test_goflow_notes_are_not_output_but_other_lines_are(self):
        self.b.try_("a", "20250101", 1, 1.0, 2.0, lines=1)
        self.b.logs["1-1"][0] = (0, self.b.logs["1-1"][0][1] + f"{STAMP} err| [goflow: exit code 0]\n".encode())
        self.assertEqual(failing(chaos_check.check(self.b.run())), [])
        self.b.logs["1-1"][0] = (0, self.b.logs["1-1"][0][1] + f"{STAMP} err| oops\n".encode())
        self.assertEqual(failing(chaos_check.check(self.b.run())), ["6"])

    def test_a_lower_epoch_or_token_breaks_9(self):
        self.b.try_("a", "20250101", 1, 1.0, 2.0, exit=1, state="lost", finished=3.0, epoch=2)
        self.b.try_("a", "20250101", 2, 4.0, 5.0, epoch=1)
        run = self.b.run()
        run.samples.append({"t": 9, "wall": 1009, "tokens": [1]})
        self.assertEqual(failing(chaos_check.check(run)), ["9"])

    def test_something_left_running_breaks_8(self):
        self.b.try_("a", "20250101", 1, 1.0, None, state="running")
        self.b.attempts[0]["finished_at"] = None
        run = self.b.run()
        run.store["instances"][0]["state"] = "running"
        self.assertIn("8", failing(chaos_check.check(run)))

    def test_a_partition_of_the_leader_has_its_new_leader_time(self):
        self.b.try_("a", "20250101", 1, 1.0, 2.0)
        run = self.b.run()
        run.samples += [{"t": 0, "wall": 1000.0, "tokens": [1]}, {"t": 4, "wall": 1004.0, "tokens": [1]},
                        {"t": 5, "wall": 1005.0, "tokens": [2]}]
        run.faults += [{"kind": "network_partition", "led": True, "wall": 1001.0},
                       {"kind": "network_partition", "led": False, "wall": 1010.0}]
        rows = {r["kind"]: r for r in chaos_check.figures(run)}
        self.assertEqual(rows["network_partition (leader)"]["new_leader_s"], {"n": 1, "median": 4.0, "max": 4.0})
        self.assertIsNone(rows["network_partition"]["new_leader_s"])


if __name__ == "__main__":
    unittest.main()
