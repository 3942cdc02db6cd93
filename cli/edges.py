"""How a command ends when its reader goes away: Ctrl-C, a closed pipe, a many-line error.

`shelf list | head -0` closes the pipe before (or while) `list` writes: that is the reader
being done, not a failure, so it ends with exit 0 and nothing on stderr.
"""

from __future__ import annotations

import io
import os
import select
import sys

INTERRUPTED = 130  # 128 + SIGINT, as shells report it


def stdout_closed() -> bool:
    """Whether stdout is a pipe (or socket) whose reading end is gone: poll reports an
    error on it. A BrokenPipeError from anything else (a socket to a database) is an error."""
    try:
        descriptor = sys.stdout.fileno()
    except (OSError, ValueError, io.UnsupportedOperation):
        return False
    poller = select.poll()
    poller.register(descriptor, select.POLLOUT)
    return any(event & (select.POLLERR | select.POLLHUP) for _, event in poller.poll(0))


def silence_stdout() -> None:
    """Point stdout at /dev/null, so what is still buffered doesn't fail again at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, io.UnsupportedOperation):
        pass


def one_line(message: str) -> str:
    """psycopg's errors carry a HINT or DETAIL on lines of their own; libvirt's, the text it
    failed on: all of it on one line."""
    return "; ".join(line.strip() for line in message.splitlines() if line.strip())
