"""effx: a reproducible study of efficient Transformers.

Folders read as the architecture:
  attention/   one module per attention variant, same call, plus the dense reference
  kernels/     GPU (Triton) kernels, each beside the PyTorch fallback it must match
  models/      effx's own encoder (attention as a parameter) and the reference-model zoo
  profiling/   timing, memory, FLOPs, sweeps with resume and OOM records
  studies/     analysis shared by notebooks (tipping points, ...)
  data/        real datasets and typical input lengths
  results.py   the tidy results store with provenance
  params.py    notebook parameter validation (one function, one clear error)
"""
__version__ = "0.1.0"

from effx.errors import ParameterError  # noqa: F401
