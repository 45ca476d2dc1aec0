#!/usr/bin/env python3
"""Tests of how scripts/bench reads and sums up the peers' runs (scripts/lib/peers/summary.py):
a driver's line parsed or refused, medians per peer and workload, and the footer falling back
to the dated canned figures. Run: python3 scripts/lib/test_peers_summary.py"""
import json, os, sys, unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import summary  # noqa: E402


def line(peer, workload, wall, pss=10.0):
    return json.dumps({"peer": peer, "name": f"{peer} name", "version": f"{peer} 1.0", "workload": workload,
                       "tasks": 50, "wall_s": wall, "pss_mb": pss})


class ParseResult(unittest.TestCase):
    def test_the_last_line_is_the_result(self):
        result = summary.parse_result("warming up\n" + line("floor", "chain50", 0.043) + "\n\n")
        self.assertEqual((result["peer"], result["workload"], result["wall_s"]), ("floor", "chain50", 0.043))

    def test_nothing_printed_is_refused(self):
        with self.assertRaisesRegex(ValueError, "printed nothing"):
            summary.parse_result("\n")

    def test_a_line_that_is_not_json_is_refused_with_it(self):
        with self.assertRaisesRegex(ValueError, "not a JSON line: 'Traceback"):
            summary.parse_result("Traceback (most recent call last)")

    def test_missing_keys_are_named(self):
        with self.assertRaisesRegex(ValueError, "lacks version, wall_s"):
            summary.parse_result(json.dumps({"peer": "luigi", "name": "x", "workload": "chain50", "pss_mb": 1}))

    def test_a_wall_that_is_not_a_positive_number_is_refused(self):
        for wall in (0, -0.1, "0.1", None):
            with self.assertRaisesRegex(ValueError, "wall_s"):
                summary.parse_result(line("floor", "chain50", wall))


class Summarize(unittest.TestCase):
    def test_medians_a_peer_and_workload_in_the_peers_order(self):
        results = [summary.parse_result(text) for text in [
            line("luigi", "chain50", 0.40, 24), line("floor", "chain50", 0.05, 10), line("floor", "chain50", 0.04, 12),
            line("floor", "chain50", 0.09, 11), line("floor", "fanout200", 0.12, 13)]]
        floor, luigi = summary.summarize(results)
        self.assertEqual((floor["peer"], luigi["peer"]), ("floor", "luigi"))
        self.assertEqual(floor["chain50"], {"median": 0.05, "min": 0.04, "max": 0.09, "runs": [0.05, 0.04, 0.09]})
        self.assertEqual(floor["fanout200"]["median"], 0.12)
        self.assertEqual(floor["pss_mb"]["median"], 11.5)
        self.assertIsNone(luigi["fanout200"])  # never run: no figure rather than a zero

    def test_an_even_number_of_runs_takes_the_mean_of_the_middle_two(self):
        results = [summary.parse_result(line("celery", "chain50", w)) for w in (0.1, 0.4, 0.2, 0.3)]
        self.assertEqual(summary.summarize(results)[0]["chain50"]["median"], 0.25)


class Footer(unittest.TestCase):
    def test_without_a_rerun_the_canned_figures_carry_their_date(self):
        rows = summary.footer_rows([])
        self.assertEqual(len(rows), len(summary.CANNED))
        self.assertTrue(all(label.endswith(f"({summary.CANNED_DATE})") for label, *_ in rows))
        self.assertTrue(all(p["measured"] == summary.CANNED_DATE for p in summary.json_peers([])))

    def test_a_rerun_replaces_the_canned_figures(self):
        peers = summary.summarize([summary.parse_result(line("floor", "chain50", 0.05)),
                                   summary.parse_result(line("floor", "fanout200", 0.1))])
        self.assertEqual(summary.footer_rows(peers), [("floor name (floor 1.0)", 0.05, 0.1, 10.0)])
        (peer,) = summary.json_peers(peers)
        self.assertEqual((peer["measured"], peer["chain50_s"], peer["fanout200_s"]), ("this run", 0.05, 0.1))
        self.assertEqual(peer["chain50"]["runs"], [0.05])


if __name__ == "__main__":
    unittest.main()
