"""Folders a command will write, checked before anything runs (one line naming the folder and
the fix; nothing created). Dependency-free, so every command can check at once."""

from __future__ import annotations

import os
from pathlib import Path

from kdray.errors import ConfigError


def check_writable(folder: Path, fix: str) -> None:
    """The folder exists and is writable, or can be created: the nearest existing ancestor is
    a writable folder. Checked before anything runs; creates nothing."""
    existing = folder.absolute()
    try:
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
    except OSError as error:  # e.g. a name too long for the file system
        raise ConfigError(f"{folder} cannot be a folder ({error.strerror}): {fix}") from None
    if not existing.is_dir():
        raise ConfigError(f"{folder} cannot be a folder ({existing} is a file): {fix}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{folder} is not writable ({existing} is not): {fix}")
