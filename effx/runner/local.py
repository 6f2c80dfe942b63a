"""Backends that execute units on this machine: in this process, or in a guarded worker process.

``ProcessBackend`` (the default) runs units one at a time in a worker process (``python -m
effx.runner.worker``) reused across units (models cached by the study stay warm). A watchdog in the
parent reads the worker's resident memory every 0.2 s; a worker that grows beyond the limit is
killed and its unit recorded as out of memory with the limit it hit, so no measurement can take
the caller (a notebook kernel) down. A worker that dies otherwise (a crash, the system's OOM
killer) is recorded the same way, with its exit signal. The next unit gets a fresh worker.

``InlineBackend`` runs units in the calling process (debugging, tiny runs): no isolation.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Callable

from effx.study import Context, Record, Study, Unit

POLL_S = 0.2


@dataclass
class Outcome:
    """What became of one unit: ``done`` (records), ``oom`` or ``failed`` (info says why)."""
    unit: Unit
    status: str
    records: list[Record] = field(default_factory=list)
    info: dict = field(default_factory=dict)


def machine_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def default_limit_bytes(limit_gb: float | None) -> int:
    """The memory limit of a worker: ``limit_gb``, or half of this machine's memory."""
    return int(limit_gb * 2**30) if limit_gb else machine_memory_bytes() // 2


def is_oom(exc: BaseException) -> bool:
    """An out-of-memory error raised inside a unit (CUDA, CPU allocator, Python)."""
    name = type(exc).__name__
    return (isinstance(exc, MemoryError) or name == "OutOfMemoryError"
            or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()))


def _set_threads(P: dict) -> tuple[int | None, int | None]:
    """Fix torch's CPU thread count to ``P["threads"]`` (studies without it: leave torch alone);
    returns (the count now, the count before) so that an in-process run can restore it."""
    if "threads" not in P:
        return None, None
    import torch
    before = torch.get_num_threads()
    if P["threads"] and str(P.get("device", "cpu")) == "cpu":
        torch.set_num_threads(int(P["threads"]))
    return torch.get_num_threads(), before


def execute_here(study: Study, unit: Unit, P: dict, earlier: list[dict], checkpoint_dir: str | None,
                 log: Callable[[str], None]) -> tuple[str, list[Record], dict]:
    """Run one unit in this process: (status, records, info). Never raises for the unit's errors."""
    device = str(P.get("device", "cpu"))
    if device.startswith("cuda"):
        from effx.device import device_name
        hardware = device_name(device)
    else:                                          # no torch import for studies that need none
        from effx.provenance import cpu_model
        hardware = cpu_model()
    info = {"host": socket.gethostname(), "pid": os.getpid(), "load_before": os.getloadavg()[0],
            "device_name": hardware}
    t0 = time.perf_counter()
    before = None
    try:
        info["threads"], before = _set_threads(P)
        records = study.execute(unit, P, Context(earlier=earlier, log=log,
                                                 checkpoint_dir=checkpoint_dir))
        status = "done"
    except Exception as exc:  # noqa: BLE001 - the unit's failure is a result, recorded with its cause
        records = []
        status = "oom" if is_oom(exc) else "failed"
        info["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        info["traceback"] = traceback.format_exc()[-4000:]
    finally:
        if before is not None:
            import torch
            torch.set_num_threads(before)
    info["seconds"] = round(time.perf_counter() - t0, 3)
    info["load_after"] = os.getloadavg()[0]
    return status, records, info


class _OneAtATime:
    """A backend that runs a unit as soon as it is submitted: ``wait`` returns it."""
    capacity = 1

    def submit(self, study, unit, P, earlier, checkpoint_dir):
        return self.run(study, unit, P, earlier, checkpoint_dir)

    def wait(self, inflight: dict) -> tuple[str, Outcome]:
        (series, (_, outcome)), = inflight.items()
        return series, outcome


class InlineBackend(_OneAtATime):
    """Units in the calling process, one at a time."""

    def __init__(self, log: Callable[[str], None] = print, **_):
        self.log = log

    def run(self, study: Study, unit: Unit, P: dict, earlier: list[dict],
            checkpoint_dir: str | None) -> Outcome:
        status, records, info = execute_here(study, unit, P, earlier, checkpoint_dir, self.log)
        return Outcome(unit, status, records, info)

    def close(self) -> None:
        pass


def _die_with_parent() -> None:
    """In the worker, before it runs: the kernel sends it SIGKILL when its parent dies (a killed
    notebook kernel or Ray worker leaves no orphan holding memory). Linux only; elsewhere a no-op."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except OSError:
        pass


def worker_main(recv, send) -> None:
    """The worker process: execute units sent by the parent until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)          # Ctrl-C is the parent's to handle
    while True:
        try:
            msg = recv.recv()
        except EOFError:
            return
        if msg is None:
            return
        study, unit, P, earlier, checkpoint_dir = msg
        status, records, info = execute_here(study, unit, P, earlier, checkpoint_dir,
                                             lambda text: send.send(("log", text)))
        send.send(("result", status, records, info))


class ProcessBackend(_OneAtATime):
    """Units in a worker process, under a resident-memory limit (see module docstring).

    The worker is ``python -m effx.runner.worker`` talking over two pipes (not multiprocessing's
    spawn, which re-imports the caller's main script: a notebook kernel or a user's script)."""

    def __init__(self, limit_bytes: int, log: Callable[[str], None] = print,
                 output: str | None = None, tick: Callable[[], None] = lambda: None, **_):
        self.limit, self.log, self.output, self.tick = int(limit_bytes), log, output, tick
        self.proc = self.conn = self._send = None
        self.tag = None                                   # the worker tag of the running process

    def _start(self) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        out = None
        if self.output:                  # the worker's own output (C libraries' lines included)
            os.makedirs(os.path.dirname(self.output), exist_ok=True)
            out = open(self.output, "a")
        self.proc = subprocess.Popen([sys.executable, "-m", "effx.runner.worker",
                                      str(to_child_r), str(from_child_w)],
                                     pass_fds=(to_child_r, from_child_w), env=env,
                                     stdout=out, stderr=subprocess.STDOUT if out else None,
                                     preexec_fn=_die_with_parent)
        if out is not None:
            out.close()
        os.close(to_child_r)
        os.close(from_child_w)
        self._send = Connection(to_child_w, readable=False)
        self.conn = Connection(from_child_r, writable=False)

    def _alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _rss(self) -> int:
        import psutil
        try:
            proc = psutil.Process(self.proc.pid)
            return proc.memory_info().rss + sum(c.memory_info().rss
                                                for c in proc.children(recursive=True))
        except psutil.Error:
            return 0

    def _kill(self) -> None:
        if self._alive():
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(10)
        for c in (self.conn, self._send):
            if c is not None:
                c.close()
        self.proc = self.conn = self._send = None

    def run(self, study: Study, unit: Unit, P: dict, earlier: list[dict],
            checkpoint_dir: str | None) -> Outcome:
        if not self._alive() or unit.worker != self.tag:   # a fresh process for a new tag
            self.close()
            self._start()
            self.tag = unit.worker
        t0, peak = time.perf_counter(), 0
        self._send.send((study, unit, P, earlier, checkpoint_dir))
        while True:
            if self.conn.poll(POLL_S):
                try:
                    msg = self.conn.recv()
                except (EOFError, OSError):
                    msg = None
                if msg is not None and msg[0] == "log":
                    self.log(msg[1])
                    continue
                if msg is not None:
                    _, status, records, info = msg
                    info["worker_peak_rss_bytes"] = max(peak, self._rss())
                    return Outcome(unit, status, records, info)
            self.tick()
            rss = self._rss()
            peak = max(peak, rss)
            if rss > self.limit:
                self._kill()
                return Outcome(unit, "oom", info={
                    "cause": "memory limit", "limit_bytes": self.limit, "rss_at_kill_bytes": rss,
                    "seconds": round(time.perf_counter() - t0, 3), "host": socket.gethostname()})
            if not self._alive():
                code = self.proc.returncode
                self._kill()
                killed = code is not None and code < 0
                cause = (f"worker killed by signal {-code}" if killed else f"worker exited {code}")
                status = "oom" if code == -signal.SIGKILL else "failed"
                if status == "oom":
                    cause += " (not by effx: most likely the system's out-of-memory killer)"
                return Outcome(unit, status, info={
                    "cause": cause, "error": cause, "limit_bytes": self.limit,
                    "peak_rss_bytes": peak, "seconds": round(time.perf_counter() - t0, 3),
                    "host": socket.gethostname()})

    def close(self) -> None:
        if self._alive():
            try:
                self._send.send(None)
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._kill()
