"""Ending a process whose work is done without Python's teardown of every module.

With torch imported, that teardown took 1-2 s of CPU per process on a 2-core machine, after
the job's work was over, and the job (and whoever waits on it) waited for it: each rank, then
the launcher process. Used by :mod:`maas_lab.launching.rank` and by launcher plugins
(``maas_accelerate.launch``)."""

from __future__ import annotations

import atexit
import os
import sys
import threading


def end_now(code: int = 0) -> None:
    """Exit with ``code`` after what a program may count on at exit, in the interpreter's
    order: its non-daemon threads are joined, its ``atexit`` functions run (logging's flush, a
    tracker's ``finish``), and the standard streams are flushed; then ``os._exit``. Off
    CPython (no ``atexit._run_exitfuncs``) it exits as usual."""
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    run_exit_functions = getattr(atexit, "_run_exitfuncs", None)
    if run_exit_functions is None:
        sys.exit(code)
    run_exit_functions()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: nothing more to write
            continue
    os._exit(code)
