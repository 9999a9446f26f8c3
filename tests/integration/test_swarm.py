"""The swarm backend on a real three-host Docker Swarm built on this machine (`swarmlib.py`).

One cluster per session: three Docker engines in network namespaces (esw1 the manager, esw2 and
esw3 workers), a registry on their bridge, the runtime image pushed with `engine image build
--push` and pulled on every node. Torn down afterwards, and checked to leave nothing behind.

The engine runs two ways, as a user's would (docs/swarm.md):
- *attached*: inside the network namespace of a container on the overlay network (`nsenter
  --net`), dialling executors at their overlay addresses;
- *published*: from this machine's own namespace, dialling each executor at its node's address
  and a port published on that node.

Needs root and a Docker engine; skipped otherwise, unless ENGINE_REQUIRE_DOCKER=1 (CI), where
that is a failure. The test that kills a host runs last: the cluster has two hosts after it.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import swarmlib
from serverlib import wait_for_lease_to_run_out

pytestmark = pytest.mark.swarm

APPS = Path(__file__).parent / "swarm_apps"
APP = "cluster.py"
HOSTS = {"esw1", "esw2", "esw3"}


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("ENGINE_REQUIRE_DOCKER") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


class Swarm:
    """The running cluster, as the tests use it."""

    def __init__(self, cluster: swarmlib.Cluster, gateway: str) -> None:
        self.cluster = cluster
        self.gateway = gateway
        self.manager = cluster.manager.client()

    def ensure_pushed(self) -> None:
        """Others may edit the engine's code while this session runs, which changes the runtime
        image's tag: push the current one when the registry lacks it (only new layers move)."""
        from engine import images

        repository, _, tag = images.runtime_image_tag().partition(":")
        url = f"http://{swarmlib.PUSH_REGISTRY}/v2/{repository}/manifests/{tag}"
        request = urllib.request.Request(url, method="HEAD", headers={
            "Accept": "application/vnd.docker.distribution.manifest.v2+json"})
        try:
            urllib.request.urlopen(request, timeout=5)
        except urllib.error.HTTPError:
            self.cluster.push_runtime(prepull=False)

    def services(self, **labels: str) -> list[dict]:
        filters = ["engine.managed=1"] + [f"engine.{k}={v}" for k, v in labels.items()]
        return self.manager.api.services(filters={"label": filters})

    def running_on(self, node: str, function: str) -> int:
        """Tasks of `function`'s executors running on `node`."""
        count = 0
        for service in self.services(function=function):
            for task in self.manager.api.tasks(filters={"service": service["ID"], "desired-state": "running"}):
                if task["Status"]["State"] == "running" and self.node_names.get(task["NodeID"]) == node:
                    count += 1
        return count

    @property
    def node_names(self) -> dict[str, str]:
        return self.cluster.node_names()


@pytest.fixture(scope="session")
def swarm(request):
    if os.geteuid() != 0:
        _skip_or_fail("the swarm tests build network namespaces and Docker engines: they need root")
    from engine import images
    from engine.errors import DockerUnavailable

    try:
        images.docker_client()
    except DockerUnavailable as exc:
        _skip_or_fail(str(exc))
    report = request.config.pluginmanager.get_plugin("terminalreporter")
    cluster = swarmlib.Cluster()
    with swarmlib.exclusive():
        try:
            started = time.monotonic()
            cluster.up()
            image = cluster.push_runtime()
            gateway = cluster.gateway(image)
            cluster.timings["setup_s"] = time.monotonic() - started
            if report is not None:
                parts = ", ".join(f"{k} {v:.1f} s" for k, v in cluster.timings.items())
                report.write_line(f"swarm cluster set up: {parts}")
            yield Swarm(cluster, gateway)
        finally:
            started = time.monotonic()
            cluster.down(quiet=True)
            if report is not None:
                report.write_line(f"swarm cluster torn down in {time.monotonic() - started:.1f} s")
    left = cluster.leftovers()
    assert not left, f"the swarm cluster left things behind: {left}"


@pytest.fixture
def env(tmp_path, swarm):
    swarm.ensure_pushed()
    e = dict(os.environ)
    e["ENGINE_STATE_DIR"] = str(tmp_path / "state")
    e["DOCKER_HOST"] = swarm.cluster.manager.docker_host
    e.pop("ENGINE_BACKEND", None)
    e["ENGINE_LEASE_TTL"] = "3"  # a killed engine's runs are resumable 3 s after it died
    yield e
    # Every executor service is removed when its run ends (or, after a crash, by the next
    # engine on this host).
    deadline = time.monotonic() + 15
    while swarm.services() and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [s["Spec"]["Name"] for s in swarm.services()]
    assert not left, f"executor services left behind: {left}"


def command(swarm: Swarm, args: tuple[str, ...], attached: bool) -> list[str]:
    prefix = ["nsenter", f"--net={swarm.gateway}"] if attached else []
    return [*prefix, sys.executable, "-m", "engine.cli", *args]


def cli(swarm, env, *args, attached=True, timeout=300):
    proc = subprocess.run(command(swarm, args, attached), cwd=APPS, env=env, capture_output=True,
                          text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def start_cli(swarm, env, *args, attached=True):
    return subprocess.Popen(command(swarm, args, attached), cwd=APPS, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def last_json(out: str, err: str, code: int) -> dict:
    assert out.strip(), f"no output (exit {code}): {err[-3000:]}"
    return json.loads(out.strip().splitlines()[-1])


def run_json(swarm, env, target, value, *extra, attached=True, app=APP):
    code, out, err = cli(swarm, env, "run", f"{app}:{target}", "--input", json.dumps(value), "--json",
                         *extra, attached=attached)
    return code, last_json(out, err, code), err


def calls_of(env) -> list:
    return swarmlib.calls_of(Path(env["ENGINE_STATE_DIR"]))


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def write_config(tmp_path: Path, functions: str = "") -> Path:
    config = tmp_path / "engine.yaml"
    config.write_text((APPS / "engine.yaml").read_text() + (f"functions:\n{functions}" if functions else ""))
    return config


# --- tests -----------------------------------------------------------------------------------


def test_fan_out_of_300_calls_runs_on_every_host_within_its_limits(swarm, env):
    started = time.monotonic()
    code, result, err = run_json(swarm, env, "fanout", {"n": 300, "seconds": 0.2})
    elapsed = time.monotonic() - started
    assert code == 0, err
    rows = result["result"]
    assert sorted(r["i"] for r in rows) == list(range(300))
    per_node = collections.Counter(r["node"] for r in rows)
    assert set(per_node) == HOSTS, per_node
    # The limits were applied where each call ran, workers included: 0.25 CPU, 256 MiB.
    assert {(r["node"], r["cpus"], r["memory"]) for r in rows} == {(h, 0.25, 256 * 1024**2) for h in HOSTS}
    calls = calls_of(env)
    assert len(calls) == 302 and all(c.executions == 1 for c in calls)
    print(f"300-call fan-out on 3 hosts: {elapsed:.1f} s; calls per host {dict(per_node)}")


def test_limits_constraints_and_lockdown_on_a_worker_from_outside_the_overlay(swarm, env, tmp_path):
    config = write_config(tmp_path, "  limits: {cpu: 0.75, memory: 0.5, constraints: ['node.hostname==esw3']}\n")
    code, result, err = run_json(swarm, env, "check_limits", None, "--config", str(config), attached=False)
    assert code == 0, err
    seen = result["result"]
    assert seen["node"] == "esw3"
    assert seen["cpus"] == pytest.approx(0.75)
    assert seen["memory"] == int(0.5 * 1024**3)
    assert seen["uid"] == 10001
    assert seen["root_writable"] is False
    assert seen["docker_socket"] is False


def test_a_function_image_is_pushed_and_pulled_by_the_node_that_runs_it(swarm, env, tmp_path):
    from engine import images

    # Built and pushed on this machine's engine, which reaches the registry on loopback.
    build_env = {k: v for k, v in env.items() if k != "DOCKER_HOST"}
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "image", "build", "with_image.py",
                           "--push", swarmlib.PUSH_REGISTRY], cwd=APPS, env=build_env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    pushed = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line)
    assert pushed["runtime"] == f"{swarmlib.PUSH_REGISTRY}/{images.runtime_image_tag()}"
    local_tag = pushed["swarm-test"].removeprefix(swarmlib.PUSH_REGISTRY + "/")
    assert local_tag.startswith("engine-fn-swarm-test:")
    try:
        config = write_config(tmp_path, "  greet: {constraints: ['node.role==worker']}\n")
        code, result, err = run_json(swarm, env, "greet_app", None, "--config", str(config), app="with_image.py")
        assert code == 0, err
        seen = result["result"]
        assert seen["greeting"] == "hello from a function image" and seen["baked"] == "baked"
        assert seen["node"] in HOSTS - {"esw1"}
    finally:
        images.docker_client().images.remove(local_tag, force=True)


def test_a_constraint_no_node_satisfies_fails_at_once_and_says_why(swarm, env, tmp_path):
    config = write_config(tmp_path, "  limits: {constraints: ['node.labels.gpu==true']}\n")
    started = time.monotonic()
    code, result, err = run_json(swarm, env, "check_limits", None, "--config", str(config))
    assert code == 1
    assert time.monotonic() - started < 30
    assert "no node satisfies the placement constraints of limits (node.labels.gpu==true)" in result["error"]


def test_out_of_memory_on_a_node_is_a_typed_failure_and_is_retried(swarm, env):
    code, result, err = run_json(swarm, env, "oom", 400)
    assert code == 1, err
    assert "hog ran out of memory (limit 0.125 GB)" in result["error"]
    hog = [c for c in calls_of(env) if c.function == "hog"]
    assert [c.executions for c in hog] == [2]  # max_retries=1


def test_server_on_swarm_uses_its_config_places_per_application_and_moves_large_values(swarm, env, tmp_path):
    """`engine server --backend swarm`: the registry comes from the server's own `--config` (no
    ENGINE_SWARM_* variable is set), placement from each deployed application's engine.yaml,
    and a value too large to travel inline goes from one worker to the other through the
    scheduler's Blobs service: nothing else connects them."""
    from serverlib import ServerProcess

    from engine import wire

    server_env = {k: v for k, v in env.items() if not k.startswith("ENGINE_SWARM_")}
    server_config = tmp_path / "server.yaml"
    server_config.write_text(f"swarm:\n  registry: {swarmlib.REGISTRY}\n")
    project = tmp_path / "project"
    project.mkdir()
    (project / APP).write_text((APPS / APP).read_text())
    (project / "engine.yaml").write_text(
        "functions:\n"
        "  limits: {cpu: 0.75, constraints: ['node.hostname==esw3']}\n"
        "  make_big: {constraints: ['node.hostname==esw2']}\n"
        "  measure_big: {constraints: ['node.hostname==esw3']}\n")
    server = ServerProcess(tmp_path / "server-state", backend="swarm", env=server_env,
                           extra=("--config", str(server_config)))
    server.start(timeout=90)
    try:
        server.deploy(project / APP)
        seen = server.wait(server.submit("check_limits", {}), timeout=120)
        assert seen["status"] == "succeeded", seen
        assert seen["result"]["node"] == "esw3" and seen["result"]["cpus"] == pytest.approx(0.75)

        size = 24 * 1024 * 1024
        run = server.wait(server.submit("big_across", size), timeout=180)
        assert run["status"] == "succeeded", run
        result = run["result"]
        expected = hashlib.sha256(random.Random(7).randbytes(size)).hexdigest()
        assert (result["size"], result["sha256"]) == (size, expected)
        assert (result["made_on"], result["measured_on"]) == ("esw2", "esw3")
        metrics = server.ok("GET", "/metrics")
        moved = {line.split("{")[1].split("}")[0]: float(line.rsplit(" ", 1)[1])
                 for line in metrics.splitlines() if line.startswith("engine_blob_bytes_total{")}
        assert size > wire.INLINE_MAX_BYTES
        assert moved['direction="put"'] >= size and moved['direction="get"'] >= size, moved
    finally:
        server.stop()


def test_engine_killed_mid_run_resumes_without_rerunning_finished_calls(swarm, env):
    proc = start_cli(swarm, env, "run", f"{APP}:steps", "--input", '{"n": 12, "seconds": 1.0}', "--json")

    def finished_steps() -> int:
        return sum(1 for c in calls_of(env) if c.function == "step" and c.status == "succeeded")

    try:
        wait_for(lambda: finished_steps() >= 3, 120, "three finished steps")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    done_before = {c.call_id for c in calls_of(env) if c.function == "step" and c.status == "succeeded"}
    assert len(done_before) < 12
    assert swarm.services(), "the killed engine's executor services should still be there"
    run_id = calls_of(env)[0].run_id
    wait_for_lease_to_run_out(Path(env["ENGINE_STATE_DIR"]), run_id)
    code, out, err = cli(swarm, env, "resume", run_id, "--json")
    result = last_json(out, err, code)
    assert code == 0, err
    assert result["status"] == "succeeded" and result["result"] == sum(range(12))
    steps = {c.call_id: c for c in calls_of(env) if c.function == "step"}
    assert all(steps[i].executions == 1 for i in done_before)
    assert all(c.executions <= 2 for c in steps.values())
    # The resumed engine removed the dead one's services (cleanup_orphans); `env` checks that
    # none is left at the end.


def _detection_bound() -> float:
    """How long after a host dies the engine may take to notice that its calls are lost
    (docs/swarm.md): gRPC keepalive's ping interval plus its timeout when configured, else the
    call's own timeout (`where`: 20 s); plus the probes of the executor and its node (half a
    second each), and two seconds for the engine's bookkeeping and this test's polling."""
    from engine import wire

    options = dict(wire.GRPC_OPTIONS)
    if "grpc.keepalive_time_ms" in options:
        silent = (options["grpc.keepalive_time_ms"] + options.get("grpc.keepalive_timeout_ms", 20_000)) / 1000
    else:
        silent = 20.0
    return silent + 1.0 + 2.0


def start_two_waves(swarm, env, tmp_path, host: str):
    """Start a fan-out of twelve 6-second calls on six executors (two waves) and return its
    process once the second wave runs, with an executor on `host`. The orchestrator and the
    collector stay on the manager, so that what a test measures is the `where` calls."""
    config = write_config(tmp_path, (
        "  fanout: {constraints: ['node.role==manager']}\n"
        "  collect: {constraints: ['node.role==manager']}\n"
        "  where: {concurrency: 1, max_containers: 6}\n"
    ))
    proc = start_cli(swarm, env, "run", f"{APP}:fanout", "--input", '{"n": 12, "seconds": 6.0}', "--json",
                     "--config", str(config))
    try:
        wait_for(lambda: swarm.running_on(host, "where") and sum(
            1 for c in calls_of(env) if c.function == "where" and c.status == "succeeded") >= 6,
            120, f"six finished calls and an executor running on {host}")
    except BaseException:
        proc.kill()
        raise
    return proc


def finish_two_waves(proc, env, finished: set[str]) -> tuple[list[dict], dict]:
    """Wait for the run of `start_two_waves` to end; check that it succeeded with every result
    and that no call of `finished` (done before the failure) ran again. Returns its rows and
    its calls by id."""
    try:
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    result = last_json(out, err, proc.returncode)
    assert proc.returncode == 0, err
    rows = result["result"]
    assert sorted(r["i"] for r in rows) == list(range(12))
    calls = {c.call_id: c for c in calls_of(env)}
    assert all(calls[i].executions == 1 for i in finished)
    return rows, calls


def lose_a_worker_mid_run(swarm, env, tmp_path, host: str, lose, how: str) -> None:
    """Run a fan-out, lose `host` (`lose(host)` returns when) during its second wave, when
    every call is dispatched, and check that only its calls failed, that they ran again
    elsewhere, and that no finished call ran again."""
    proc = start_two_waves(swarm, env, tmp_path, host)
    try:
        killed_at = lose(host)
        finished = {c.call_id for c in calls_of(env) if c.status == "succeeded"}
        # Noticed: the first call whose attempt failed (it goes back to the queue, with why).
        lost = wait_for(lambda: [c for c in calls_of(env) if c.function == "where" and c.error_kind],
                        60, "the engine to notice the lost calls")
        noticed = time.time() - killed_at
    except BaseException:
        proc.kill()
        raise
    rows, calls = finish_two_waves(proc, env, finished)
    # The calls that were on the lost host failed as lost executors, and ran again elsewhere.
    assert {c.error_kind for c in lost} <= {"executor_lost", "timeout"}, [c.error_message for c in lost]
    retried = [c for c in calls.values() if c.function == "where" and c.executions > 1]
    assert retried, f"no call was running on the {how} host"
    by_index = {r["i"]: r for r in rows}
    assert all(by_index[where_index(c)]["node"] != host for c in retried)
    elsewhere = sorted(c.started_at - killed_at for c in retried)
    print(f"host {how}: noticed after {noticed:.1f} s ({lost[0].error_message}); {len(retried)} calls "
          f"running elsewhere after {elsewhere[0]:.1f}-{elsewhere[-1]:.1f} s")
    assert noticed < _detection_bound()


def test_a_worker_docker_engine_killed_mid_run_loses_nothing_and_its_leftovers_go_when_it_restarts(
        swarm, env, tmp_path):
    """Only the Docker engine of a worker dies; the machine, containerd and the executors under
    their shims go on. Their calls finish and count (no call runs twice); Swarm places nothing
    new there; once that engine is back, the tasks of the services the engine removed meanwhile
    are stopped: nothing is left on the node."""
    host = "esw2"
    proc = start_two_waves(swarm, env, tmp_path, host)
    try:
        swarm.cluster.kill_engine(host)
        finished = {c.call_id for c in calls_of(env) if c.status == "succeeded"}
    except BaseException:
        proc.kill()
        raise
    _rows, calls = finish_two_waves(proc, env, finished)
    assert all(c.executions <= 2 for c in calls.values())
    swarm.cluster.restart_engine(host)
    node = swarm.cluster.host(host).client()
    # The low-level list: `containers.list` inspects each one it lists, and one removed in
    # between (what this waits for) raises NotFound.
    wait_for(lambda: not node.api.containers(all=True, filters={"label": "com.docker.swarm.service.id"}), 60,
             f"the engine's leftover task containers on {host} to go")


def test_a_worker_host_cut_off_mid_run_fails_only_its_calls_which_run_elsewhere(swarm, env, tmp_path):
    """The host keeps running, unreachable: its calls may finish there, unheard; they run again
    on the others. Reconnected afterwards, the node rejoins and its leftover tasks go."""
    try:
        lose_a_worker_mid_run(swarm, env, tmp_path, "esw2", swarm.cluster.cut_host, "cut off")
    finally:
        swarm.cluster.reconnect_host("esw2")


def test_a_worker_host_killed_mid_run_fails_only_its_calls_which_run_elsewhere(swarm, env, tmp_path):
    """Runs last: the cluster has two hosts after it."""
    lose_a_worker_mid_run(swarm, env, tmp_path, "esw3", swarm.cluster.kill_host, "killed")


def where_index(call) -> int:
    """The `i` argument of a `where` call, from its stored spec."""
    from engine import wire
    from engine.wire.v1 import engine_pb2 as pb

    spec = pb.FutureSpec.FromString(call.spec)
    return int(wire.loads(spec.arguments.args[0].value.data))
