"""The distributed backend: every unit a Ray task, on a laptop, a cluster or a Slurm allocation.

    python -m effx.pipeline measure --profile gpu --runner ray [--address HOST:PORT]

Without an address a local Ray cluster is started on this machine (loopback only) and stopped at
the end; with one, the driver joins that cluster. Each unit becomes a task that reserves its
resources (``Unit.gpus``: one whole GPU for GPU timing; ``Unit.cpus``: the study's ``threads``
for CPU timing, so two timings never share a device) and is retried when its worker dies; inside
the task the unit runs in a guarded worker process (``effx.runner.local.ProcessBackend``: the
memory limit and crash isolation of the local runner). Units of one series stay in order (one
in flight per series); different series run at once. Results come back to the driver, which
alone writes the results store. A worker whose effx code differs from the driver's
(``effx.provenance.code_fingerprint``) refuses the unit, and the unit is recorded as failed,
saying so. Long units checkpoint to the runner's ``checkpoint_dir``: on a cluster, give a path
every node can reach, and a retried unit resumes there.
"""
from __future__ import annotations

import os
import socket
import sys

from effx.errors import ParameterError
from effx.provenance import code_fingerprint
from effx.runner.local import Outcome, ProcessBackend

INSTALL = "pip install 'ray>=2.9'"


def _ray():
    try:
        import ray
    except ImportError:
        raise ParameterError("runner", "ray", f"'process' or 'inline'; or install Ray: {INSTALL}",
                             why="Ray is not installed") from None
    return ray


def _execute(study, unit, P, earlier, checkpoint_dir, fingerprint, limit_bytes):
    """The Ray task: check the code, then run the unit in a guarded worker process."""
    mine = code_fingerprint()
    if mine != fingerprint:
        return ("failed", [], {"host": socket.gethostname(),
                               "error": f"refused: this worker's effx code ({mine}) differs from "
                                        f"the driver's ({fingerprint}); install the same commit "
                                        "on every node"})
    backend = ProcessBackend(limit_bytes, log=lambda text: None)
    try:
        out = backend.run(study, unit, P, earlier, checkpoint_dir)
    finally:
        backend.close()
    return out.status, out.records, out.info


def _answers(address: str, timeout_s: float = 5.0) -> None:
    """Raise ConnectionError unless `host:port` accepts a connection (Ray itself retries ~20 times)."""
    host, sep, port = address.rpartition(":")
    if address in ("auto", "local") or "://" in address or not sep or not port.isdigit():
        return                              # Ray resolves these itself
    with socket.create_connection((host, int(port)), timeout=timeout_s):
        pass


class RayBackend:
    """Units as Ray tasks (see module docstring)."""
    capacity = 10**6                        # Ray queues tasks by resources; one per series

    def __init__(self, address: str | None = None, limit_bytes: int = 0, log=print,
                 retries: int = 2, **_):
        ray = self.ray = _ray()
        self.limit, self.log, self.retries = limit_bytes, log, retries
        self.started = not ray.is_initialized() and address is None
        env = {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        try:
            if not ray.is_initialized():
                if address is not None:
                    _answers(address)
                ray.init(address=address, include_dashboard=False, log_to_driver=False,
                         configure_logging=False, runtime_env={"env_vars": env},
                         **({"num_cpus": os.cpu_count()} if address is None else {}))
        except (OSError, RuntimeError, ValueError) as exc:
            raise ParameterError("address", address, "the address of a running Ray cluster "
                                 "(`ray start --head` prints it), or none for a local one",
                                 why=f"it does not answer: {exc}") from None
        self.resources = ray.cluster_resources()
        self.task = ray.remote(_execute)
        self.refs: dict = {}

    def _check(self, unit) -> None:
        for name, need in (("GPU", unit.gpus), ("CPU", unit.cpus)):
            if need and self.resources.get(name, 0) < need:
                raise ParameterError("runner", "ray", "a cluster with the resources the units need",
                                     why=f"unit '{unit.label}' needs {need} {name}(s); the cluster "
                                         f"has {self.resources.get(name, 0):g}")

    def submit(self, study, unit, P, earlier, checkpoint_dir):
        self._check(unit)
        task = self.task.options(num_cpus=unit.cpus, num_gpus=unit.gpus, max_retries=self.retries)
        return task.remote(study, unit, P, earlier, checkpoint_dir, code_fingerprint(), self.limit)

    def wait(self, inflight: dict) -> tuple[str, Outcome]:
        by_ref = {handle: series for series, (_, handle) in inflight.items()}
        ready, _ = self.ray.wait(list(by_ref), num_returns=1)
        series = by_ref[ready[0]]
        unit = inflight[series][0]
        try:
            status, records, info = self.ray.get(ready[0])
        except self.ray.exceptions.OutOfMemoryError as exc:
            return series, Outcome(unit, "oom", info={"cause": "Ray's memory monitor",
                                                      "error": str(exc).splitlines()[0][:500]})
        except self.ray.exceptions.RayError as exc:         # a worker that died, retries spent
            return series, Outcome(unit, "failed", info={
                "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:500]} "
                         f"(after {self.retries} retries)"})
        return series, Outcome(unit, status, records, info)

    def close(self) -> None:
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()
