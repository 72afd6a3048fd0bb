"""Objects as files under a local directory, with honest atomicity and durability.

* create-if-absent: write a temp file in the target directory, fsync it, ``os.link`` it to the
  final name (atomic, never partial, fails if the name exists), fsync the directory.
* compare-and-swap, unconditional put and delete: under an exclusive ``flock`` on a lock
  stripe chosen by the key, compare, write temp + fsync, ``os.replace``, fsync the directory.
* version: the xxh3-128 of the content (like S3's ETag is the MD5 of a single PUT). Every
  object objstore writes conditionally carries a writer nonce, so equal content means the
  same write.

Bookkeeping lives in ``.objstore-locks/`` and ``.objstore-tmp-*`` files, never listed.
fsspec's ``pipe_file(mode="create")`` is check-then-write and is deliberately not used.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import os
import stat
import sys
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import cast

import xxhash

from objstore.backends._base import Buffer, ObjectInfo, ObjectListing, Transport
from objstore.backends._retry import RetryPolicy
from objstore.errors import (
    AlreadyExistsError,
    NotFoundError,
    PreconditionFailedError,
    StoreNotFoundError,
)

__all__ = ["LocalTransport"]

_LOCK_DIR = ".objstore-locks"
_TMP_PREFIX = ".objstore-tmp-"
_LOCK_STRIPES = 1024
_READ_BLOCK = 8 * 1024 * 1024
_STREAM_PIECE = 4 * 1024 * 1024
"""Bytes per read of :meth:`LocalTransport.get_range_stream`: small enough that the first
frames of a sidecar are being decompressed while the rest is still being read."""


def _version_of(data: Buffer) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def _write_all(fd: int, data: Buffer) -> None:
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalTransport(Transport):
    """Objects stored as files below ``root`` (created on first write)."""

    scheme = "file"
    #: A file gains nothing from one big write: a streamed object is written as its parts
    #: arrive, without first being joined.
    single_put_limit = 1024 * 1024
    bounded_streaming = True

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._root = Path(root).expanduser().absolute()

    @property
    def url(self) -> str:
        return self._root.as_uri()

    @property
    def root(self) -> Path:
        """The directory holding the objects."""
        return self._root

    def _path(self, key: str) -> Path:
        return self._root.joinpath(*key.split("/"))

    # -- directory and lock helpers (run in worker threads) --------------------------------

    def _ensure_dir(self, directory: Path) -> None:
        """Create ``directory`` and missing ancestors, fsyncing each new entry's parent."""
        missing: list[Path] = []
        probe = directory
        while not probe.is_dir():
            missing.append(probe)
            if probe.parent == probe:
                break
            probe = probe.parent
        for new_dir in reversed(missing):
            with contextlib.suppress(FileExistsError):
                new_dir.mkdir()
            _fsync_dir(new_dir.parent)

    @contextlib.contextmanager
    def _key_lock(self, key: str) -> Iterator[None]:
        lock_dir = self._root / _LOCK_DIR
        if not lock_dir.is_dir():
            self._ensure_dir(lock_dir)
        stripe = xxhash.xxh3_64_intdigest(key.encode("utf-8")) % _LOCK_STRIPES
        fd = os.open(lock_dir / f"{stripe:03x}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _open_temp(self, directory: Path) -> tuple[int, Path]:
        """Create a fresh, empty temp file in ``directory`` (and the directory if needed).

        Raises:
            OSError: (``ENOENT``) if concurrent deletes of the directory keep defeating the create.
        """
        for _ in range(5):
            temp = directory / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
            try:
                self._ensure_dir(directory)
                return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), temp
            except FileNotFoundError:
                continue  # a concurrent delete removed the empty directory; recreate it
        raise OSError(errno.ENOENT, f"could not create a temp file in {directory}")

    def _write_temp(self, directory: Path, data: Buffer) -> Path:
        """Write ``data`` durably to a fresh temp file in ``directory``."""
        fd, temp = self._open_temp(directory)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            temp.unlink(missing_ok=True)
            raise
        os.close(fd)
        return temp

    def _read(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise NotFoundError(key) from exc

    def _current_version(self, key: str) -> str | None:
        try:
            return _version_of(self._read(key))
        except NotFoundError:
            return None

    def _check_root(self) -> None:
        """See :meth:`Transport.check_root`: the root must be an existing directory.

        Raises:
            StoreNotFoundError: if the root does not exist.
            ValueError: if the root, or a path above it, is a file rather than a directory.
        """
        try:
            mode = os.stat(self._root).st_mode
        except NotADirectoryError:
            raise ValueError(
                f"{self._root} is below a file that is not a directory: it can never hold a store"
            ) from None
        except FileNotFoundError:
            raise StoreNotFoundError(
                self.url,
                f"the store {self._root} does not exist (a typo, or a volume not mounted?); "
                "it is created by the first checkpoint written there",
            ) from None
        if not stat.S_ISDIR(mode):
            raise ValueError(f"{self._root} is not a directory: it can never hold a store")

    # -- blocking implementations ------------------------------------------------------------

    def _get(self, key: str) -> tuple[bytes, str]:
        data = self._read(key)
        return data, _version_of(data)

    def _get_range(self, key: str, start: int, end: int) -> bytes:
        try:
            with open(self._path(key), "rb") as file:
                file.seek(start)
                return file.read(end - start)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise NotFoundError(key) from exc

    def _head(self, key: str) -> ObjectInfo:
        path = self._path(key)
        hasher = xxhash.xxh3_128()
        try:
            with open(path, "rb") as file:
                stat = os.fstat(file.fileno())
                while block := file.read(_READ_BLOCK):
                    hasher.update(block)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise NotFoundError(key) from exc
        return ObjectInfo(key, stat.st_size, hasher.hexdigest(), stat.st_mtime)

    def _put(self, key: str, data: Buffer) -> str:
        path = self._path(key)
        temp = self._write_temp(path.parent, data)
        with self._key_lock(key):
            os.replace(temp, path)
            _fsync_dir(path.parent)
        return _version_of(data)

    def _link_into_place(self, key: str, temp: Path) -> None:
        path = self._path(key)
        try:
            os.link(temp, path)
        except FileExistsError as exc:
            raise AlreadyExistsError(key) from exc
        finally:
            temp.unlink(missing_ok=True)
        _fsync_dir(path.parent)

    def _put_if_absent(self, key: str, data: Buffer) -> str:
        temp = self._write_temp(self._path(key).parent, data)
        self._link_into_place(key, temp)
        return _version_of(data)

    def _put_if_match(self, key: str, data: Buffer, version: str) -> str:
        path = self._path(key)
        temp = self._write_temp(path.parent, data)
        try:
            with self._key_lock(key):
                current = self._current_version(key)
                if current is None:
                    raise NotFoundError(key)
                if current != version:
                    raise PreconditionFailedError(
                        key, expected_version=version, actual_version=current
                    )
                os.replace(temp, path)
                _fsync_dir(path.parent)
        finally:
            temp.unlink(missing_ok=True)
        return _version_of(data)

    def _list(self, prefix: str) -> ObjectListing:
        base = self._path(prefix) if prefix else self._root
        items: list[ObjectInfo] = []
        for directory, subdirs, files in os.walk(base):
            if directory == str(self._root):
                subdirs[:] = [name for name in subdirs if name != _LOCK_DIR]
            relative = os.path.relpath(directory, self._root)
            for name in files:
                if name.startswith(_TMP_PREFIX):
                    continue
                key = name if relative == "." else f"{relative.replace(os.sep, '/')}/{name}"
                try:
                    stat = os.stat(os.path.join(directory, name))
                except FileNotFoundError:
                    continue
                items.append(ObjectInfo(key, stat.st_size, None, stat.st_mtime))
        items.sort(key=lambda info: info.key)
        return items

    def _list_after(self, prefix: str, start_after: str, limit: int) -> ObjectListing:
        """Walk directories in key order, skipping whole subtrees that sort before
        ``start_after`` and stopping at ``limit``: the cost follows what is returned, not
        how many objects precede it."""
        items: list[ObjectInfo] = []

        def walk(directory: str, key_prefix: str) -> bool:
            try:
                entries = list(os.scandir(directory))
            except (FileNotFoundError, NotADirectoryError):
                return False
            # A directory "d" holds keys "d/...", which sort after a file "d.txt": order
            # entries by the key text they start, not by their bare names.
            candidates = []
            for entry in entries:
                name = entry.name
                # Only entries that can hold keys after start_after are examined further: a
                # directory "d" qualifies exactly when "d" itself sorts after start_after or
                # is a prefix of it, so no stat is needed to decide.
                full = key_prefix + name
                if not (full > start_after or start_after.startswith(full)):
                    continue
                if name.startswith(_TMP_PREFIX) or (not key_prefix and name == _LOCK_DIR):
                    continue
                key_start = name + "/" if entry.is_dir(follow_symlinks=False) else name
                candidates.append((key_start, entry))
            ordered = sorted(candidates, key=lambda candidate: candidate[0])
            for key_start, entry in ordered:
                key = key_prefix + key_start
                if key_start.endswith("/"):
                    if key <= start_after and not start_after.startswith(key):
                        continue
                    if walk(entry.path, key):
                        return True
                    continue
                if key <= start_after:
                    continue
                try:
                    stat = entry.stat()
                except FileNotFoundError:
                    continue
                items.append(ObjectInfo(key, stat.st_size, None, stat.st_mtime))
                if len(items) >= limit:
                    return True
            return False

        base = self._path(prefix) if prefix else self._root
        walk(str(base), prefix + "/" if prefix else "")
        return items

    def _delete(self, key: str, version: str | None) -> None:
        path = self._path(key)
        with self._key_lock(key):
            if version is not None:
                current = self._current_version(key)
                if current is None:
                    return
                if current != version:
                    raise PreconditionFailedError(
                        key, expected_version=version, actual_version=current
                    )
            try:
                path.unlink()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                return
            with contextlib.suppress(FileNotFoundError):
                _fsync_dir(path.parent)  # gone only if a concurrent delete emptied and removed it
        self._remove_empty_parents(path.parent)

    def _remove_empty_parents(self, directory: Path) -> None:
        while directory != self._root and self._root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    # -- async face ------------------------------------------------------------------------

    async def check_root(self) -> None:
        await asyncio.to_thread(self._check_root)

    async def get(self, key: str) -> tuple[bytes, str]:
        return await asyncio.to_thread(self._get, key)

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        return await asyncio.to_thread(self._get_range, key, start, end)

    async def get_range_stream(self, key: str, start: int, end: int) -> AsyncIterator[Buffer]:
        """The range read in pieces of :data:`_STREAM_PIECE` from one open file, each in a
        worker thread (the descriptor keeps the object being read even if it is replaced);
        a range of one piece costs one hand-off to a thread, as :meth:`get_range` does."""
        fd, piece = await asyncio.to_thread(self._open_and_read, key, start, end)
        try:
            position = start + len(piece)
            if piece:
                yield piece
            while fd is not None and position < end:
                piece = await asyncio.to_thread(
                    os.pread, fd, min(_STREAM_PIECE, end - position), position
                )
                if not piece:
                    return
                position += len(piece)
                yield piece
        finally:
            if fd is not None:
                os.close(fd)

    def _open_and_read(self, key: str, start: int, end: int) -> tuple[int | None, bytes]:
        """Open ``key`` and read the first piece of ``[start, end)``; the descriptor is
        ``None`` (already closed) when that piece was all there is to read.

        Raises:
            NotFoundError: if there is no file (or a directory) at ``key``.
        """
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise NotFoundError(key) from exc
        try:
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                raise NotFoundError(key)
            wanted = min(_STREAM_PIECE, end - start)
            piece = os.pread(fd, wanted, start)
        except BaseException:
            os.close(fd)
            raise
        if len(piece) < wanted or start + wanted >= end:
            os.close(fd)
            return None, piece
        return fd, piece

    async def head(self, key: str) -> ObjectInfo:
        return await asyncio.to_thread(self._head, key)

    async def put(self, key: str, data: Buffer) -> str:
        return await asyncio.to_thread(self._put, key, data)

    async def put_if_absent(self, key: str, data: Buffer) -> str:
        return await asyncio.to_thread(self._put_if_absent, key, data)

    async def put_if_match(self, key: str, data: Buffer, version: str) -> str:
        return await asyncio.to_thread(self._put_if_match, key, data, version)

    async def list(self, prefix: str) -> ObjectListing:
        return await asyncio.to_thread(self._list, prefix)

    async def list_after(self, prefix: str, start_after: str, limit: int) -> ObjectListing:
        return await asyncio.to_thread(self._list_after, prefix, start_after, limit)

    async def delete(self, key: str, version: str | None = None) -> None:
        await asyncio.to_thread(self._delete, key, version)

    async def put_if_absent_stream(
        self, key: str, parts: AsyncIterable[Buffer], *, retry: RetryPolicy | None = None
    ) -> str:
        """Stream parts into one temp file, then link it into place (create-if-absent).

        Local writes are not retried (``retry`` is unused): a failed write is not transient.

        Each part is hashed and written by a worker thread as it arrives, so the event loop
        stays free for whoever produces the parts, and the kernel is asked to start writing
        it back at once, so the final fsync does not wait for the whole file. The file is
        written once, fsynced once, and never copied: ``os.link`` makes the temp file the
        object.
        """
        directory = self._path(key).parent
        fd, temp = await asyncio.to_thread(self._open_temp, directory)
        hasher = xxhash.xxh3_128()
        written = 0
        try:
            try:
                async for part in parts:
                    await _uncancelled(_hash_and_write, fd, part, hasher, written)
                    written += memoryview(part).nbytes
                await _uncancelled(os.fsync, fd)
            finally:
                os.close(fd)
            await asyncio.to_thread(self._link_into_place, key, temp)
        finally:
            temp.unlink(missing_ok=True)
        return hasher.hexdigest()


def _hash_and_write(fd: int, data: Buffer, hasher: xxhash.xxh3_128, offset: int) -> None:
    hasher.update(data)
    _write_all(fd, data)
    if _start_writeback is not None:
        _start_writeback(fd, offset, memoryview(data).nbytes, _SYNC_FILE_RANGE_WRITE)


def _writeback_starter() -> Callable[[int, int, int, int], int] | None:
    """libc's ``sync_file_range`` (Linux; Python's ``os`` lacks it), else ``None``.

    With ``SYNC_FILE_RANGE_WRITE`` it starts writing a range back without waiting: a
    streamed file then reaches the disk while later parts are still being produced, as
    its fsync would otherwise flush the whole file at the end. It is only a hint; its
    result is ignored and durability still comes from the fsync.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], function)


_SYNC_FILE_RANGE_WRITE = 2
_start_writeback = _writeback_starter()


async def _uncancelled(func: Callable[..., object], *args: object) -> None:
    """Run ``func`` in a worker thread; if cancelled, still wait for the thread to finish,
    so the file descriptor it uses is never closed (and reused) under it.

    Raises:
        CancelledError: re-raised once the worker thread has finished, if the call was cancelled.
    """
    job = asyncio.ensure_future(asyncio.to_thread(func, *args))
    try:
        await asyncio.shield(job)
    except asyncio.CancelledError:
        await asyncio.wait([job])
        raise
