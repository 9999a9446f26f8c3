"""Servers that outlive each other: two `engine server` processes on one PostgreSQL store, each
on its own test host (a network namespace, tests/integration/hostlib.py), both accepting
submissions and serving the API; runs driven by whichever holds their lease.

Every test kills or cuts off something at the worst moment and then counts side effects: which
`step` calls started and ended, from lines they append to a file (the hosts share this machine's
file system). Leases last `TTL` seconds here, so a take-over is due within TTL + one scan
interval (TTL / 5) of the last renewal; the tests allow generous slack for a loaded machine and
report what they saw.

The last test is the restart case on SQLite: a server killed mid-burst and started again a
second later while the killed process is still a zombie (its pid still "alive" to `kill(pid,
0)`): nothing may stay `running` for ever.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hostlib
import pytest
from serverlib import SERVER_APPS, ServerProcess, check_burst, poll, submit_burst

APP = SERVER_APPS / "takeover_app.py"
TOKEN = "takeover-secret"
TTL = 3.0
BURST = 500


@dataclass
class Cluster:
    hosts: hostlib.Hosts
    servers: list[ServerProcess]
    store: str

    def owner_of(self, server: ServerProcess) -> str:
        return server.ok("GET", "/healthz")["owner"]  # type: ignore[no-any-return]


@pytest.fixture
def cluster(tmp_path: Path, postgres_bin: Path) -> Iterator[Cluster]:
    reason = hostlib.missing()
    if reason:
        pytest.skip(reason)
    with hostlib.Hosts(2) as hosts:
        pg = hosts.postgres().start()
        env = {**os.environ, "ENGINE_LEASE_TTL": str(TTL)}
        servers = [ServerProcess(tmp_path / f"state-{h.name}", host=h, store=pg.url, token=TOKEN, env=env,
                                 log_path=tmp_path / f"server-{h.name}.log") for h in hosts]
        try:
            for server in servers:
                server.state_dir.mkdir()
                server.start()
            servers[0].deploy(APP)
            yield Cluster(hosts, servers, pg.url)
        finally:
            for server in servers:
                server.stop()


def lines(log: Path) -> list[list[str]]:
    try:
        return [line.split("|") for line in log.read_text().splitlines() if line]
    except FileNotFoundError:
        return []


def counted(log: Path, what: str) -> Counter[tuple[str, int]]:
    return Counter((f[1], int(f[2])) for f in lines(log) if f[0] == what)


def step_nodes(server: ServerProcess, run_id: str) -> dict[str, dict[str, Any]]:
    dag = server.ok("GET", f"/v1/runs/{run_id}/dag")
    return {n["id"]: n for n in dag["nodes"] if n["function"] == "step"}


def runs_in_progress_on(cluster: Cluster, log: Path, tag: str, n: int,
                        seconds: float = 0.4) -> tuple[dict[str, str], list[str]]:
    """Three `steps` runs submitted to the first server; returns them (run id -> tag) once that
    server drives one that has checkpointed two steps, and the ones it drives then."""
    a, b = cluster.servers
    runs = {a.submit("steps", {"log": str(log), "tag": f"{tag}{i}", "n": n, "seconds": seconds}): f"{tag}{i}"
            for i in range(3)}
    a_id = cluster.owner_of(a)
    poll(lambda: any(b.ok("GET", f"/v1/runs/{r}")["owner"] == a_id
                     and len([c for c in step_nodes(b, r).values() if c["status"] == "succeeded"]) >= 2
                     for r in runs), 60, interval=0.1, what="server A to drive a run that has made progress")
    return runs, [r for r in runs if b.ok("GET", f"/v1/runs/{r}")["owner"] == a_id]


# --- kill -9 of the server that drives runs -------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.hosts
def test_the_other_server_takes_over_after_kill_9(cluster: Cluster, tmp_path: Path) -> None:
    a, b = cluster.servers
    log = tmp_path / "steps.log"
    n, seconds = 8, 0.4
    runs = {a.submit("steps", {"log": str(log), "tag": f"r{i}", "n": n, "seconds": seconds}): f"r{i}"
            for i in range(4)}
    owners = {cluster.owner_of(s): s for s in cluster.servers}
    # Some steps of every run have finished and been checkpointed.
    poll(lambda: all(len([c for c in step_nodes(a, r).values() if c["status"] == "succeeded"]) >= 2
                     for r in runs), 60, interval=0.1, what="every run to checkpoint two steps")
    driving = Counter(a.ok("GET", f"/v1/runs/{r}")["owner"] for r in runs)
    victim = owners[max(driving, key=lambda o: driving[o])]
    survivor = b if victim is a else a
    victims_runs = [r for r in runs if a.ok("GET", f"/v1/runs/{r}")["owner"] == cluster.owner_of(victim)]
    assert victims_runs, driving

    victim.kill9()
    killed_at = time.monotonic()
    # What the store held as finished when the driver died: none of it may run again.
    finished = {r: {cid for cid, c in step_nodes(survivor, r).items() if c["status"] == "succeeded"}
                for r in runs}
    survivor_id = cluster.owner_of(survivor)
    poll(lambda: all(survivor.ok("GET", f"/v1/runs/{r}")["owner"] in (survivor_id, None) for r in victims_runs),
         TTL * 4 + 10, interval=0.05, what="the survivor to take the killed server's runs")
    took = time.monotonic() - killed_at
    print(f"take-over of {len(victims_runs)} run(s) {took:.2f} s after kill -9 (lease {TTL:g} s)")
    assert took < TTL + TTL / 5 + 5, f"take-over took {took:.1f} s"

    for r in runs:
        run = survivor.wait(r, timeout=120)
        assert run["status"] == "succeeded" and run["result"] == sum(range(n)), run
    starts, ends = counted(log, "start"), counted(log, "end")
    for r, tag in runs.items():
        nodes = step_nodes(survivor, r)
        assert len(nodes) == n
        for cid in finished[r]:
            assert nodes[cid]["executions"] == 1, (r, nodes[cid])  # checkpointed: never again
        assert all(ends[(tag, i)] >= 1 for i in range(n))
    # Only steps that were running at the kill ran twice: one per victim run at most.
    reruns = sum(starts.values()) - len(runs) * n
    assert 0 <= reruns <= len(victims_runs), (reruns, starts)
    assert "run taken over" in survivor.log()


@pytest.mark.postgres
@pytest.mark.hosts
def test_large_values_live_in_the_store_where_every_server_reads_them(cluster: Cluster) -> None:
    """Nothing a run needs is on one server's disk: a value over the inline limit moves through
    the Blobs service into PostgreSQL, and the other server returns the run's large result."""
    import hashlib

    a, b = cluster.servers
    size = 3 << 20
    run_id = a.submit("large", size)
    run = b.wait(run_id, timeout=120)
    expected = hashlib.sha256(bytes(range(256)) * (size // 256)).hexdigest()
    assert run["status"] == "succeeded", run
    assert run["result"] == expected + ":" + "y" * size
    for server in (a, b):  # neither server's state directory holds a blob, nor a database
        assert [p for p in server.state_dir.rglob("*") if p.is_file() and ("blobs" in p.parts
                                                                           or p.suffix == ".db")] == []


# --- a burst across both servers, one killed mid-burst -------------------------------------------


@pytest.mark.postgres
@pytest.mark.hosts
def test_a_burst_across_two_servers_survives_one_killed(cluster: Cluster) -> None:
    a, b = cluster.servers
    accepted_before_kill: set[int] = set()
    killed = {"done": False}

    def on_accept(i: int) -> None:
        if killed["done"]:
            return
        accepted_before_kill.add(i)
        if len(accepted_before_kill) >= BURST // 3:  # in the middle of the burst, at once
            a.kill9()
            killed["done"] = True

    async def scenario() -> dict[int, tuple[int, dict[str, Any]]]:
        deadline = time.monotonic() + 180
        return await submit_burst([a, b], BURST, on_accept, deadline)

    results = asyncio.run(scenario())
    assert BURST // 3 <= len(accepted_before_kill) < BURST
    check_burst(b, results, BURST)  # as the surviving server reports them


# --- a server cut off from PostgreSQL -------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.hosts
def test_a_server_cut_off_from_the_store_stops_driving_and_the_other_takes_over(
        cluster: Cluster, tmp_path: Path) -> None:
    a, b = cluster.servers
    host_a = cluster.hosts[0]
    n = 10
    runs, held_by_a = runs_in_progress_on(cluster, tmp_path / "steps.log", "p", n)

    host_a.partition()  # A reaches nothing now: not the store, not the test
    cut_at = time.monotonic()
    finished = {r: {cid for cid, c in step_nodes(b, r).items() if c["status"] == "succeeded"} for r in runs}
    b_id = cluster.owner_of(b)
    poll(lambda: all(b.ok("GET", f"/v1/runs/{r}")["owner"] in (b_id, None) for r in held_by_a),
         TTL * 4 + 10, interval=0.05, what="B to take A's runs")
    print(f"B took {len(held_by_a)} run(s) {time.monotonic() - cut_at:.2f} s after A was cut off")
    time.sleep(TTL)  # A stays cut off past its lease, with its executors still running their calls
    host_a.heal()

    for r in runs:
        run = b.wait(r, timeout=120)
        assert run["status"] == "succeeded" and run["result"] == sum(range(n)), run
    # A noticed, stopped driving, and wrote nothing over B's work: every checkpoint taken before
    # the cut is still the one execution it was, every step ended with one succeeded call.
    poll(lambda: "stopped driving" in a.log() or "no longer driven here" in a.log(), 30,
         what="server A to say it stopped driving its runs")
    for r in runs:
        nodes = step_nodes(b, r)
        assert len(nodes) == n and all(c["status"] == "succeeded" for c in nodes.values())
        for cid in finished[r]:
            assert nodes[cid]["executions"] == 1, nodes[cid]
        assert b.ok("GET", f"/v1/runs/{r}")["resumes"] >= (1 if r in held_by_a else 0)
    # A is healthy again and serves the same runs from the store.
    poll(lambda: a.request("GET", "/healthz", timeout=2)[0] == 200, 30, what="A to answer again")
    assert all(a.ok("GET", f"/v1/runs/{r}")["status"] == "succeeded" for r in runs)


@pytest.mark.postgres
@pytest.mark.hosts
def test_a_paused_server_is_fenced_out_when_it_wakes(cluster: Cluster, tmp_path: Path) -> None:
    """SIGSTOP past the lease: the other server takes the runs; on SIGCONT the paused one finds
    its leases gone (renewal, or the fence at its next commit), stops driving them and writes
    nothing over the new owner's work."""
    a, b = cluster.servers
    n = 8
    runs, held_by_a = runs_in_progress_on(cluster, tmp_path / "steps.log", "s", n)
    assert a.proc is not None
    os.kill(a.proc.pid, signal.SIGSTOP)  # its executors go on; it neither renews nor commits
    try:
        finished = {r: {cid for cid, c in step_nodes(b, r).items() if c["status"] == "succeeded"} for r in runs}
        b_id = cluster.owner_of(b)
        poll(lambda: all(b.ok("GET", f"/v1/runs/{r}")["owner"] in (b_id, None) for r in held_by_a),
             TTL * 4 + 10, interval=0.05, what="B to take the paused server's runs")
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    poll(lambda: "its lease was taken over by another process" in a.log(), 30,
         what="the woken server to say it lost its runs")
    for r in runs:
        run = b.wait(r, timeout=120)
        assert run["status"] == "succeeded" and run["result"] == sum(range(n)), run
        nodes = step_nodes(b, r)
        assert len(nodes) == n and all(c["status"] == "succeeded" for c in nodes.values())
        for cid in finished[r]:
            assert nodes[cid]["executions"] == 1, nodes[cid]
    assert a.ok("GET", "/healthz")["runs_running"] == 0  # it drives nothing it lost


# --- the restart case on SQLite: a zombie owner, a quick restart ---------------------------------


def test_a_quick_restart_with_the_old_server_a_zombie_leaves_nothing_stuck(tmp_path: Path) -> None:
    """Kill -9 three seconds into a burst, start again one second later, without reaping the
    killed process: its pid still answers kill(pid, 0). Every accepted run must finish."""
    env = {**os.environ, "ENGINE_LEASE_TTL": str(TTL)}
    srv = ServerProcess(tmp_path / "state", env=env)
    (tmp_path / "state").mkdir()
    srv.start()
    zombie = None
    try:
        srv.deploy(APP)
        accepted: set[int] = set()

        async def scenario() -> dict[int, tuple[int, dict]]:
            nonlocal zombie
            deadline = time.monotonic() + 180
            burst = asyncio.ensure_future(submit_burst([srv], BURST, accepted.add, deadline))
            await asyncio.sleep(3)
            assert srv.proc is not None
            zombie = srv.proc
            os.kill(zombie.pid, signal.SIGKILL)  # not reaped: a zombie while the new one starts
            await asyncio.sleep(1)
            assert Path(f"/proc/{zombie.pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
            os.kill(zombie.pid, 0)  # "alive", as a pid check sees it
            srv.proc = None
            await asyncio.to_thread(srv.start)
            return await burst

        results = asyncio.run(scenario())
        check_burst(srv, results, BURST)  # none stuck `running`
    finally:
        srv.stop()
        if zombie is not None:
            try:
                zombie.wait(5)
            except subprocess.TimeoutExpired:
                pass
