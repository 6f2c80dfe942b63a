"""Shared pytest fixtures.

``built_book`` (session): the whole book built once per test session, in a temporary folder, from
every notebook the pipeline knows (``effx.pipeline.notebooks()``) executed at the ``tiny``
profile. Nothing is written to ``book/`` or ``data/results/``: the results store points at a
temporary folder through ``EFFX_RESULTS_DIR``. Used by tests/test_book.py (the HTML) and
tests/test_book_browser.py (the same HTML in headless Chromium).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
BOOK_DIR = REPO_ROOT / "book"
#: the profile the book smoke test executes every notebook with
BOOK_TEST_PROFILE = "tiny"


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Every test in one torch thread: the models are tiny, the machine has 2 shared cores (two
    OpenMP threads contending with other jobs once made tiny forwards ~100x slower), and a run
    resumed from a checkpoint equals an uninterrupted one only at one thread count."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def effx_subprocess_env(results_dir: Path | None = None) -> dict[str, str]:
    """Environment for effx subprocesses: offline hubs, the venv first on PATH, and (when given)
    a private results store so that tests never write into data/results."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env["PYTHONUNBUFFERED"] = "1"
    if results_dir is not None:
        env["EFFX_RESULTS_DIR"] = str(results_dir)
    return env


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _tail(text: str | bytes | None, lines: int = 60) -> str:
    """The last lines of a subprocess's output, without jupyter_client's per-kernel TCP notice."""
    if isinstance(text, bytes):  # TimeoutExpired.output is bytes even with text=True
        text = text.decode(errors="replace")
    kept = [line for line in (text or "").splitlines()
            if "Kernel is running over TCP without encryption" not in line]
    return "\n".join(kept[-lines:])


def toc_pages(book_dir: Path) -> list[str]:
    """Every document of the book's _toc.yml (root first), as paths without suffix."""
    import yaml

    toc = yaml.safe_load((book_dir / "_toc.yml").read_text())
    pages: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            for key in ("root", "file"):
                if isinstance(node.get(key), str):
                    pages.append(str(Path(node[key]).with_suffix("")))
            for value in node.values():
                if isinstance(value, (list, dict)):
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return list(dict.fromkeys(pages))


def mathjax_path(book_dir: Path) -> str:
    """The book's `mathjax_path` (relative to the built _static folder; MathJax is installed from
    the npm registry by `make`, never loaded from a CDN)."""
    import yaml

    config = yaml.safe_load((book_dir / "_config.yml").read_text()) or {}
    return ((config.get("sphinx") or {}).get("config") or {}).get("mathjax_path",
                                                                  "mathjax/tex-chtml.js")


@dataclass
class BuiltBook:
    source: Path          # the temporary copy of book/ that was built
    html: Path            # <source>/_build/html
    results: Path         # the private results store the notebooks wrote to
    notebooks: list[str]  # every notebook the pipeline executed, in book order
    pipeline_seconds: float
    build_returncode: int
    build_log: str
    build_seconds: float
    mathjax_vendored: bool  # the built book has MathJax at its mathjax_path

    @property
    def generated(self) -> Path:
        return self.source / "generated"

    def pages(self) -> list[str]:
        return toc_pages(self.source)

    def page_html(self, page: str) -> Path:
        return self.html / f"{page}.html"


def _copy_book(dest: Path) -> None:
    """book/ without its build outputs (_build, generated) and editor/cache debris."""
    skip_top = {"_build", "generated"}
    skip_any = {".ipynb_checkpoints", "__pycache__", ".jupyter_cache"}

    def ignore(directory, names):
        top = Path(directory).resolve() == BOOK_DIR.resolve()
        return [n for n in names if n in skip_any or (top and n in skip_top)]

    shutil.copytree(BOOK_DIR, dest, ignore=ignore)


def _jupyter_book() -> str:
    exe = Path(sys.executable).parent / "jupyter-book"
    found = str(exe) if exe.exists() else shutil.which("jupyter-book")
    if not found:
        pytest.fail("jupyter-book is not installed in this environment: run `make install`")
    return found


@pytest.fixture(scope="session")
def built_book(tmp_path_factory) -> BuiltBook:
    """Execute every notebook (tiny profile) through effx.pipeline, then build the HTML.

    A pipeline failure fails every test that uses the book, with the pipeline's output; a build
    failure is reported by tests/test_book.py::test_build_succeeds (the other tests still look
    at whatever HTML was produced, thanks to --keep-going)."""
    from effx.pipeline import notebooks
    from effx.report import REFERENCE_PROFILES

    base = tmp_path_factory.mktemp("effx_book")
    source, results = base / "book", base / "results"
    _copy_book(source)
    for profile in REFERENCE_PROFILES:   # the chapters render the committed runs as readers see them
        committed = REPO_ROOT / "data" / "results" / profile
        if committed.is_dir():
            shutil.copytree(committed, results / profile, ignore=shutil.ignore_patterns("logs"))
    env = effx_subprocess_env(results)
    names = notebooks()

    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "effx.pipeline", "run", "--profile", BOOK_TEST_PROFILE,
           "--out", str(source / "generated")]
    try:
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=1800)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"`{' '.join(cmd)}` ran over {exc.timeout} s:\n{_tail(exc.output)}",
                    pytrace=False)
    pipeline_seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        pytest.fail(f"executing the notebooks at the '{BOOK_TEST_PROFILE}' profile failed "
                    f"(exit {proc.returncode}):\n$ {' '.join(cmd)}\n{_tail(proc.stdout)}",
                    pytrace=False)
    missing = [n for n in names if not (source / "generated" / f"{n}.ipynb").exists()]
    if missing:
        pytest.fail(f"the pipeline exited 0 but wrote no executed notebook for: {missing}\n"
                    f"{_tail(proc.stdout)}", pytrace=False)

    t0 = time.perf_counter()
    cmd = [_jupyter_book(), "build", str(source), "--warningiserror", "--keep-going"]
    try:
        build = subprocess.run(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=900)
        build_rc, build_log = build.returncode, _ANSI.sub("", build.stdout)
    except subprocess.TimeoutExpired as exc:
        build_rc, build_log = -1, f"timed out after {exc.timeout} s\n{_tail(exc.output, 200)}"

    return BuiltBook(source=source, html=source / "_build" / "html", results=results,
                     notebooks=names, pipeline_seconds=pipeline_seconds,
                     build_returncode=build_rc, build_log=build_log,
                     build_seconds=time.perf_counter() - t0,
                     mathjax_vendored=(source / "_build" / "html" / "_static" /
                                       mathjax_path(source)).exists())
