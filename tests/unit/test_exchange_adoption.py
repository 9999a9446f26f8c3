"""The exchange directory on its own (engine/scheduler/exchange.py), on a real filesystem, no
executor: what adoption takes into the blob directory and what it refuses, and when a value's
pages leave the page cache (read from the kernel with `mincore`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pagecachelib
import pytest
from pagecachelib import cached, until_released

from engine.scheduler.exchange import Deferred, Exchanges, NotAdopted
from engine.wire import DEFERRED_PREFIX, content
from engine.wire.v1 import engine_pb2 as pb


@pytest.fixture
def exchanges(tmp_path: Path) -> Exchanges:
    return Exchanges(tmp_path / "blobs")


def _blob(exchanges: Exchanges, digest: str) -> Path:
    return exchanges.blob_dir / content.shard(digest) / digest


def test_a_closed_file_is_renamed_into_the_store_under_its_digest(exchanges) -> None:
    ex = exchanges.new()
    data = os.urandom(300_000)
    (ex.out_dir / "value").write_bytes(data)
    inode = (ex.out_dir / "value").stat().st_ino
    digest, size = ex.adopt("value")
    assert (digest, size) == (content.address(data), len(data))
    blob = _blob(exchanges, digest)
    assert blob.read_bytes() == data
    assert blob.stat().st_ino == inode  # moved, not copied
    assert blob.stat().st_mode & 0o777 == 0o444
    assert not (ex.out_dir / "value").exists()
    assert not list(exchanges.blob_dir.glob(".tmp-*"))
    # The same value again: the blob stays, the second file is dropped.
    (ex.out_dir / "again").write_bytes(data)
    assert ex.adopt("again") == (digest, size)
    assert not list(exchanges.blob_dir.glob(".tmp-*")) and not (ex.out_dir / "again").exists()


def test_links_follow_what_the_executor_was_given(exchanges) -> None:
    ex = exchanges.new()
    (ex.out_dir / "v").write_bytes(b"a" * 100_000)
    digest, _ = ex.adopt("v")
    ex.link(digest)
    assert (ex.in_dir / digest).read_bytes() == b"a" * 100_000
    assert (ex.in_dir / digest).stat().st_ino == _blob(exchanges, digest).stat().st_ino
    ex.unlink(digest)
    assert list(ex.in_dir.iterdir()) == []
    assert _blob(exchanges, digest).exists()  # the store keeps it
    ex.link("0" * 64)  # not in the store: nothing to link (the executor would stream it)
    assert list(ex.in_dir.iterdir()) == []


@pytest.mark.parametrize("name", ["../in", ".hidden", "a/b", "", "x" * 65])
def test_names_other_than_a_plain_file_name_are_refused(exchanges, name) -> None:
    with pytest.raises(NotAdopted, match="not a plain file name"):
        exchanges.new().adopt(name)


def test_a_symlink_to_another_blob_is_refused_and_dropped(exchanges, tmp_path) -> None:
    ex = exchanges.new()
    secret = tmp_path / "secret"
    secret.write_bytes(b"s" * 100_000)
    (ex.out_dir / "pointer").symlink_to(secret)
    with pytest.raises(NotAdopted, match="not a regular file"):
        ex.adopt("pointer")
    assert secret.read_bytes() == b"s" * 100_000
    assert not list(exchanges.blob_dir.glob("[0-9a-f][0-9a-f]")) and not list(exchanges.blob_dir.glob(".tmp-*"))


def test_a_file_with_another_name_is_refused(exchanges) -> None:
    ex = exchanges.new()
    (ex.out_dir / "v").write_bytes(b"v" * 100_000)
    os.link(ex.out_dir / "v", ex.out_dir / "w")  # could be reopened for writing by that name
    with pytest.raises(NotAdopted, match="other names"):
        ex.adopt("v")


def test_a_file_still_open_in_another_process_is_refused(exchanges) -> None:
    ex = exchanges.new()
    path = ex.out_dir / "v"
    path.write_bytes(b"v" * 100_000)
    holder = subprocess.Popen([sys.executable, "-c", "import sys; f = open(sys.argv[1], 'r+b'); "
                               "print('open', flush=True); sys.stdin.read()", str(path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        with pytest.raises(NotAdopted, match="still open or mapped"):
            ex.adopt("v")
    finally:
        holder.communicate("")
    assert not list(exchanges.blob_dir.glob(".tmp-*"))


def test_directories_of_dead_engines_are_swept_and_live_ones_kept(exchanges) -> None:
    mine = exchanges.new()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    gone = exchanges.root / f"{dead.stdout.strip()}-1-abcdef"
    (gone / "out").mkdir(parents=True)
    assert exchanges.sweep() == 1
    assert not gone.exists() and mine.root.exists()
    exchanges.close()
    assert not mine.root.exists()


@pytest.mark.parametrize("stored_before", [False, True])
def test_a_deferred_value_is_linked_by_its_token_before_it_is_hashed_and_stays_readable(
        exchanges, stored_before) -> None:
    """Deferred adoption: claimed (out of the producer's reach), linked into the consumer's
    `in/` by its token, then hashed and named; the consumer's link reads the same bytes
    throughout, also when the value was in the store already (the claimed file is dropped)."""
    producer, consumer = exchanges.new(), exchanges.new()
    data = os.urandom(200_000)
    if stored_before:
        (producer.out_dir / "first").write_bytes(data)
        producer.adopt("first")
    (producer.out_dir / "v").write_bytes(data)
    claimed = producer.claim("v")
    assert not (producer.out_dir / "v").exists() and claimed.size == len(data)
    deferred = Deferred(claimed, owner=None)
    assert deferred.token.startswith(DEFERRED_PREFIX)
    exchanges.deferred[deferred.token] = deferred
    consumer.link(deferred.token)
    linked = consumer.in_dir / deferred.token
    assert linked.read_bytes() == data
    assert not list(exchanges.blob_dir.glob("[0-9a-f][0-9a-f]/*")) or stored_before  # not named yet

    digest = producer.settle(claimed)
    assert digest == content.address(data)
    assert _blob(exchanges, digest).read_bytes() == data
    assert linked.read_bytes() == data
    assert not list(exchanges.blob_dir.glob(".tmp-*"))
    consumer.unlink(deferred.token)
    assert list(consumer.in_dir.iterdir()) == []


def test_a_token_is_refused_anywhere_but_as_its_producers_own_result() -> None:
    from engine.scheduler.access import Access, Denied, Grant

    grant = Grant("g", "s", "make")
    token = DEFERRED_PREFIX + "0" * 32
    grant.put.add(token)  # even "put" by it: a token is never a value to pass on
    with pytest.raises(Denied, match="not stored yet"):
        Access.check_payload(grant, pb.Payload(blob=token, size=1), "passing")


# --- a handed-on value's pages leave the page cache ----------------------------------------------

@pytest.fixture
def drops_pages(tmp_path: Path) -> None:
    if not pagecachelib.drops_pages(tmp_path):
        pytest.skip("this filesystem does not drop cached pages when told (tmpfs)")


def _claimed_value(exchanges: Exchanges, producer, size: int = 8 << 20):  # type: ignore[no-untyped-def]
    (producer.out_dir / "v").write_bytes(os.urandom(size))
    claimed = producer.claim("v")
    deferred = Deferred(claimed, owner=None)
    exchanges.deferred[deferred.token] = deferred
    return claimed, deferred.token


def test_a_value_leaves_the_page_cache_once_stored_and_read_by_the_calls_given_it(
        exchanges, drops_pages) -> None:
    """Two consumers hold the value: its pages stay until both calls have ended, and go only
    once it is stored (settled) — whichever of the two comes last."""
    producer, first, second = exchanges.new(), exchanges.new(), exchanges.new()
    claimed, token = _claimed_value(exchanges, producer)
    first.link(token)
    second.link(token)
    digest = producer.settle(claimed)
    blob = _blob(exchanges, digest)
    assert cached(blob) > 0.9  # stored, still linked: the consumers read it from memory
    first.unlink(token)
    time.sleep(0.2)
    assert cached(blob) > 0.9  # the second consumer still has it
    second.unlink(token)
    assert until_released(blob) == 0
    assert len(blob.read_bytes()) == 8 << 20  # from the disk, intact

    # The calls end before the value is stored: storing it releases it.
    claimed, token = _claimed_value(exchanges, producer)
    first.link(token)
    first.unlink(token)
    assert cached(claimed.path) > 0.9
    digest = producer.settle(claimed)
    assert cached(_blob(exchanges, digest)) == 0


def test_a_value_no_call_was_given_yet_or_given_by_its_digest_keeps_its_pages(exchanges, drops_pages) -> None:
    producer = exchanges.new()
    claimed, _ = _claimed_value(exchanges, producer)
    digest = producer.settle(claimed)
    assert cached(_blob(exchanges, digest)) > 0.9  # for the call that will read it
    # Given by its digest once stored (an argument the next calls of a fan-out may be given
    # too): its calls' end leaves it cached.
    for consumer in (exchanges.new(), exchanges.new()):
        consumer.link(digest)
        consumer.unlink(digest)
    exchanges.close()  # (waits for any release asked for)
    assert cached(_blob(exchanges, digest)) > 0.9
