"""structlog set-up: human-readable on a terminal, JSON lines otherwise (always on stderr).

Importing structlog costs a CLI command about a fifth of its start-up (it brings asyncio
with it), and most commands log nothing. So `configure_logging` only records the level;
structlog is imported and configured the first time something logs through `get_logger`,
or when `ensure_configured` is called by code that uses structlog directly (the process
manager, `serve`).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

_level = "info"
_configured = False


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
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=False)
        if sys.stderr.isatty()
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            numeric if isinstance(numeric, int) else logging.INFO
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    _configured = True


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
