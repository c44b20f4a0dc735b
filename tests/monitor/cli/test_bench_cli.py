"""`driftwatch bench` refuses arguments that would leave it nothing to report."""

from __future__ import annotations

import pytest

from monitor.cli import main


@pytest.mark.parametrize("argv", [["throughput"], ["throughput", "--workers", "1", "2"],
                                  ["consume"], ["decide"]])
def test_bench_refuses_zero_rounds_naming_the_flag(argv: list[str], capsys) -> None:
    assert main(["bench", *argv, "--rounds", "0"]) == 2
    assert "--rounds 0: give 1 or more" in capsys.readouterr().err
