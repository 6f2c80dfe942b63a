"""The Ray backend on a real local cluster (loopback): the same records as the in-process runner,
units recorded exactly once when a worker dies, and clear messages for bad setups."""
import io
import os
import signal
import threading
import time

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install ray)")

import runner_toy  # noqa: E402
from effx.errors import ParameterError  # noqa: E402
from effx.results import ResultStore, read_jsonl  # noqa: E402
from effx.runner import run_study  # noqa: E402
from effx.runner.ray import RayBackend  # noqa: E402
from effx.study import Unit  # noqa: E402

TOY = runner_toy.STUDY


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster for the module (started by the first RayBackend, kept alive)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in __import__("sys").path if p)}})
    yield
    ray.shutdown()


def run(study, root, backend, **values):
    P = study.validate(dict(values, profile="t"))
    store = ResultStore(study.name, "t", root=root)
    t0 = time.perf_counter()
    summary = run_study(study, P, backend=backend, store=store, stream=io.StringIO())
    return summary, store, time.perf_counter() - t0


def comparable(store, metrics=None):
    out = {}
    for rec in store.records():
        keep = {k: v["value"] for k, v in rec["metrics"].items() if metrics is None or k in metrics}
        out[str(sorted(rec["point"].items()))] = (rec["status"], keep)
    return out


def test_a_sweep_through_ray_gives_the_records_of_the_in_process_runner(cluster, tmp_path):
    ray_summary, ray_store, ray_s = run(TOY, tmp_path / "ray", "ray", fail=False)
    here_summary, here_store, here_s = run(TOY, tmp_path / "here", "process", fail=False)
    assert comparable(ray_store) == comparable(here_store)
    assert ray_summary.executed == here_summary.executed == 5
    hosts = {r["info"]["host"] for r in ray_store.records()}
    assert hosts and all(r["info"].get("device_name") for r in ray_store.records())
    print(f"\ntiny sweep: Ray {ray_s:.1f} s, in-process {here_s:.1f} s")


def test_a_training_grid_through_ray_matches_the_in_process_runner(cluster, tmp_path):
    from effx.studies import get_study
    spion = get_study("spion")
    tiny = dict(tasks=["listops"], lengths={"listops": 64}, block=16, filter_size=7, steps=8,
                capture_every=4, warmup=2, n_train=32, n_test=16, batch_size=8, timing_repeats=1,
                threads=1)
    _, ray_store, _ = run(spion, tmp_path / "ray", "ray", **tiny)
    _, here_store, _ = run(spion, tmp_path / "here", "process", **tiny)
    keep = {"test_accuracy", "mean_density", "attention_flops_forward"}
    assert comparable(ray_store, keep) == comparable(here_store, keep)
    assert len(ray_store.records()) == 3


def test_a_worker_killed_mid_unit_is_retried_and_every_unit_is_recorded_once(cluster, tmp_path):
    pid_file = tmp_path / "pids"
    killed = []

    def kill_first_worker():
        for _ in range(600):
            if pid_file.exists() and pid_file.read_text().strip():
                pid = int(pid_file.read_text().split()[0])
                os.kill(pid, signal.SIGKILL)              # the Ray worker running the unit
                killed.append(pid)
                return
            time.sleep(0.05)
    killer = threading.Thread(target=kill_first_worker)
    killer.start()
    try:
        summary, store, _ = run(TOY, tmp_path, "ray", fail=False, sleep_s=3.0,
                                pid_file=str(pid_file))
    finally:
        killer.join()
    assert killed, "the test never found the worker to kill"
    assert len(pid_file.read_text().split()) == 2           # the unit ran again after the kill
    writes = read_jsonl(store.path)
    assert len({r["unit"] for r in writes}) == 5
    assert len({(r["unit"], r["write"]) for r in writes}) == 5   # each unit written exactly once
    assert not summary.failed


def test_a_unit_no_node_can_run_is_refused_with_a_clear_message(cluster):
    backend = RayBackend()
    with pytest.raises(ParameterError, match="needs 1 GPU"):
        backend._check(Unit({"x": 1}, "a GPU unit", gpus=1))


def test_an_address_that_does_not_answer_is_a_clear_error():
    if ray.is_initialized():
        ray.shutdown()
    with pytest.raises(ParameterError, match="'address'.*does not answer"):
        RayBackend(address="127.0.0.1:1")


def test_a_worker_with_other_code_refuses_the_unit():
    from effx.runner.ray import _execute
    unit = TOY.units(TOY.validate({}))[0]
    status, records, info = _execute(TOY, unit, TOY.validate({}), [], None, "not-this-code", 2**30)
    assert status == "failed" and not records and "refused" in info["error"]
