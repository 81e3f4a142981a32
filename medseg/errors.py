"""Errors that reach the user as a clear message instead of a traceback.

Every error names the file (or run folder) concerned and, where one is known,
the fix. The CLI prints ``MedsegError`` instances and exits with status 2.
"""

from __future__ import annotations

from pathlib import Path


class MedsegError(Exception):
    """Base class of all errors medseg reports to users."""

    def __init__(self, message: str, *, path: str | Path | None = None, hint: str | None = None):
        self.message = message
        self.path = Path(path) if path is not None else None
        self.hint = hint
        super().__init__(self.__str__())

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}" if self.path is not None else self.message
        if self.hint:
            text += f"\n  fix: {self.hint}"
        return text


class DataError(MedsegError):
    """A problem with the user's images, masks or dataset layout."""


class ConfigError(MedsegError, ValueError):
    """An invalid option, argument or configuration value."""


class RunFolderError(MedsegError):
    """A run folder that is missing, incomplete or from an incompatible version."""
