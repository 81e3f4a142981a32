"""Logging helpers: a message that would repeat within one command is said once.

Planning and training read the same data folder in one ``medseg train``; :func:`info_once` keeps the second
"found N cases" (and the like) at DEBUG level, so the terminal shows every message once.
"""

from __future__ import annotations

import logging

_SAID: set[tuple[str, str]] = set()


def info_once(logger: logging.Logger, message: str, *args) -> None:
    """``logger.info(message, *args)`` the first time this text is logged in this command (see :func:`forget`) or
    process, DEBUG afterwards."""
    text = message % args if args else message
    key = (logger.name, text)
    (logger.debug if key in _SAID else logger.info)("%s", text)
    _SAID.add(key)


def forget() -> None:
    """Start a new command: every message may be said once again."""
    _SAID.clear()
