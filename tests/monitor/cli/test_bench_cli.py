"""`driftwatch bench` refuses arguments that would leave it nothing to report."""

from __future__ import annotations

import pytest

from monitor.cli import main


@pytest.mark.parametrize("argv", [["throughput"], ["throughput", "--workers", "1", "2"],
                                  ["consume"], ["decide"]])
def test_bench_refuses_zero_rounds_naming_the_flag(argv: list[str], capsys) -> None:
    assert main(["bench", *argv, "--rounds", "0"]) == 2
    assert "--rounds 0: give 1 or more" in capsys.readouterr().err


@pytest.mark.parametrize("segments", ["0", "101"])
def test_bench_decide_refuses_segments_its_first_round_cannot_warm_up(segments: str,
                                                                      capsys) -> None:
    assert main(["bench", "decide", "--records", "30000", "--segments", segments]) == 2
    assert f"--segments {segments}: give 1 to 100" in capsys.readouterr().err
