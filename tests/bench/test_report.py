"""
The README's benchmark table is what bench/report.py renders from the committed
bench/results/results.json (so the two cannot drift), and a new scenario's figures show up in it
without the generator knowing their names.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import report  # noqa: E402


def test_the_readme_table_is_what_the_committed_results_render() -> None:
    results = json.loads((BENCH / "results" / "results.json").read_text())
    readme = (BENCH.parent / "README.md").read_text()
    assert report.between_markers(readme) == report.render(results), (
        "README.md's results differ from bench/results/results.json: run `python bench/report.py` and commit both")


def figure(scenario: str, name: str, medians: dict[str, float], higher_is_better: bool = True) -> dict[str, object]:
    return {"scenario": scenario, "name": name, "unit": "1/s", "higher_is_better": higher_is_better,
            "values": {p: [v] for p, v in medians.items()}, "medians": medians}


def test_targets_are_found_by_exact_size_and_judged_against_their_bar() -> None:
    results = {"when": "2026-11-30T00:00:00Z", "figures": [
        figure("fanout", "deliveries/s S=10", {"wsserver": 70, "crossbar": 10, "ceiling": 100}),
        figure("fanout", "deliveries/s S=100", {"wsserver": 50, "crossbar": 10, "ceiling": 100}),
        figure("fanout", "deliveries/s S=1000", {"wsserver": 110, "crossbar": 10, "ceiling": 120}),
    ]}
    rows = {line.split(" | ")[0].lstrip("| "): line for line in report.render(results).splitlines()
            if line.startswith("| fan-out")}
    assert "0.70 | >= 0.6 of ceiling **met**" in rows["fan-out, deliveries/s, 10 subscribers"]
    assert "0.50 | >= 0.6 of ceiling **missed**" in rows["fan-out, deliveries/s, 100 subscribers"]
    assert "11.00x" in rows["fan-out, deliveries/s, 1000 subscribers"]
    assert ">= 10x **met**" in rows["fan-out, deliveries/s, 1000 subscribers"]


def test_a_scenario_the_generator_does_not_know_appears_with_its_peers() -> None:
    results = {"when": "2026-11-30T00:00:00Z", "figures": [
        figure("compression", "bytes on the wire per event", {"wsserver": 300, "wsserver-deflate": 90}, False),
    ]}
    targets, _, everything = report.render(results).partition("<details>")
    for part in (targets, everything):
        assert "| compression: bytes on the wire per event (1/s) | 300 |" in part
        assert "wsserver-deflate 90" in part


def test_splicing_replaces_only_the_text_between_the_markers() -> None:
    readme = f"before\n{report.BEGIN}\nold table\n{report.END}\nafter\n"
    spliced = report.splice(readme, "new table")
    assert spliced == f"before\n{report.BEGIN}\nnew table\n{report.END}\nafter\n"
    assert report.between_markers(spliced) == "new table"
