"""``python -m maas_accelerate.launch ARGS``: ``accelerate launch ARGS``, ended without
Python's teardown once it succeeded.

The launcher process imports torch (through accelerate), and the interpreter's teardown of
every module then took 1-2 s of CPU on a 2-core machine, after the last rank had finished:
the job, and whoever waits on it, waited for nothing. A successful launch therefore ends
with ``os._exit(0)``, after what a program may count on at exit (non-daemon threads joined,
``atexit`` functions run, streams flushed). A failure ends as ``accelerate launch`` ends it.
"""

from __future__ import annotations

from maas_lab.launching.ending import end_now


def main() -> None:
    from accelerate.commands.launch import main as accelerate_launch

    try:
        accelerate_launch()  # reads sys.argv, as `accelerate launch` does
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    end_now(0)


if __name__ == "__main__":
    main()
