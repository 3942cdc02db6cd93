"""structlog set-up: human-readable on a terminal, JSON lines otherwise (always on stderr).

Importing structlog costs a CLI command about a fifth of its start-up (it brings asyncio
with it), and most commands log nothing. So `configure_logging` only records the level;
structlog is imported and configured the first time something logs through `get_logger`,
or when `ensure_configured` is called by code that uses structlog directly (the process
manager, `serve`).
"""

from __future__ import annotations

import atexit
import collections
import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TextIO, cast

if TYPE_CHECKING:
    import msgspec

_level = "info"
_configured = False
_batched: BatchedLines | None = None
FLUSH_SECONDS = 0.05
_encoder: msgspec.json.Encoder | None = None  # made on first use


class BatchedLines:
    """A stream for a busy process's log (`serve`): what is written here reaches `stream`
    within FLUSH_SECONDS, many lines per write, from a thread of its own. A write per line
    made each of serve's drive threads give up the GIL, and wait to get it back, for every
    line it logged: that cost serve about 6% of its steps per second. What is still held
    is written at close or exit (after close, lines go straight to the stream); a kill -9
    loses at most the last FLUSH_SECONDS of lines. A stream that can't be written to any
    more (closed, a pipe with no reader) loses the lines, as a plain write would.
    After an interval with nothing to write, the thread sleeps until a line comes (the
    first line wakes it): an idle serve's CPU was mostly this thread waking 20 times a
    second."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._parts: collections.deque[str] = collections.deque()  # appends are atomic
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by the first line written while idle
        self._idle = False
        self._closed = False
        self._writer = threading.Thread(target=self._write_every_interval, daemon=True,
                                        name="log-writer")
        self._writer.start()
        atexit.register(self.close)  # should the process exit from within

    def write(self, text: str) -> int:
        if self._closed:
            self._write_to_stream(text)
        else:
            self._parts.append(text)
            if self._idle:  # a plain read while busy: no lock taken per line
                self._idle = False
                self._wake.set()
        return len(text)

    def flush(self) -> None:
        """Nothing: the writer thread writes and flushes every FLUSH_SECONDS."""

    def write_held(self) -> None:
        parts = []
        while self._parts:
            parts.append(self._parts.popleft())
        if parts:
            self._write_to_stream("".join(parts))

    def _write_to_stream(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # closed, or nobody reads it: nowhere to log to
            pass

    def _write_every_interval(self) -> None:
        while not self._stop.wait(FLUSH_SECONDS):
            if self._parts:
                self.write_held()
                continue
            self._idle = True
            if not self._parts:  # a line written before `_idle` was set is seen here
                self._wake.wait()
            self._wake.clear()
            self._idle = False

    def close(self) -> None:
        atexit.unregister(self.close)
        self._stop.set()
        self._wake.set()
        self._writer.join()
        self._closed = True
        self.write_held()


def _json_line(event: dict[str, Any], **_: Any) -> str:
    """A log line's JSON, by msgspec: what a step logs (a bind, a line) took 10 µs against
    json.dumps' 14 µs, for the 25 or so lines `serve` logs a shelve and unshelve.
    Strings, numbers, UUIDs and times are written as JSON has them; anything else by its
    `__structlog__` if it has one, else as its repr, as structlog's own fallback does
    (msgspec writes bytes as base64, and sets, enums and dataclasses in its own way)."""
    global _encoder
    if _encoder is None:
        import msgspec

        _encoder = msgspec.json.Encoder(enc_hook=_json_fallback)
    text: str = _encoder.encode(event).decode()
    return text


def _json_fallback(value: Any) -> Any:
    for plain in (str, int, float):  # a subclass of one (msgspec takes only the type)
        if isinstance(value, plain):
            return plain(value)
    if hasattr(value, "__structlog__"):
        return value.__structlog__()
    return repr(value)


def configure_logging(level: str = "info") -> None:
    global _level, _configured
    _level, _configured = level, False
    if "structlog" in sys.modules:  # already paid for: configure now, as before
        ensure_configured()


def ensure_configured() -> None:
    global _configured
    if _configured:
        return
    import structlog

    numeric = logging.getLevelName(_level.upper())
    # The console renderer formats an exception itself; a JSON line carries its traceback
    # as text (else `log.exception` wrote just `"exc_info": true`).
    rendering: list[structlog.typing.Processor] = (
        [structlog.dev.ConsoleRenderer(colors=False)]
        if sys.stderr.isatty()
        else [structlog.processors.format_exc_info,
              structlog.processors.JSONRenderer(serializer=_json_line)]
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *rendering,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            numeric if isinstance(numeric, int) else logging.INFO
        ),
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, _batched or sys.stderr)),
        cache_logger_on_first_use=False,
    )
    _configured = True


@contextmanager
def batched_log_lines() -> Iterator[None]:
    """Within, log lines reach stderr in batches (BatchedLines): for `serve`."""
    global _batched, _configured
    batched = _batched = BatchedLines(sys.stderr)
    _configured = False
    ensure_configured()
    try:
        yield
    finally:
        batched.close()  # the lines held first; any after it go straight out
        _batched, _configured = None, False
        ensure_configured()


class LazyLogger:
    """A structlog logger that imports and configures structlog on first use."""

    def __init__(self, name: str | None = None) -> None:
        self._name = name
        self._logger: Any = None

    def __getattr__(self, method: str) -> Any:
        if self._logger is None:
            ensure_configured()
            import structlog

            self._logger = structlog.get_logger(self._name)
        return getattr(self._logger, method)


def get_logger(name: str | None = None) -> Any:
    return LazyLogger(name)
