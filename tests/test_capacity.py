"""`llm-proxy capacity`: cores for a load, from a hand-written benchmark results file."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from llm_proxy.capacity import (
    CapacityError,
    CpuFigures,
    add_arguments,
    capacity_command,
    load_figures,
    newest_results,
    plan,
)

RESULTS = {
    "meta": {"cpu": "Test CPU @ 1GHz", "date": "2026-01-02T03:04:05"},
    "capacity": {
        "cpu_us_per_request": {"miss": 300.0, "stream": 800.0, "hit": 100.0, "hit_stream": 200.0}
    },
}


@pytest.fixture
def results_file(tmp_path: Path) -> Path:
    path = tmp_path / "2026-01-02-box.json"
    path.write_text(json.dumps(RESULTS))
    return path


def _results_with_logging(tmp_path: Path, logging_us: float) -> Path:
    data = json.loads(json.dumps(RESULTS))
    data["capacity"]["cpu_us_per_request"]["logging_full"] = logging_us
    path = tmp_path / "2026-01-02-box.json"
    path.write_text(json.dumps(data))
    return path


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_all_misses_use_the_miss_figure_and_plan_for_70_percent(results_file: Path) -> None:
    p = plan(load_figures(results_file), rps=2000)
    assert p.cpu_us_per_request == pytest.approx(300.0)
    assert p.busy_cores == pytest.approx(0.6)
    assert p.workers == 1  # 0.6 / 0.7 -> 1
    assert p.rps_per_worker == pytest.approx(0.7e6 / 300)


def test_more_load_rounds_workers_up(results_file: Path) -> None:
    p = plan(load_figures(results_file), rps=10_000)
    assert p.busy_cores == pytest.approx(3.0)
    assert p.workers == 5  # 3.0 / 0.7 = 4.29 -> 5


def test_mix_weights_stream_and_cache_hit_figures(results_file: Path) -> None:
    p = plan(load_figures(results_file), rps=1000, stream_ratio=0.5, cache_hit_ratio=0.5)
    # misses: half whole (300) half stream (800); hits: half whole (100) half stream (200)
    assert p.cpu_us_per_request == pytest.approx(0.5 * 550 + 0.5 * 150)


def test_a_lower_cpu_target_needs_more_workers(results_file: Path) -> None:
    figures = load_figures(results_file)
    assert plan(figures, rps=7000, target_cpu=1.0).workers == 3  # 2.1 cores
    assert plan(figures, rps=7000, target_cpu=0.5).workers == 5


def test_missing_stream_hit_figure_falls_back_to_hit() -> None:
    data = {"capacity": {"cpu_us_per_request": {"miss": 300, "stream": 800, "hit": 100}}}
    figures = CpuFigures.from_results(data, "x.json")
    assert figures.hit_stream == 100


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rps": 0}, "--rps"),
        ({"rps": 10, "stream_ratio": 1.5}, "--stream-ratio"),
        ({"rps": 10, "cache_hit_ratio": -0.1}, "--cache-hit-ratio"),
        ({"rps": 10, "target_cpu": 0}, "--target-cpu"),
    ],
)
def test_out_of_range_arguments_are_refused(
    results_file: Path, kwargs: dict[str, float], message: str
) -> None:
    with pytest.raises(CapacityError, match=message):
        plan(load_figures(results_file), **kwargs)


def test_results_without_capacity_figures_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"meta": {}}))
    with pytest.raises(CapacityError, match="capacity"):
        load_figures(path)


def test_newest_results_file_with_figures_is_the_default(tmp_path: Path) -> None:
    (tmp_path / "2026-01-01-box.json").write_text(json.dumps(RESULTS))
    (tmp_path / "2026-03-01-box.json").write_text(json.dumps(RESULTS))
    (tmp_path / "2026-05-01-box.json").write_text(json.dumps({"no": "figures"}))
    assert newest_results([tmp_path]).name == "2026-03-01-box.json"


def test_command_prints_workers_and_the_figures_used(
    results_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _args("--rps", "10000", "--stream-ratio", "0.2", "--results", str(results_file))
    assert capacity_command(args) == 0
    out = capsys.readouterr().out
    assert "workers (cores): 6" in out  # (0.8*300 + 0.2*800) * 10000 = 4.0 cores / 0.7
    assert "whole miss 300" in out and "stream miss 800" in out and "cache hit 100" in out
    assert str(results_file) in out


def test_command_json_output(results_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert capacity_command(_args("--rps", "2000", "--results", str(results_file), "--json")) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["workers"] == 1 and data["figures"]["miss"] == 300


def test_command_reports_a_bad_file_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _args("--rps", "10", "--results", str(tmp_path / "missing.json"))
    assert capacity_command(args) == 2
    assert "cannot read" in capsys.readouterr().err


def test_cli_subcommand_plans_from_the_given_file(results_file: Path) -> None:
    from llm_proxy import cli

    try:
        cli.build_parser().parse_args(["capacity", "--rps", "1"])
    except SystemExit:
        pytest.skip("`llm-proxy capacity` is not wired into cli.py yet")
    argv = ["-m", "llm_proxy.cli", "capacity", "--rps", "10000", "--results", str(results_file)]
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "workers (cores): 5" in done.stdout  # 3.0 cores busy / 0.7


def test_full_logging_adds_its_measured_cost_to_every_request(tmp_path: Path) -> None:
    figures = load_figures(_results_with_logging(tmp_path, 20.0))
    logged = plan(figures, rps=1000, cache_hit_ratio=0.5, logging="full")
    plain = plan(figures, rps=1000, cache_hit_ratio=0.5, logging="off")
    assert plain.cpu_us_per_request == pytest.approx(0.5 * 300 + 0.5 * 100)
    assert logged.cpu_us_per_request == pytest.approx(plain.cpu_us_per_request + 20.0)
    assert logged.logging_us == 20.0 and plain.logging_us == 0.0


def test_command_counts_logging_by_default_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _results_with_logging(tmp_path, 50.0)
    assert capacity_command(_args("--rps", "1000", "--results", str(path))) == 0
    out = capsys.readouterr().out
    assert "+50 µs per request" in out and "this mix   350 µs" in out
    assert capacity_command(_args("--rps", "1000", "--logging", "off", "--results", str(path))) == 0
    out = capsys.readouterr().out
    assert "logging    off" in out and "this mix   300 µs" in out


def test_results_without_a_logging_figure_say_it_was_not_counted(
    results_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert capacity_command(_args("--rps", "1000", "--results", str(results_file))) == 0
    out = capsys.readouterr().out
    assert "NOT counted" in out and "this mix   300 µs" in out
