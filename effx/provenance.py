"""Provenance of a run: which code, which versions, which hardware, which parameters, when.

Every row in the results store points (by run_id) at one of these records.
"""
from __future__ import annotations

import datetime as _dt
import functools
import os
import platform
import subprocess
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
#: where runs write their results (``results.results_root``, unless EFFX_RESULTS_DIR moves them):
#: changes there are not changes of the code that ran
RESULTS_PATHSPEC = "data/results"


@functools.cache
def git_commit() -> str:
    """The commit of the working tree, with '+dirty' when tracked files other than the committed
    results (which every run appends to) have uncommitted changes."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                f":(exclude){RESULTS_PATHSPEC}"],
                               cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("EFFX_COMMIT", "unknown")


@functools.cache
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str]:
    import torch

    import effx
    out = {"effx": effx.__version__, "python": platform.python_version(), "torch": torch.__version__}
    for name in ("triton", "transformers", "torchaudio"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # not installed, or fails to import beside this torch
            out[name] = "absent"
    return out


def gpu_settings() -> dict:
    """What changes GPU numbers besides the code: TF32 switches and the SDPA backends enabled."""
    import torch
    return {"tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "sdpa_flash": torch.backends.cuda.flash_sdp_enabled(),
            "sdpa_mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
            "sdpa_math": torch.backends.cuda.math_sdp_enabled()}


def hardware(device: str = "cpu", threads: int | None = None) -> dict[str, str | int]:
    """The machine: CPU model, cores, torch threads (``threads``: the count the work will run
    with, set before it starts; default the current one), host, 1-minute load, GPU and its
    settings."""
    import torch
    info: dict[str, str | int] = {"cpu_model": cpu_model(), "cpu_count": os.cpu_count() or 0,
                                  "torch_threads": int(threads or torch.get_num_threads()),
                                  "device": str(device), "host": platform.node(),
                                  "load_1min": round(os.getloadavg()[0], 2)}
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["gpu_name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda or "unknown"
        info.update(gpu_settings())
    return info


def new_run(study: str, profile: str, params: dict, device: str = "cpu",
            threads: int | None = None) -> dict:
    """A provenance record for one execution of a study."""
    now = _dt.datetime.now(_dt.timezone.utc)
    return {
        "run_id": now.strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6],
        "study": study,
        "profile": profile,
        "date": now.isoformat(timespec="seconds"),
        "commit": git_commit(),
        "versions": versions(),
        "hardware": hardware(device, threads),
        "params": params,
    }


@functools.cache
def code_fingerprint() -> str:
    """A digest of effx's source files: the same on two machines iff they run the same code
    (a worker without git has no commit to compare; the distributed runner compares this)."""
    import hashlib
    digest = hashlib.sha1()
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
