"""Content-addressed, atomically written cache folders.

A folder's name carries the hash of everything that produced it, so a changed input builds
a new folder; it is built under a temporary name and renamed into place when complete, so
an interrupted build never leaves a half-written folder that looks finished."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdray.errors import KdrayError

COMPLETE_MARKER = ".complete"


def default_cache_dir() -> Path:
    return Path(os.environ.get("KDRAY_CACHE", Path.home() / ".cache" / "kdray"))


def content_key(*parts: Any) -> str:
    payload = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def is_complete(folder: Path) -> bool:
    return (folder / COMPLETE_MARKER).is_file()


def build_once(folder: Path, build: Callable[[Path], None]) -> tuple[Path, bool]:
    """Return (folder, built_now): reuse a complete folder or build it atomically."""
    if is_complete(folder):
        return folder, False
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise KdrayError(
            f"cannot create cache directory {folder.parent}: {error.strerror}; "
            "pass --cache-dir or set KDRAY_CACHE to a writable folder"
        ) from error
    staging = folder.parent / f".{folder.name}.{uuid.uuid4().hex[:8]}.partial"
    try:
        build(staging)
        (staging / COMPLETE_MARKER).write_text("")
        if folder.exists():  # an incomplete leftover, or a concurrent builder won
            if is_complete(folder):
                return folder, False
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return folder, True
