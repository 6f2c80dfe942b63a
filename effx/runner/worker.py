"""The worker process of ``effx.runner.local.ProcessBackend``:

    python -m effx.runner.worker READ_FD WRITE_FD

reads (study, unit, parameters, earlier records, checkpoint folder) from one pipe, executes the
unit, and writes log lines and the result to the other.
"""
import sys
from multiprocessing.connection import Connection

from effx.runner.local import worker_main

if __name__ == "__main__":
    worker_main(Connection(int(sys.argv[1]), writable=False),
                Connection(int(sys.argv[2]), readable=False))
