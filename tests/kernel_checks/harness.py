"""The driver every kernel-check script shares: a registry of named checks, one JSON line per
check, exit status 1 when any fails. A script registers its checks with ``@checks.register``
(name = the function's name without ``check_``) and ends with ``sys.exit(checks.main())``.
``tests/kernel_checks/pytest_side.py`` runs such a script in a subprocess and reports each check.
"""
from __future__ import annotations

import argparse
import json
import os
import time
import traceback
import zlib


class CheckFailed(AssertionError):
    """A check's own verdict (anything else raised is a crash, reported with its traceback)."""


class Checks:
    def __init__(self, doc: str):
        self.doc, self.registry = doc, {}

    def register(self, fn):
        self.registry[fn.__name__.removeprefix("check_")] = fn
        return fn

    def run(self, names, seed: int) -> int:
        import torch
        failed = 0
        for name in names:
            gen = torch.Generator().manual_seed(seed + zlib.crc32(name.encode()))
            t0 = time.perf_counter()
            try:
                detail, ok = self.registry[name](gen), True
            except CheckFailed as exc:
                detail, ok = str(exc), False
            except Exception:  # noqa: BLE001 - a crash is a failure with its traceback
                detail, ok = traceback.format_exc(), False
            failed += not ok
            print(json.dumps({"check": name, "ok": ok, "seconds": round(time.perf_counter() - t0, 2),
                              "seed": seed, "detail": detail}), flush=True)
        return failed

    def main(self, argv=None) -> int:
        import torch
        parser = argparse.ArgumentParser(description=self.doc.splitlines()[0])
        parser.add_argument("--only", nargs="*", choices=sorted(self.registry),
                            help="run only these checks")
        parser.add_argument("--list", action="store_true", help="print the check names and exit")
        parser.add_argument("--seed", type=int, default=0)
        args = parser.parse_args(argv)
        if args.list:
            print("\n".join(self.registry))
            return 0
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
        return 1 if self.run(args.only or list(self.registry), args.seed) else 0
