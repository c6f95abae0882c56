"""benchmarks/bench_alignment.py's quick mode runs and finds the compiled recursion equal
to the numpy one it replaced (it exits with an error otherwise)."""

from __future__ import annotations

from .conftest import load_benchmark


def test_quick_run_prints_the_table(capsys):
    load_benchmark("bench_alignment").main(["--quick"])
    out = capsys.readouterr().out
    assert "scores identical" in out
    assert "| recursion, compiled |" in out and "faster than before" in out
