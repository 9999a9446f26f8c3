"""The docker backend and the image builds, against the real Docker engine.

Executors here run a stand-in TCP server (`command=`) so that the backend is tested on its own;
one test also starts the real `engine.executor` entrypoint. Every container a test starts is
labelled with a per-test instance id and removed at teardown, pass or fail.

Without a Docker engine these tests are skipped — unless ENGINE_REQUIRE_DOCKER=1 (CI), where
that is a failure.
"""

from __future__ import annotations

import asyncio
import io
import os
import socket
import subprocess
import sys
import time
import uuid

import docker.errors
import pytest

from engine import images
from engine.backends.base import ExecutorHandle, ExecutorSpec
from engine.backends.docker import DockerBackend
from engine.errors import (
    DockerUnavailable,
    ImageBuildError,
    ImageMissing,
    InfrastructureError,
    PythonVersionMismatch,
)
from engine.sdk.image import Image

pytestmark = pytest.mark.docker

LISTEN = "import socket,time; s=socket.socket(); s.bind(('0.0.0.0',50051)); s.listen(); "
SERVER = ["python3", "-c", LISTEN + "time.sleep(600)"]


def run(coro):
    return asyncio.run(coro)


def wait_for(predicate, timeout=30.0, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


@pytest.fixture(scope="session")
def client():
    try:
        return images.docker_client()
    except DockerUnavailable as exc:
        if os.environ.get("ENGINE_REQUIRE_DOCKER") == "1":
            raise
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def runtime_tag(client):
    return images.build_runtime_image()


def remove_labelled(client, label: str) -> None:
    for c in client.api.containers(all=True, filters={"label": label}):
        try:
            client.api.remove_container(c["Id"], force=True)
        except docker.errors.NotFound:
            pass


@pytest.fixture
def instance_id(client):
    ident = f"test-{uuid.uuid4().hex[:10]}"
    yield ident
    remove_labelled(client, f"engine.instance={ident}")


@pytest.fixture
def backend(runtime_tag, instance_id):
    b = DockerBackend(instance_id=instance_id, command=SERVER, image_for=lambda _: runtime_tag)
    yield b
    run(b.close())


def spec(**kwargs) -> ExecutorSpec:
    return ExecutorSpec(**{"function": "tests.fn", "run_id": "run-1", **kwargs})


def ours(client, instance_id):
    return client.api.containers(all=True, filters={"label": f"engine.instance={instance_id}"})


# --- containers ------------------------------------------------------------------------------


def test_start_runs_a_locked_down_container_and_stop_removes_it(client, backend, instance_id):
    handle = run(backend.start_executor(spec(cpu=0.5, memory_gb=0.25, env={"ENGINE_TEST": "x"})))
    ip, port = handle.address.rsplit(":", 1)
    assert port == "50051" and handle.function == "tests.fn"
    socket.create_connection((ip, 50051), timeout=2).close()

    attrs = client.api.inspect_container(handle.ref)
    labels = attrs["Config"]["Labels"]
    assert labels["engine.managed"] == "1"
    assert labels["engine.instance"] == instance_id
    assert labels["engine.owner_pid"] == str(os.getpid())
    assert labels["engine.run"] == "run-1"
    assert labels["engine.function"] == "tests.fn"
    assert attrs["Name"].startswith("/engine-tests.fn-")
    host = attrs["HostConfig"]
    assert host["NanoCpus"] == 500_000_000
    assert host["Memory"] == 256 * 1024**2
    assert host["MemorySwap"] == 256 * 1024**2  # no swap
    assert host["ReadonlyRootfs"] is True
    assert set(host["Tmpfs"]) == {"/tmp", "/home/engine"}
    assert host["CapDrop"] == ["ALL"]
    assert host["NetworkMode"] == "bridge"
    assert attrs["Config"]["User"] == "10001"
    assert "ENGINE_TEST=x" in attrs["Config"]["Env"]
    mounts = [m.get("Source", "") for m in attrs["Mounts"]] + list(host.get("Binds") or [])
    assert not any("docker.sock" in m for m in mounts)

    container = client.containers.get(handle.ref)
    assert container.exec_run("id -u").output.decode().strip() == "10001"
    assert container.exec_run("test -e /var/run/docker.sock").exit_code != 0
    assert (
        container.exec_run(["sh", "-c", "echo hi > /home/engine/f && cat /home/engine/f"]).output == b"hi\n"
    )
    assert container.exec_run(["sh", "-c", "echo x > /usr/f"]).exit_code != 0  # read-only root

    info = run(backend.exit_info(handle))
    assert not info.exited and not info.oom_killed

    started = time.monotonic()
    run(backend.stop_executor(handle))
    assert time.monotonic() - started < 5, "stop must kill, not wait for a graceful stop"
    with pytest.raises(docker.errors.NotFound):
        client.api.inspect_container(handle.ref)
    run(backend.stop_executor(handle))  # idempotent
    info = run(backend.exit_info(handle))
    assert info.exited and info.detail == "container removed"


def test_exit_info_reports_an_oom_kill(client, runtime_tag, instance_id):
    # Listen first (so start succeeds), then allocate far past the 64 MB limit.
    hog = ["python3", "-c", LISTEN + "time.sleep(0.3); b = b'x' * (512 * 1024 * 1024); time.sleep(60)"]
    backend = DockerBackend(instance_id=instance_id, command=hog, image_for=lambda _: runtime_tag)
    try:
        handle = run(backend.start_executor(spec(memory_gb=64 / 1024)))
        info = wait_for(lambda: (i := run(backend.exit_info(handle))).exited and i)
        assert info.oom_killed, info
        assert info.exit_code == 137
    finally:
        run(backend.close())


def test_an_executor_that_dies_at_start_fails_with_its_output(client, runtime_tag, instance_id):
    crash = ["python3", "-c", "print('boom-marker', flush=True); raise SystemExit(3)"]
    backend = DockerBackend(instance_id=instance_id, command=crash, image_for=lambda _: runtime_tag)
    with pytest.raises(InfrastructureError) as caught:
        run(backend.start_executor(spec()))
    assert "boom-marker" in str(caught.value)
    assert "code 3" in str(caught.value)
    assert ours(client, instance_id) == []  # the failed container is not left behind


@pytest.mark.parametrize("when", ["created", "running"])
def test_a_cancelled_start_leaves_no_container(client, runtime_tag, instance_id, when):
    mute = ["sleep", "600"]  # never listens
    backend = DockerBackend(instance_id=instance_id, command=mute, image_for=lambda _: runtime_tag)

    def reached():
        found = ours(client, instance_id)
        return found and (when == "created" or found[0]["State"] == "running")

    async def start_then_cancel():
        task = asyncio.create_task(backend.start_executor(spec()))
        await asyncio.to_thread(wait_for, reached, 20, 0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(start_then_cancel())
    wait_for(lambda: ours(client, instance_id) == [], 10)


def test_a_missing_image_says_how_to_build_it(backend):
    with pytest.raises(ImageMissing, match="engine image build"):
        run(backend.start_executor(spec(image="engine-runtime:py3.11-000000000000")))


def test_containers_reach_the_callback_host_and_back(client, backend, instance_id, runtime_tag):
    assert backend.callback_host == backend.callback_bind_host
    gateway = client.api.inspect_network("bridge")["IPAM"]["Config"][0].get("Gateway")
    if gateway:
        assert backend.callback_host == gateway
    with socket.socket() as server:
        server.bind((backend.callback_bind_host, 0))
        server.listen()
        server.settimeout(20)
        port = server.getsockname()[1]
        hello = [
            "python3",
            "-c",
            "import os,socket,time; "
            "socket.create_connection((os.environ['CB_HOST'], int(os.environ['CB_PORT'])))"
            ".sendall(b'hello from the container'); " + LISTEN + "time.sleep(600)",
        ]
        b2 = DockerBackend(instance_id=instance_id, command=hello, image_for=lambda _: runtime_tag)
        env = {"CB_HOST": backend.callback_host, "CB_PORT": str(port)}
        handle = run(b2.start_executor(spec(env=env)))
        conn, _ = server.accept()
        with conn:
            assert conn.recv(100) == b"hello from the container"
        socket.create_connection(handle.address.rsplit(":", 1), timeout=2).close()
        run(b2.close())


def test_logs_return_the_executor_output(backend, instance_id, runtime_tag):
    chatty = ["python3", "-c", "print('log-marker', flush=True); " + LISTEN + "time.sleep(600)"]
    b2 = DockerBackend(instance_id=instance_id, command=chatty, image_for=lambda _: runtime_tag)
    handle = run(b2.start_executor(spec()))
    assert "log-marker" in wait_for(lambda: "log-marker" in (t := run(b2.logs(handle))) and t, 10)
    run(b2.close())


def test_close_removes_every_container_of_the_instance(client, backend, instance_id):
    async def start_three():
        return await asyncio.gather(*(backend.start_executor(spec()) for _ in range(3)))

    handles = run(start_three())
    assert len({h.id for h in handles}) == 3
    assert len(ours(client, instance_id)) == 3
    run(backend.close())
    assert ours(client, instance_id) == []


def test_cleanup_orphans_removes_containers_of_dead_engines_only(client, backend, runtime_tag):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    common = {"engine.managed": "1", "engine.owner_host": socket.gethostname()}
    other = f"test-other-{uuid.uuid4().hex[:8]}"
    ids = []
    try:
        for owner in (str(dead.pid), str(os.getpid())):
            created = client.api.create_container(
                runtime_tag,
                entrypoint=["sleep", "600"],
                labels={**common, "engine.instance": other, "engine.owner_pid": owner},
            )
            client.api.start(created["Id"])
            ids.append(created["Id"])
        orphan, alive = ids
        assert run(backend.cleanup_orphans()) >= 1
        with pytest.raises(docker.errors.NotFound):
            client.api.inspect_container(orphan)
        assert client.api.inspect_container(alive)["State"]["Running"]
    finally:
        remove_labelled(client, f"engine.instance={other}")


def test_the_real_executor_entrypoint_accepts_connections(client, runtime_tag, instance_id):
    backend = DockerBackend(instance_id=instance_id, image_for=lambda _: runtime_tag)
    try:
        handle = run(backend.start_executor(spec()))
        socket.create_connection(handle.address.rsplit(":", 1), timeout=2).close()
    finally:
        run(backend.close())


# --- images ----------------------------------------------------------------------------------


def test_runtime_image_imports_the_engine_as_uid_10001(client, runtime_tag):
    code = "import engine, grpc, google.protobuf, cloudpickle, pydantic, yaml, os; print(os.getuid())"
    host_config = client.api.create_host_config(
        read_only=True, tmpfs={"/tmp": "", "/home/engine": "uid=10001"}
    )
    code_, out = images.run_once(
        client, runtime_tag, ["python3", "-c", code], user="10001", host_config=host_config
    )
    assert (code_, out.strip()) == (0, "10001")
    labels = client.api.inspect_image(runtime_tag)["Config"]["Labels"]
    assert labels["engine.python"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert images.image_python_version(runtime_tag) == labels["engine.python"]


def test_base_image_is_made_once(client, monkeypatch):
    calls = []
    real = images.base._debootstrap
    monkeypatch.setattr(images.base, "_debootstrap", lambda *a, **k: (calls.append(a), real(*a, **k)))
    first = images.ensure_base_image()  # may debootstrap on a fresh machine
    calls.clear()
    started = time.monotonic()
    second = images.ensure_base_image()
    assert second == first
    assert calls == []
    assert time.monotonic() - started < 5


def test_build_runtime_image_is_idempotent(runtime_tag):
    first = images.build_runtime_image()
    lines: list[str] = []
    started = time.monotonic()
    assert images.build_runtime_image(progress=lines.append) == first
    assert time.monotonic() - started < 5
    assert not any("Step" in line for line in lines)


def test_function_image_installs_pip_packages_offline(client, runtime_tag, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "a.txt").write_text("first")
    image = (
        Image(name=f"itest-{uuid.uuid4().hex[:6]}")
        .run("pip install six")
        .env("GREETING", 'say "hi" $HOME')
        .copy("assets", "/opt/assets")
    )
    tag = images.build_function_image(image)
    try:
        assert tag == images.function_image_tag(image)
        check = (
            "import os, six; "
            "print(six.__name__, os.environ['GREETING'], open('/opt/assets/a.txt').read(), "
            "os.getcwd(), os.getuid(), 'PIP_NO_INDEX' in os.environ)"
        )
        _, out = images.run_once(client, tag, ["python3", "-c", check])
        assert out.split() == [
            "six",
            "say",
            '"hi"',
            "$HOME",
            "first",
            "/home/engine",
            "10001",
            "False",
        ]

        started = time.monotonic()
        assert images.build_function_image(image) == tag  # cached
        assert time.monotonic() - started < 5

        first_id = client.api.inspect_image(tag)["Id"]
        (tmp_path / "assets" / "a.txt").write_text("second")  # copied content changed: rebuild
        assert images.build_function_image(image) == tag
        assert client.api.inspect_image(tag)["Id"] != first_id
        client.images.remove(first_id, force=True)
        assert images.run_once(client, tag, ["cat", "/opt/assets/a.txt"]) == (0, "second")
        assert dict(images.list_engine_images())[tag]
    finally:
        client.images.remove(tag, force=True)


def test_a_failing_build_step_reports_its_output(client, runtime_tag):
    image = Image(name="itest-fails").run("echo fail-marker; exit 3")
    with pytest.raises(ImageBuildError) as caught:
        images.build_function_image(image)
    message = str(caught.value)
    assert "fail-marker" in message and "exit 3" in message


def test_a_base_with_another_python_is_refused(client, runtime_tag):
    base = images.ensure_base_image()
    tag = f"engine-test-py399:{uuid.uuid4().hex[:8]}"
    dockerfile = f"FROM {base}\nLABEL engine.python=3.99\n".encode()
    client.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, rm=True)
    try:
        with pytest.raises(PythonVersionMismatch, match="3.99"):
            images.build_function_image(Image(name="itest-mismatch", base_image=tag))
    finally:
        client.images.remove(tag, force=True)


def test_stop_of_an_unknown_container_is_a_no_op(backend):
    run(backend.stop_executor(ExecutorHandle(id="nope", address="", function="f", ref="0" * 64)))
