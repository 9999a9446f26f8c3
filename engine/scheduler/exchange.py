"""Large values on the scheduler's own machine: moved through the filesystem, not over gRPC.

An executor that runs on the scheduler's machine (process backend, or docker on the local
engine) and whose store keeps blobs in a local directory (SQLite) gets an *exchange directory*
beside the blobs, on the same filesystem: `<blob_dir>/.exchange/<pid>-<n>/` with

- `in/`: hard links to the blobs its running calls were given, and nothing else. A link is made
  when `Access` gives the blob to one of the executor's calls and removed when the last such
  call ends, so an executor can read only what the Blobs service would have streamed to it
  (`engine.scheduler.access`). Docker mounts it read-only; the executor maps a blob into memory
  (`mmap`) instead of receiving it in 1 MiB messages.
- `out/`: where the executor writes a large value it would have streamed (`Blobs.Put`), then
  names it in `Blobs.Adopt`. The scheduler takes the file into the store by renaming it (the
  bytes are never copied), so the value is checkpointed exactly as a streamed one is.

Adoption (`Exchange.adopt`) must not trust the executor, which could keep writing to the file
after it was verified, or point `name` elsewhere. So, in this order:
1. the file is renamed out of `out/` into the blob directory under a temporary name: from then on
   the executor has no path to it;
2. it must be a regular file (opened with O_NOFOLLOW) with one link (no other name it could be
   reopened by), and no open file descriptor or mapping anywhere: a write lease
   (`F_SETLEASE`) is granted only then; so nothing can change its bytes afterwards;
3. it is made read-only (and the scheduler's, when the scheduler runs as root), hashed while it
   is fsynced, and renamed to its digest — or dropped when that blob already exists.
A file that fails 2 is deleted and Adopt answers FAILED_PRECONDITION; the executor then streams
the value. For a call's own result, Adopt answers after 2 (`claim`) and step 3 (`settle`) runs on a
thread while the value is handed on by a token (`Deferred`: what waits for what). A crash at any step leaves at most a `.tmp-*` file, which the store sweeps; a blob's
name never points at bytes that were not fsynced and hashed.

Once a result handed on by its token is stored and no executor has it linked any more (the
calls given it have ended), its pages leave the page cache (`release_pages`): such a value is
read once or twice, just after it is made, and the next one then reuses that memory instead of
taking fresh pages, which a virtual machine's host may have taken back. A call given it later
(by its digest) reads it from the disk. A stored blob given by its digest keeps its pages: it
is an argument that the next calls of a fan-out are likely given too.

Not used (values stream as before) for the PostgreSQL store, whose blobs are rows, and for the
swarm backend, whose executors run on other machines; docker only when its engine is local.
What the process backend gives is convenience, not isolation: its executors run as the
scheduler's user and could read the state directory anyway.
"""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import mmap
import os
import re
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from engine import pagecache
from engine.procstat import alive
from engine.wire import DEFERRED_PREFIX, content

# Linux fcntl commands (not exported by Python's fcntl module).
F_SETLEASE = 1024

# A test's hook, never set in use: while the file it names exists, `settle` waits before
# hashing, so that a test can kill the engine between a deferred hand-off and its checkpoint.
TEST_HOLD_ENV = "ENGINE_TEST_HOLD_ADOPTION"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_counter = itertools.count(1)


class NotAdopted(Exception):
    """The named file could not be taken into the store; the message says why."""


class Exchange:
    """One executor's exchange directory (see the module doc)."""

    def __init__(self, root: Path, blob_dir: Path, on_remove: Callable[[Exchange], None] | None = None,
                 deferred: dict[str, Deferred] | None = None,
                 release: Callable[[Path], None] | None = None) -> None:
        self.root = root
        self.on_remove = on_remove
        self.blob_dir = blob_dir
        # The scheduler's deferred adoptions (`Exchanges.deferred`), by token.
        self.deferred = deferred if deferred is not None else {}
        # Deferred adoptions linked into `in/`, by token: found again when the link goes, when
        # the token may have left `deferred` already.
        self.handed: dict[str, Claimed] = {}
        # Gives a handed-on blob's pages back (`release_pages`; `Exchanges` does it on a thread).
        self.release = release if release is not None else release_pages
        self.in_dir = root / "in"
        self.out_dir = root / "out"

    def create(self) -> None:
        self.in_dir.mkdir(parents=True)
        self.out_dir.mkdir()
        # The executor may run under another uid (docker: 10001); the directories' parent, the
        # blob directory, is the scheduler's alone, and docker mounts only these two.
        os.chmod(self.in_dir, 0o755)
        os.chmod(self.out_dir, 0o777)

    def link(self, digest: str) -> None:
        """Let the executor read blob `digest` (it exists in the store), or the deferred
        adoption named by that token."""
        deferred = self.deferred.get(digest) if digest.startswith(DEFERRED_PREFIX) else None
        if deferred is not None:
            claimed = deferred.claimed
            with claimed.lock:  # not renamed to its digest meanwhile
                try:
                    os.link(claimed.path, self.in_dir / digest)
                except OSError:
                    return  # (FileExistsError, or gone: the executor asks Blobs.Get)
                claimed.handed = True
            self.handed[digest] = claimed
            return
        blob = self.blob_dir / content.shard(digest) / digest
        target = self.in_dir / digest
        try:
            if stat.S_IMODE(blob.stat().st_mode) != 0o444:
                os.chmod(blob, 0o444)  # readable by the executor's uid, writable by nobody
            os.link(blob, target)
        except FileExistsError:
            pass
        except OSError:
            pass  # not in the store as a file (or gone): the executor streams it

    def unlink(self, digest: str) -> None:
        """The executor's call given blob `digest` (or deferred token) has ended: take its
        link away; a result handed on by its token also leaves the page cache once it is
        stored and no executor has it (`release_pages`). A blob given by its digest is a stored
        value passed as an argument, which the next call of a fan-out may well be given again:
        it keeps its pages."""
        try:
            (self.in_dir / digest).unlink()
        except OSError:
            return
        claimed = self.handed.pop(digest, None)
        if claimed is None:
            return
        with claimed.lock:
            if not claimed.settled:
                return  # `settle` releases it once it is stored
            path = claimed.path
        self.release(path)

    def adopt(self, name: str) -> tuple[str, int]:
        """Take `out/<name>` into the store; returns (digest, size). Raises `NotAdopted`."""
        claimed = self.claim(name)
        return self.settle(claimed), claimed.size

    def claim(self, name: str) -> Claimed:
        """Steps 1 and 2 of adoption: `out/<name>` moved out of the executor's reach, its bytes
        final (see the module doc). Raises `NotAdopted`."""
        if not _NAME.fullmatch(name):
            raise NotAdopted(f"not a plain file name: {name[:80]!r}")
        blob_dir = self.blob_dir
        source = self.out_dir / name
        tmp = blob_dir / f".tmp-adopt-{secrets.token_hex(8)}"
        try:
            os.rename(source, tmp)
        except OSError as exc:
            raise NotAdopted(f"no file {name} in the exchange directory ({exc.strerror})") from None
        try:
            fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            _remove(tmp)
            raise NotAdopted(f"{name} is not a regular file ({exc.strerror})") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise NotAdopted(f"{name} is not a regular file")
            if st.st_nlink != 1:
                raise NotAdopted(f"{name} has other names ({st.st_nlink} links)")
            try:
                fcntl.fcntl(fd, F_SETLEASE, fcntl.F_WRLCK)
            except OSError as exc:
                raise NotAdopted(f"{name} is still open or mapped by a process ({exc.strerror})") from None
            fcntl.fcntl(fd, F_SETLEASE, fcntl.F_UNLCK)
            # Nobody holds it open and nobody can reach it by a path: its bytes are final.
            os.fchmod(fd, 0o444)
            if os.geteuid() == 0:
                os.fchown(fd, 0, 0)
        except BaseException:
            os.close(fd)
            _remove(tmp)
            raise
        return Claimed(tmp, fd, st.st_size)

    def settle(self, claimed: Claimed) -> str:
        """Step 3: hash and fsync a claimed file and name it by its digest; returns the digest.
        Closes the file; on failure removes it and raises OSError."""
        hold = os.environ.get(TEST_HOLD_ENV)
        while hold and os.path.exists(hold):
            time.sleep(0.05)
        try:
            digest = _hash_and_sync(claimed.fd, claimed.size)
        except BaseException:
            _remove(claimed.path)
            raise
        finally:
            os.close(claimed.fd)
        target = self.blob_dir / content.shard(digest) / digest
        with claimed.lock:
            try:
                if target.exists():
                    _remove(claimed.path)  # the same value was stored before
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(claimed.path, target)
            except BaseException:
                _remove(claimed.path)  # never named: nothing refers to it
                raise
            claimed.path = target
            claimed.settled = True
            handed = claimed.handed
        if handed:  # (a value not yet handed on keeps its pages for the call that will read it)
            release_pages(target)
        return digest

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        if self.on_remove is not None:
            self.on_remove(self)


class Exchanges:
    """The exchange directories of one scheduler, under `<blob_dir>/.exchange/`."""

    def __init__(self, blob_dir: Path) -> None:
        self.blob_dir = blob_dir
        self.root = blob_dir / ".exchange"
        self.live: set[Exchange] = set()
        # Calls' results adopted but not yet checkpointed, by token (see `Deferred`).
        self.deferred: dict[str, Deferred] = {}
        # Where `release_pages` runs for links taken away on the event loop (128 MiB: ~20 ms).
        self._releasing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="exchange-release")
        # Blobs linked into an exchange directory are readable by any uid (the container's):
        # their directory, and so the store's blobs, stay the scheduler's user's alone.
        blob_dir.mkdir(parents=True, exist_ok=True)
        try:
            os.chmod(blob_dir, 0o700)
        except OSError:
            pass

    def new(self) -> Exchange:
        """A fresh, empty exchange directory (`<pid>-<n>`: a later engine sweeps it by its pid)."""
        exchange = Exchange(self.root / f"{os.getpid()}-{next(_counter)}-{secrets.token_hex(3)}",
                            self.blob_dir, self.live.discard, self.deferred, self._release_later)
        exchange.create()
        self.live.add(exchange)
        return exchange

    def _release_later(self, path: Path) -> None:
        try:
            self._releasing.submit(release_pages, path)
        except RuntimeError:
            pass  # closed: the engine is stopping

    def close(self) -> None:
        """Remove every exchange directory still there (the engine is stopping)."""
        self._releasing.shutdown(wait=True, cancel_futures=True)
        for exchange in list(self.live):
            exchange.remove()

    def sweep(self) -> int:
        """Remove the directories of engines that are gone (killed before removing theirs)."""
        removed = 0
        if not self.root.is_dir():
            return 0
        for path in self.root.iterdir():
            pid = path.name.split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
        return removed


@dataclass(eq=False)
class Claimed:
    """An adopted file whose bytes are final (`Exchange.claim`), not yet named by its digest."""

    path: Path  # the temporary name; the blob's once `settle` renamed it (under `lock`)
    fd: int
    size: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    settled: bool = False  # stored under its digest (`path` is the blob's)
    handed: bool = False  # linked into an executor's `in/` (`Exchange.link`)


class Deferred:
    """A call's result adopted before it was hashed (`Blobs.Adopt` with `result`).

    Its executor gets `token` in place of the digest and returns it as the call's value. The
    scheduler hands the value on by that token at once — the next call's executor gets a hard
    link to the claimed file in its `in/` (`Exchange.link`) — while a thread hashes, fsyncs and
    names it (`digest`), and the producing call is checkpointed with the digest (`committed`).
    Invariant: the token is never written to the store, and nothing a call given the token
    does is acted on or written before `committed` is set (`Access.settled`): a crash in
    between leaves the producing call unfinished in the store, so resume runs it, and the calls
    given its value, again.
    """

    def __init__(self, claimed: Claimed, owner: object) -> None:
        self.token = DEFERRED_PREFIX + secrets.token_hex(16)
        self.claimed = claimed
        self.size = claimed.size
        self.owner = owner  # the grant (`engine.scheduler.access`) whose executor adopted it
        self.digest: asyncio.Future[str] | None = None  # set by `Blobs.Adopt`
        # Set when the producing call's checkpoint is committed, or when it never will be (its
        # run stopped, the value could not be stored): whoever waits then looks at the call.
        self.committed = asyncio.Event()


def local_blob_dir(store: object) -> Path | None:
    """The store's blob directory when its blobs are files on this machine (SQLite), else None."""
    blob_dir = getattr(store, "blob_dir", None)
    return Path(blob_dir) if blob_dir is not None else None


def _hash_and_sync(fd: int, size: int) -> str:
    """The file's content address, computed while another thread fsyncs it (both release the GIL)."""
    failed: list[OSError] = []

    def sync() -> None:
        try:
            os.fsync(fd)
        except OSError as exc:
            failed.append(exc)

    syncing = threading.Thread(target=sync, name="adopt-fsync")
    syncing.start()
    try:
        threaded = size >= content.THREADED_FROM_BYTES
        hasher = content.Hasher(threaded=threaded)
        if size:
            # Hashed on every core, each faulting in the pages it reads (128 MiB: 0.019 s, against
            # 0.023 s when the mapping is populated first); a small file is populated at once.
            flags = mmap.MAP_SHARED | (0 if threaded else mmap.MAP_POPULATE)
            with mmap.mmap(fd, size, flags=flags, prot=mmap.PROT_READ) as view:
                hasher.update(view)
    finally:
        syncing.join()
    if failed:
        raise failed[0]
    return hasher.address()


def release_pages(path: Path) -> None:
    """Take blob `path`'s pages out of the page cache, unless an executor still has a link
    to it (`in/`): it is stored and fsynced, and the calls given it have read it.

    A large value is written once and read once or twice, just after; its pages would
    otherwise stay cached until memory runs short, and every new value would take fresh pages.
    On a virtual machine whose host takes free memory back (virtio-balloon free page reporting)
    fresh pages cost ten times what recycled ones do: measured on one, 25 distinct 128 MiB
    values handed on in a row (process backend) took 0.11-0.15 s each up to the tenth or so,
    then 0.33-0.47 s as the cache grew past the memory freed recently; with their pages
    released, 0.11-0.15 s throughout, one 0.21 s (benchmarks/README.md, "Round ten"). A call
    given the value again later reads it from the disk."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        if os.fstat(fd).st_nlink == 1:
            pagecache.release(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
