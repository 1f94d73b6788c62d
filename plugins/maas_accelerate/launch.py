"""``python -m maas_accelerate.launch ARGS``: ``accelerate launch ARGS``, ended without
Python's teardown once it succeeded.

The launcher process imports torch (through accelerate), and the interpreter's teardown of
every module then took 1-2 s of CPU on a 2-core machine, after the last rank had finished:
the job, and whoever waits on it, waited for nothing. A successful launch therefore ends
with ``os._exit(0)``, after what a program may count on at exit (non-daemon threads joined,
``atexit`` functions run, streams flushed). A failure ends as ``accelerate launch`` ends it.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading


def main() -> None:
    from accelerate.commands.launch import main as accelerate_launch

    try:
        accelerate_launch()  # reads sys.argv, as `accelerate launch` does
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    run_exit_functions = getattr(atexit, "_run_exitfuncs", None)
    if run_exit_functions is None:  # not CPython: let the interpreter end as usual
        return
    run_exit_functions()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(0)


if __name__ == "__main__":
    main()
