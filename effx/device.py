"""Device and dtype resolution: the single place that decides where code runs."""
from __future__ import annotations

import torch

from effx.errors import ParameterError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "float64": torch.float64}


def cuda_available() -> bool:
    return torch.cuda.is_available()


def default_device() -> str:
    """'cuda' when a GPU is present, else 'cpu'."""
    return "cuda" if cuda_available() else "cpu"


def resolve_device(name: str, param: str = "device") -> torch.device:
    """Turn a device parameter into a torch.device, or fail naming the parameter.

    'auto' picks CUDA when present. 'cuda' without a GPU is an error, never a silent fallback.
    """
    allowed = "'cpu', 'cuda' (only where a CUDA GPU is present), 'auto'"
    if name == "auto":
        return torch.device(default_device())
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not cuda_available():
            raise ParameterError(param, name, "'cpu', 'auto'",
                                 why="CUDA was requested but no CUDA GPU is available here")
        return torch.device(name)
    raise ParameterError(param, name, allowed)


def resolve_dtype(name: str, device: torch.device | str = "cpu", param: str = "dtype") -> torch.dtype:
    if name not in DTYPES:
        raise ParameterError(param, name, ", ".join(DTYPES))
    if name == "float16" and torch.device(device).type == "cpu":
        raise ParameterError(param, name, "float32, bfloat16, float64 on CPU",
                             why="float16 matmuls are not supported well on CPU")
    return DTYPES[name]


def device_name(device: torch.device | str) -> str:
    """Human-readable name of the hardware behind a device (GPU model or CPU model)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from effx.provenance import cpu_model
    return cpu_model()
