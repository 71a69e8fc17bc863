"""Content-addressed, atomically written, checksummed cache folders.

A folder's name carries the hash of everything that produced it, so a changed input builds
a new folder; it is built under a temporary name and renamed into place when complete, so
an interrupted build never leaves a half-written folder that looks finished. Every file's size
and SHA-256 go into `.checksums.json` when it is built, so a truncated or altered file is found
(`verify_checksums`) and the folder rebuilt or refused instead of read."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock

from kdray.errors import KdrayError

COMPLETE_MARKER = ".complete"
CHECKSUMS = ".checksums.json"
HASH_BLOCK = 1 << 20


class CacheCorruptError(KdrayError):
    """A cached file is missing, truncated or altered: it does not match its checksum."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("KDRAY_CACHE", Path.home() / ".cache" / "kdray"))


def content_key(*parts: Any) -> str:
    payload = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def is_complete(folder: Path) -> bool:
    return (folder / COMPLETE_MARKER).is_file()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def write_checksums(folder: Path, name: str = CHECKSUMS) -> None:
    """Record the size and SHA-256 of every file in `folder` (but checksum files) in `name`."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(CHECKSUMS))
    sums = {
        str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
        for p in files
    }
    (folder / name).write_text(json.dumps(sums, indent=1))


def verify_checksums(folder: Path, name: str = CHECKSUMS) -> None:
    """Raise CacheCorruptError unless every file listed in the folder's checksums `name` is
    there with its size and SHA-256."""
    try:
        sums = json.loads((folder / name).read_text())
    except (OSError, ValueError) as error:
        raise CacheCorruptError(f"cache folder {folder} has no readable checksums") from error
    for name, expected in sums.items():
        path = folder / name
        if not path.is_file():
            raise CacheCorruptError(f"cached file {path} is missing")
        if path.stat().st_size != expected["bytes"] or file_sha256(path) != expected["sha256"]:
            raise CacheCorruptError(
                f"cached file {path} does not match its checksum (truncated or altered)"
            )


def build_once(
    folder: Path,
    build: Callable[[Path], None],
    verify: bool = False,
    on_rebuild: Callable[[str], None] | None = None,
) -> tuple[Path, bool]:
    """Return (folder, built_now): reuse a complete folder or build it atomically. Builders of
    the same folder take turns (a file lock), so a second one waits and reuses the first's.
    With `verify`, a complete folder is reused only if its checksums match; otherwise it is
    rebuilt (on_rebuild hears why)."""
    if is_complete(folder) and not verify:
        return folder, False
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise KdrayError(
            f"cannot create cache directory {folder.parent}: {error.strerror}; "
            "pass --cache-dir or set KDRAY_CACHE to a writable folder"
        ) from error
    with FileLock(folder.parent / f".{folder.name}.lock"):
        if is_complete(folder):
            if not verify:
                return folder, False
            try:
                verify_checksums(folder)
                return folder, False
            except CacheCorruptError as error:
                if on_rebuild:
                    on_rebuild(f"{error}; rebuilding it")
                shutil.rmtree(folder)
        return _build_atomically(folder, build)


def _build_atomically(folder: Path, build: Callable[[Path], None]) -> tuple[Path, bool]:
    staging = folder.parent / f".{folder.name}.{uuid.uuid4().hex[:8]}.partial"
    try:
        build(staging)
        write_checksums(staging)
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
