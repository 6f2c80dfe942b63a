"""pytest's side of a kernel-check script (``harness.py``): run it once in a subprocess under
TRITON_INTERPRET=1 and report every check as its own test. A test module calls

    checker, test_kernel_under_interpreter, test_checker_reports_exactly_the_listed_checks = \\
        interpreter_tests(CHECKER, CHECK_NAMES)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def interpreter_env() -> dict:
    return dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(REPO))


def run_script(args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, env=interpreter_env(),
                          capture_output=True, text=True, timeout=timeout)


def interpreter_tests(script: Path, names: list[str]):
    """(fixture, per-check test, registry test) for the checks of ``script``."""
    @pytest.fixture(scope="module")
    def checker():
        pytest.importorskip("triton")
        proc = run_script([script])
        results = {}
        for line in proc.stdout.splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                results[record["check"]] = record
        return proc, results

    @pytest.mark.parametrize("name", names)
    def test_kernel_under_interpreter(checker, name):
        proc, results = checker
        if name not in results:
            pytest.fail(f"the checker did not report {name!r} (exit status {proc.returncode}); "
                        f"stderr tail:\n{proc.stderr[-4000:]}")
        result = results[name]
        assert result["ok"], f"{name} (seed {result['seed']}):\n{result['detail']}"

    def test_checker_reports_exactly_the_listed_checks(checker):
        proc, results = checker
        assert sorted(results) == sorted(names), "update CHECK_NAMES to match the checker's registry"
        assert proc.returncode == (0 if all(r["ok"] for r in results.values()) else 1), \
            proc.stderr[-4000:]

    return checker, test_kernel_under_interpreter, test_checker_reports_exactly_the_listed_checks
