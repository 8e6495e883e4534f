"""Logging set-up shared by the rule scripts: everything goes to the rule's ``log:`` file."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from fairfer.errors import UserError


def configure_logging(
    log_path: str | os.PathLike[str] | None, *, level: int = logging.INFO
) -> None:
    """Send log records (and uncaught exceptions) to ``log_path``, or stderr when it is None."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )

    def log_uncaught(kind, value, traceback):
        if isinstance(value, UserError):
            # The user's to fix: one paragraph on stderr, the traceback in the log file only.
            for handler in handlers[1:]:
                handler.handle(
                    logging.makeLogRecord(
                        {
                            "name": "fairfer",
                            "levelno": logging.CRITICAL,
                            "levelname": "CRITICAL",
                            "msg": str(value),
                            "exc_info": (kind, value, traceback),
                        }
                    )
                )
            print(f"fairfer: {value}", file=sys.stderr)
            return
        logging.getLogger("fairfer").critical("uncaught error", exc_info=(kind, value, traceback))

    sys.excepthook = log_uncaught
