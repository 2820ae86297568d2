"""Run in each worker process of the local clusters ``nnx.cluster.connect``
starts (a Dask preload module): Ctrl-C in a terminal interrupts every
process of the foreground group, and a worker interrupted prints a
traceback of its event loop, as many as there are workers. The process
that started the cluster takes the interrupt alone, then closes the
cluster, which stops the workers."""

from __future__ import annotations

import signal
import threading


def dask_setup(worker):
    """Dask's preload hook: this worker ignores SIGINT from now on."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
