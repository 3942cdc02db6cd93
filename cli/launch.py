"""The `shelf` console script. Loading shelf takes a good part of a second (libvirt,
psycopg, eventsourcing): a Ctrl-C then must end as one later does, with one line and exit
130, not with the traceback of an import. Only the interpreter's own start-up, before
this module runs, is left to Python's default."""

from __future__ import annotations

import sys

INTERRUPTED = 130  # cli/edges.py's; not imported from there, as importing is what is cut


def run() -> None:
    try:
        from cli.main import main
    except KeyboardInterrupt:
        sys.stderr.write("shelf: interrupted\n")
        raise SystemExit(INTERRUPTED) from None
    raise SystemExit(main())


if __name__ == "__main__":
    run()
