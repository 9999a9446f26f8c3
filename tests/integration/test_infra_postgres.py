"""The test infrastructure of the PostgreSQL store, tested: a private PostgreSQL server
(tests/pglib.py, the `postgres_server` and `postgres_url` fixtures) and network-namespace test
hosts that reach it over a bridge (tests/integration/hostlib.py)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import hostlib
import pglib
import pytest

pytestmark = pytest.mark.postgres


def test_server_takes_a_write_and_reads_it_back(postgres_server: pglib.PostgresServer, postgres_url: str) -> None:
    import psycopg

    assert postgres_url.startswith(f"postgresql://engine@127.0.0.1:{postgres_server.port}/t")
    with psycopg.connect(postgres_url) as conn:
        conn.execute("CREATE TABLE marks (id int PRIMARY KEY, text text NOT NULL)")
        conn.execute("INSERT INTO marks VALUES (1, 'written')")
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT text FROM marks WHERE id = 1").fetchone() == ("written",)
        # Durability is as in production: the store's crash tests count on it.
        assert conn.execute("SHOW fsync").fetchone() == ("on",)
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
    with psycopg.connect(postgres_server.url) as conn:
        assert conn.execute("SELECT current_database(), current_user").fetchone() == ("engine", "engine")


def test_each_test_gets_an_empty_database(postgres_url: str) -> None:
    import psycopg

    with psycopg.connect(postgres_url) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'").fetchall()
    assert tables == []


def test_a_killed_server_keeps_what_was_committed(postgres_bin: Path) -> None:
    """kill() is a crash (SIGKILL to every server process); start() again recovers from the WAL."""
    import psycopg

    with pglib.PostgresServer(Path(tempfile.mkdtemp(prefix="engine-pg-crash-"))) as server:
        with psycopg.connect(server.url) as conn:
            conn.execute("CREATE TABLE t (v int)")
            conn.execute("INSERT INTO t VALUES (7)")
        pid = server.pid()
        server.kill()
        assert not server.running() and pid is not None
        server.start()
        assert server.pid() != pid
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT v FROM t").fetchall() == [(7,)]
    assert not server.directory.exists()


def _connects(host: hostlib.Host, url: str) -> subprocess.CompletedProcess[str]:
    code = (f"import psycopg; psycopg.connect({url!r}, connect_timeout=2)"
            ".execute('select 1').fetchone()")
    return host.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)


@pytest.mark.hosts
def test_hosts_reach_postgres_on_the_bridge_until_partitioned(postgres_bin: Path) -> None:
    reason = hostlib.missing()
    if reason:
        pytest.skip(reason)
    hosts = hostlib.Hosts(2)
    with hosts:
        a, b = hosts
        assert (a.addr, b.addr) == ("10.81.0.11", "10.81.0.12")
        server = hosts.postgres().start()
        assert server.url.startswith(f"postgresql://engine@{hostlib.BRIDGE_ADDR}:")

        assert _connects(a, server.url).returncode == 0, _connects(a, server.url).stderr
        assert _connects(b, server.url).returncode == 0
        # A host cannot reach the root namespace's loopback: only the bridge.
        assert _connects(a, server.database_url(host="127.0.0.1")).returncode != 0

        # The test (root namespace) reaches a server in a host; hosts reach each other. The Popen's
        # pid is the server's own (nsenter execs it).
        web = a.popen([sys.executable, "-m", "http.server", "--bind", a.addr, "18081"],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while Path(f"/proc/{web.pid}/cmdline").read_bytes().split(b"\0")[0] != sys.executable.encode():
            # nsenter, and for a moment inside its exec nothing, until it is the server.
            assert web.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        assert web.pid in a.processes()
        while True:
            try:
                with urllib.request.urlopen(f"http://{a.addr}:18081/", timeout=2) as response:
                    assert response.status == 200
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        fetch = f"import urllib.request; urllib.request.urlopen('http://{a.addr}:18081/', timeout=2)"
        assert b.run([sys.executable, "-c", fetch], capture_output=True, timeout=30).returncode == 0

        a.partition()
        assert a.partitioned
        started = time.monotonic()
        cut = _connects(a, server.url)
        assert cut.returncode != 0 and "timeout" in cut.stderr.lower(), cut.stderr
        assert time.monotonic() - started < 15
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://{a.addr}:18081/", timeout=2)
        assert _connects(b, server.url).returncode == 0  # the other host is not affected

        a.heal()
        assert not a.partitioned
        assert _connects(a, server.url).returncode == 0

        # A power-off kills everything in the host, at once; the others run on.
        killed = a.power_off()
        assert web.pid in killed and web.poll() is not None
        assert _connects(b, server.url).returncode == 0
        a.heal()
    assert hosts.leftovers() == []
    assert not server.directory.exists()
