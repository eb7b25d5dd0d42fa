"""Content-addressed blobs, atomic file writes and the store's file lock.

Store layout (as Ollama's):

    <models_dir>/
        blobs/sha256-<hex>                  one file per distinct content, named by its SHA-256
        manifests/<namespace>/<model>/<tag>  JSON listing the blobs of one model
        tmp/<pid>-<random>                  files being written; renamed into blobs/ when complete
        partial/<key>.part                  interrupted URL downloads, kept to resume with Range
        .lock                               fcntl lock held while manifests or blobs change

Crash safety comes from one rule: a file appears under its final name only by
``os.rename`` of a complete, fsync'ed file.  A process killed at any moment
leaves at worst a stray file in tmp/ (removed later), never a half blob.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import uuid
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from refllm.errors import InvalidRequest, RefllmError

CHUNK = 1 << 20  # 1 MiB reads and writes
FICLONE = 0x40049409  # Linux ioctl: reflink (copy-on-write clone) on btrfs/xfs


class StoreError(RefllmError):
    """The store is in a state we cannot work with (missing blob, bad manifest, disk error)."""

    http_status = 500


class DigestMismatch(StoreError):
    http_status = 400


Progress = Callable[[dict], None]


def no_progress(_: dict) -> None:
    pass


def normalize_digest(digest: str) -> str:
    """'sha256:<hex>' or 'sha256-<hex>' -> 'sha256:<hex>'; anything else is an InvalidRequest."""
    text = str(digest).strip().lower().replace("sha256-", "sha256:", 1)
    hex_part = text.removeprefix("sha256:")
    if not text.startswith("sha256:") or len(hex_part) != 64 or any(c not in "0123456789abcdef" for c in hex_part):
        raise InvalidRequest(f"invalid digest '{digest}': expected sha256:<64 hex digits>")
    return text


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, tmp_dir: Path) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a mix."""
    tmp = tmp_dir / f"{os.getpid()}-{uuid.uuid4().hex}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    path.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def sha256_file(path: Path, progress: Progress = no_progress, status: str = "verifying") -> str:
    h = hashlib.sha256()
    total, done = path.stat().st_size, 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            done += len(chunk)
            progress({"status": status, "total": total, "completed": done})
    return "sha256:" + h.hexdigest()


class BlobStore:
    """The blobs/ and tmp/ directories and the lock of one store root."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.blobs_dir = self.root / "blobs"
        self.tmp_dir = self.root / "tmp"
        self.partial_dir = self.root / "partial"
        for directory in (self.blobs_dir, self.tmp_dir, self.partial_dir):
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create the model store at {self.root}: {e.strerror}") from None

    # -- names

    def path(self, digest: str) -> Path:
        return self.blobs_dir / normalize_digest(digest).replace(":", "-")

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def new_temp_path(self) -> Path:
        """A fresh name in tmp/; the pid prefix lets a later process see whether its writer is gone."""
        return self.tmp_dir / f"{os.getpid()}-{uuid.uuid4().hex}"

    # -- the lock

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive lock across processes for any change to manifests or blobs."""
        with open(self.root / ".lock", "a+b") as lock_file:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
            try:
                self._remove_stale_temp_files()
                yield
            finally:
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)

    def _remove_stale_temp_files(self) -> None:
        """Delete tmp/ files whose writing process no longer runs (it was killed mid-write)."""
        for tmp in self.tmp_dir.iterdir():
            pid_text = tmp.name.partition("-")[0]
            if pid_text.isdigit() and not _process_alive(int(pid_text)):
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()

    # -- writing

    def stage_stream(self, stream: BinaryIO, progress: Progress = no_progress, total: int | None = None,
                     status: str = "writing") -> tuple[Path, str, int]:
        """Copy a stream to a new tmp file while hashing it; return (tmp path, digest, size)."""
        tmp = self.new_temp_path()
        h, size = hashlib.sha256(), 0
        try:
            with open(tmp, "wb") as out:
                while chunk := stream.read(CHUNK):
                    out.write(chunk)
                    h.update(chunk)
                    size += len(chunk)
                    progress({"status": status, "total": total or size, "completed": size})
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        return tmp, "sha256:" + h.hexdigest(), size

    def stage_bytes(self, data: bytes) -> tuple[Path, str]:
        tmp = self.new_temp_path()
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return tmp, "sha256:" + hashlib.sha256(data).hexdigest()

    def stage_file(self, source: Path, allow_hardlink: bool, progress: Progress = no_progress) -> tuple[Path, str, str]:
        """Bring ``source`` into tmp/ as cheaply as possible; return (tmp path, digest, how).

        ``how`` is "hardlink" (same inode: no second copy), "reflink" (copy-on-write clone)
        or "copy".  The digest is computed from the staged file itself, after linking,
        so what we name is exactly what we hold.
        """
        tmp = self.new_temp_path()
        how = "copy"
        try:
            if allow_hardlink and _try_hardlink(source, tmp):
                how = "hardlink"
            elif _try_reflink(source, tmp):
                how = "reflink"
            else:
                _copy_with_progress(source, tmp, progress)
            digest = sha256_file(tmp, progress, status="verifying sha256 digest")
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        return tmp, digest, how

    def commit(self, tmp: Path, digest: str) -> Path:
        """Move a staged, hashed file to blobs/<digest> (call with the lock held)."""
        final = self.path(digest)
        if final.exists():
            tmp.unlink()  # same content is already there
        else:
            os.replace(tmp, final)
            fsync_dir(self.blobs_dir)
        return final

    def verify(self, digest: str) -> bool:
        path = self.path(digest)
        return path.is_file() and sha256_file(path) == normalize_digest(digest)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed child not yet reaped by its parent) still answers kill(0); it writes nothing.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _try_hardlink(source: Path, target: Path) -> bool:
    try:
        os.link(source, target)
        return True
    except OSError as e:
        if e.errno in (errno.EXDEV, errno.EPERM, errno.EACCES, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP):
            return False
        raise


def _try_reflink(source: Path, target: Path) -> bool:
    try:
        with open(source, "rb") as src, open(target, "wb") as dst:
            fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
        return True
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        return False


def _copy_with_progress(source: Path, target: Path, progress: Progress) -> None:
    total, done = source.stat().st_size, 0
    with open(source, "rb") as src, open(target, "wb") as dst:
        while chunk := src.read(CHUNK):
            dst.write(chunk)
            done += len(chunk)
            progress({"status": "copying", "total": total, "completed": done})
        dst.flush()
        os.fsync(dst.fileno())
