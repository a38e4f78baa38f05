"""The benchmarks' records (benchmarks/harness.py): a long run that stops, or grows by a row, measures only
what is missing, and a report made from records equals the one measured."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the scripts and their harness

import ntk_vs_network  # noqa: E402

import harness  # noqa: E402


def test_records_are_found_by_key_whatever_its_order_and_the_last_line_wins(tmp_path):
    path = tmp_path / "records" / "run.jsonl"
    records = harness.Records(path)
    assert records.get({"width": 8, "depth": 1}) is None
    records.put({"width": 8, "depth": 1}, {"shape": 0.1})
    records.put({"width": 8, "depth": 2}, {"shape": 0.2})
    records.put({"depth": 1, "width": 8}, {"shape": 0.3})
    again = harness.Records(path)
    assert again.get({"depth": 1, "width": 8}) == {"shape": 0.3}
    assert again.get({"depth": 2, "width": 8}) == {"shape": 0.2}
    assert again.get({"depth": 2, "width": 16}) is None
    measured = again.used[0]
    assert set(measured) == {"date", "commit", "machine"} and measured["commit"]
    assert "2 measurements" in again.summary() and str(path) in again.summary()
    assert again.summary(start=1).startswith("The 1 measurements")
    assert again.summary(start=2) == "No records used."
    assert harness.Records(path, fresh=True).get({"depth": 1, "width": 8}) is None
    assert len(path.read_text().splitlines()) == 3  # fresh reads nothing and removes nothing


def test_a_record_cut_short_is_left_out_and_said_so(tmp_path, capsys):
    path = tmp_path / "run.jsonl"
    harness.Records(path).put({"width": 8}, {"shape": 0.1})
    whole = path.read_text()
    path.write_text(whole + whole[: len(whole) // 2])  # a run killed while writing its second line
    records = harness.Records(path)
    assert records.get({"width": 8}) == {"shape": 0.1}
    assert "run.jsonl:2: not a whole record" in capsys.readouterr().err
    assert harness.Records(None).get({"width": 8}) is None


def test_a_report_from_records_equals_the_measured_one(tmp_path, set12):
    options = ntk_vs_network.arguments(["--data", str(set12), "--widths", "8,16", "--depth2-widths", "8",
                                        "--steps", "12", "--curve-width", "8"])
    path = tmp_path / "network.jsonl"
    measured, shapes = ntk_vs_network.measure(options, None, harness.Records(path))
    runs = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(runs) == 3 * 3 * 3  # (depth, width) pairs x crops x optimizers
    assert {run["key"]["optimizer"] for run in runs} == {"gd", "adam"}
    path.write_text("\n".join(json.dumps(run) for run in runs if run["key"]["width"] != 16) + "\n")
    records = harness.Records(path)
    assert records.get(runs[0]["key"])  # a lookup made before, by another part of the same run
    grown, grown_shapes = ntk_vs_network.measure(options, None, records)
    assert len(path.read_text().splitlines()) == 27  # only the removed width measured again

    def tables(text: str) -> list[str]:
        return [line for line in text.splitlines()
                if line.startswith("|") and "s per training step" not in line]

    timeless = [line.rsplit("|", 2)[0] for line in tables(measured)]  # the step times are measured anew
    assert [line.rsplit("|", 2)[0] for line in tables(grown)] == timeless
    assert grown_shapes == shapes
    assert "9 training runs made, 18 taken from the records" in grown
