"""The `engine` command line.

    engine run FILE.py:FUNCTION [--input JSON] [--input-file PATH [--content-type TYPE]]
               [--output PATH] [--backend process|docker|swarm] [--config PATH]
               [--state-dir DIR] [--env-file FILE] [--budget calls=N,depth=N,duration=S]
               [--model MODEL] [--json]
    engine resume RUN_ID [--output PATH] [--json] [--backend ...] [--state-dir DIR] [--budget ...]
    engine rerun RUN_ID --from FUNCTION [FILE.py[:APP]] [--output PATH] [--json] [--backend ...]
                 [--state-dir DIR] [--budget ...]
    engine runs [--json]
    engine show RUN_ID [--output PATH] [--json]
    engine logs RUN_ID [--function NAME]
    engine signal RUN_ID NAME [--data JSON] [--state-dir DIR]   (a server's run with $ENGINE_SERVER)
    engine image build [FILE.py] [--force] [--push REGISTRY]
    engine image prune [--dry-run]
    engine doctor
    engine server [--host H] [--port P] [--state-dir DIR] [--config PATH] [--backend B] [--token T]
    engine deploy FILE.py [--server URL] [--token T]

Exit codes: 0 the run succeeded (or the command did its job), 1 the run failed, 2 a usage or
input error — always one line on stderr saying what is wrong, never a traceback. Progress goes
to stderr; with `--json`, stdout carries exactly one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from engine.errors import EngineError, InfrastructureError, SDKUsageError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageExit(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2, as for every other user mistake
        raise UsageExit(f"{self.prog}: {message}")


def _state_dir(args: argparse.Namespace) -> Path:
    from engine.paths import default_state_dir

    return Path(args.state_dir) if getattr(args, "state_dir", None) else default_state_dir()


# --- progress ----------------------------------------------------------------------------


class ProgressView:
    """Calls queued / running / done / failed on stderr: a live line on a terminal, a line every
    few seconds otherwise (CI logs)."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.live: Any = None
        self.started = time.monotonic()
        self.last_plain = 0.0
        self.last: dict[str, int] = {}
        self.run_id = ""

    def line(self, run_id: str, p: dict[str, int]) -> str:
        return (f"run {run_id}  queued {p['queued']}  running {p['running']}  done {p['done']}"
                f"  failed {p['failed']}  reused {p['reused']}  {time.monotonic() - self.started:.1f}s")

    def __call__(self, run_id: str, p: dict[str, int]) -> None:
        self.run_id, self.last = run_id, p
        if self.console.is_terminal:
            from rich.live import Live
            from rich.text import Text

            if self.live is None:
                self.live = Live(Text(self.line(run_id, p)), console=self.console,
                                 refresh_per_second=8, transient=False)
                self.live.start()
            self.live.update(Text(self.line(run_id, p)))
        elif time.monotonic() - self.last_plain >= 2.0:
            self.last_plain = time.monotonic()
            print(self.line(run_id, p), file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        print(f"engine: {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
        elif self.last:
            print(self.line(self.run_id, self.last), file=sys.stderr, flush=True)


# --- run / resume ------------------------------------------------------------------------


def _write_output(value: Any, path: str) -> dict[str, Any]:
    """Write a run's result to `path`: a File's bytes, anything else as JSON. Returns what the
    run's JSON says of a File (its content type, size and path)."""
    from engine.app import file_json, to_json
    from engine.sdk.file import File

    data = value.content if isinstance(value, File) else json.dumps(to_json(value)).encode()
    try:
        Path(path).write_bytes(data)
    except OSError as exc:
        raise SDKUsageError(f"cannot write --output {path}: {exc.strerror or exc}") from None
    return {**file_json(value), "path": path} if isinstance(value, File) else {"path": path}


def _file_hint(run_id: str, result_file: dict[str, Any]) -> str:
    if "path" in result_file:
        return f"wrote {result_file['path']} ({result_file['content_type']}, {result_file['size']} bytes)"
    return (f"the result is a File ({result_file['content_type']}, {result_file['size']} bytes): "
            f"write it with `engine show {run_id} --output PATH`")


def _report(outcome: Any, as_json: bool, output: str | None = None) -> int:
    from engine import wire
    from engine.app import file_json, to_json
    from engine.sdk.file import File

    succeeded = outcome.status == "succeeded"
    is_file = succeeded and isinstance(outcome.result, File)
    result = to_json(outcome.result) if succeeded and not is_file else None
    error = wire.describe(outcome.failure) if outcome.failure is not None else None
    written = _write_output(outcome.result, output) if succeeded and output else None
    result_file = (written or file_json(outcome.result)) if is_file else None
    if as_json:
        out = {"run_id": outcome.run_id, "status": outcome.status, "result": result, "error": error}
        if result_file is not None:
            out["result_file"] = result_file
        print(json.dumps(out))
    elif result_file is not None:
        print(_file_hint(outcome.run_id, result_file))
    elif succeeded:
        if written is not None:
            print(f"wrote {output}", file=sys.stderr)
        print(result if isinstance(result, str) else json.dumps(result, indent=2))
    else:
        print(f"run {outcome.run_id} {outcome.status}: {error}", file=sys.stderr)
        if outcome.failure is not None and outcome.failure.traceback:
            print(outcome.failure.traceback.rstrip(), file=sys.stderr)
        print(f"continue it with: engine resume {outcome.run_id}", file=sys.stderr)
    return EXIT_OK if outcome.status == "succeeded" else EXIT_FAILED


def _budget(args: argparse.Namespace) -> dict[str, int | float | None] | None:
    """`--budget calls=1000,depth=3,duration=600`: the limits it names (SDKUsageError, exit 2)."""
    from engine.scheduler.budgets import parse_budget

    return parse_budget(args.budget) if args.budget is not None else None


def cmd_run(args: argparse.Namespace) -> int:
    from engine.backends.early import EarlyStart

    # Blank executors start now, while the application loads (engine.backends.early).
    early = EarlyStart.begin(args.backend, lambda: _state_dir(args))
    try:
        from engine.app import load_app, parse_input
        from engine.runner import execute

        budget = _budget(args)
        model = _model(args)
        app = load_app(args.target, Path(args.config) if args.config else None,
                       Path(args.env_file) if args.env_file else None)
        kwargs = parse_input(app.function, args.input, _input_file(args))
        view = ProgressView()
        try:
            outcome = execute(app, kwargs=kwargs, state_dir=_state_dir(args), backend=args.backend,
                              progress=view, note=view.note, budget=budget, model=model, early=early,
                              process_ends=args.process_ends)
        finally:
            view.close()
        return _report(outcome, args.json, args.output)
    finally:
        if early is not None:
            early.discard()


def _model(args: argparse.Namespace) -> str | None:
    """`--model NAME`: the run's model for `engine.ai` (SDKUsageError, exit 2, when malformed)."""
    if args.model is None:
        return None
    name = args.model.strip()
    if not name or len(name) > 200 or not name.isprintable():
        raise SDKUsageError(f"--model {args.model!r}: give a model name, e.g. --model gpt-4o-mini")
    return name


def _input_file(args: argparse.Namespace) -> tuple[bytes, str] | None:
    """`--input-file PATH` (and `--content-type`, else guessed from the file's name)."""
    import mimetypes

    if args.input_file is None:
        if args.content_type is not None:
            raise SDKUsageError("--content-type goes with --input-file PATH")
        return None
    try:
        content = Path(args.input_file).read_bytes()
    except OSError as exc:
        raise SDKUsageError(f"cannot read --input-file {args.input_file}: {exc.strerror or exc}") from None
    guessed = mimetypes.guess_type(args.input_file)[0]
    return content, args.content_type or guessed or "application/octet-stream"


def cmd_resume(args: argparse.Namespace) -> int:
    from engine.app import load_app
    from engine.runner import execute
    from engine.store import open_store, store_url

    budget = _budget(args)
    state_dir = _state_dir(args)
    store = open_store(store_url(state_dir))
    try:
        row = store.get_run(args.run_id)
    finally:
        store.close()
    app = load_app(f"{row.app_file}:{row.application}",
                   Path(row.config_path) if row.config_path else None,
                   Path(args.env_file) if args.env_file else None)
    view = ProgressView()
    try:
        outcome = execute(app, resume_id=args.run_id, state_dir=state_dir,
                          backend=args.backend or row.backend, progress=view, note=view.note,
                          budget=budget, process_ends=args.process_ends)
    finally:
        view.close()
    return _report(outcome, args.json, args.output)


def cmd_rerun(args: argparse.Namespace) -> int:
    """A new run with RUN_ID's input that reruns it from FUNCTION with the code of FILE (default:
    the file the run used), reusing every checkpoint that does not depend on FUNCTION's calls
    (`engine.scheduler.rerun`)."""
    from engine.app import load_app
    from engine.runner import execute
    from engine.scheduler.rerun import check

    budget = _budget(args)
    state_dir = _state_dir(args)
    store = _open(args)
    try:
        origin = store.get_run(args.run_id)
        calls = store.load_calls(args.run_id)
    finally:
        store.close()
    config = Path(args.config) if args.config else None
    if args.file:
        target = args.file if not args.file.endswith(".py") else f"{args.file}:{origin.application}"
    elif Path(origin.app_file).is_file():
        target = f"{origin.app_file}:{origin.application}"
        config = config or (Path(origin.config_path) if origin.config_path else None)
    else:
        raise SDKUsageError(f"run {args.run_id} ran {origin.app_file}, which is not there: say which code "
                            f"to rerun it with, `engine rerun {args.run_id} --from {args.function} FILE.py`")
    app = load_app(target, config, Path(args.env_file) if args.env_file else None)
    check(origin, calls, args.function, app)  # before an executor starts
    view = ProgressView()
    try:
        outcome = execute(app, rerun=(args.run_id, args.function), state_dir=state_dir,
                          backend=args.backend or origin.backend, progress=view, note=view.note,
                          budget=budget, process_ends=args.process_ends)
    finally:
        view.close()
    return _report(outcome, args.json, args.output)


# --- inspection --------------------------------------------------------------------------


def _open(args: argparse.Namespace) -> Any:
    from engine.store import open_store, store_url

    state_dir = _state_dir(args)
    url = store_url(state_dir)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        raise SDKUsageError(f"no runs in {state_dir}: start one with `engine run` (or pass --state-dir)")
    return open_store(url)


def _duration(start: float | None, end: float | None) -> float | None:
    if start is None:
        return None
    return round((end or time.time()) - start, 3)


def cmd_runs(args: argparse.Namespace) -> int:
    store = _open(args)
    rows = store.list_runs(limit=args.limit)
    store.close()
    items = [{"run_id": r.run_id, "application": r.application, "status": r.status,
              "start": r.created_at, "duration": _duration(r.started_at, r.ended_at)} for r in rows]
    if args.json:
        print(json.dumps(items))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    table = Table("run", "application", "status", "started", "duration")
    table.columns[0].no_wrap = True  # the id must stay whole: it is what `engine resume` takes
    table.columns[0].min_width = 22
    for it in items:
        table.add_row(it["run_id"], it["application"], it["status"],
                      time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(it["start"])),
                      f"{it['duration']:.1f}s" if it["duration"] is not None else "")
    Console().print(table)
    return EXIT_OK


def _importable(app_file: str) -> None:
    """Put the run's project on sys.path, so that its result's classes can be unpickled."""
    from engine.app import module_location

    if Path(app_file).is_file():
        root = str(module_location(Path(app_file))[1])
        if root not in sys.path:
            sys.path.insert(0, root)


def _lease_json(store: Any, row: Any) -> dict[str, Any] | None:
    """Who drives an unfinished run, and for how long its lease holds without renewal."""
    if row.status not in ("queued", "running"):
        return None
    lease = store.lease_of(row.run_id)
    return {"owner": lease.owner, "epoch": lease.epoch, "live": lease.live,
            "expires_in": round(lease.expires_in, 3) if lease.expires_in is not None else None}


def run_details(store: Any, run_id: str) -> dict[str, Any]:
    from engine import wire
    from engine.app import file_json, to_json
    from engine.scheduler.budgets import stored_use
    from engine.scheduler.signals import open_waits, signals_json, waiting
    from engine.sdk.file import File
    from engine.wire.v1 import engine_pb2 as pb

    row = store.get_run(run_id)
    calls = store.load_calls(run_id)
    _importable(row.app_file)
    # Checkpoints a resume reused, and those a rerun copied from its origin (`calls.reused`).
    reused = sum(1 for c in calls if (c.reused and c.executions == 0) or (
        c.status == "succeeded" and row.resumed_at and c.ended_at is not None and c.ended_at < row.resumed_at))
    failure = pb.Failure.FromString(row.failure) if row.failure else None
    result = result_file = None
    data = store.run_result(row) if row.status == "succeeded" else None
    if data is not None:
        try:
            value = wire.loads(data)
        except Exception:  # noqa: BLE001 - the result's classes may not be importable here
            result = "<result not loadable here>"
        else:
            if isinstance(value, File):
                result_file = file_json(value)
            else:
                result = to_json(value)
    return {
        "run_id": row.run_id, "application": row.application, "status": row.status,
        "result": result, "error": wire.describe(failure) if failure else None,
        **({"result_file": result_file} if result_file is not None else {}),
        "backend": row.backend, "created_at": row.created_at, "started_at": row.started_at,
        "ended_at": row.ended_at, "duration": _duration(row.started_at, row.ended_at),
        "resumes": row.resumes,
        "rerun_of": row.rerun_of, "rerun_from": row.rerun_from,
        "lease": _lease_json(store, row),
        "budget": stored_use(row, calls),
        "calls": {
            "total": len(calls),
            "succeeded": sum(1 for c in calls if c.status in ("succeeded", "tail")),
            "failed": sum(1 for c in calls if c.status == "failed"),
            "reused": reused,
            "executed": sum(1 for c in calls if c.executions),
            "executions": sum(c.executions for c in calls),
        },
        "call_list": [
            {"id": c.call_id, "function": c.function, "kind": c.kind, "parent": c.parent_id,
             "status": c.status, "attempts": c.attempts, "executions": c.executions,
             "reused": bool(c.reused) and c.executions == 0, "tail": c.tail_id, "duration": _duration(c.started_at, c.ended_at) if c.ended_at else None,
             "error": c.error_message,
             "progress": json.loads(c.progress) if c.progress else None,
             "metrics": json.loads(c.metrics) if c.metrics else None}
            for c in calls
        ],
        "metrics": _run_metrics(calls),
        "waiting": waiting(row, calls),
        "waits": open_waits(calls),
        "signals": signals_json(store, run_id),
    }


def _run_metrics(calls: list[Any]) -> dict[str, Any] | None:
    """The run's RequestContext.metrics: every call's counters and timers, summed by name."""
    from engine.scheduler.context import merge_metrics

    total: dict[str, Any] | None = None
    for c in calls:
        if c.metrics:
            total = merge_metrics(total, json.loads(c.metrics))
    return total


def _progress_text(progress: dict[str, Any] | None) -> str:
    if not progress:
        return ""
    text = f"  [{progress['current']:g}/{progress['total']:g}]"
    return text + (f" {progress['message'][:60]}" if progress.get("message") else "")


def cmd_show(args: argparse.Namespace) -> int:
    store = _open(args)
    try:
        info = run_details(store, args.run_id)
        if args.output:
            _show_output(store, args.run_id, args.output, info)
    finally:
        store.close()
    if args.json:
        print(json.dumps(info))
        return EXIT_OK
    c = info["calls"]
    # A running run that only waits for signals is shown as such, not as stuck.
    status = "waiting" if info["waiting"] else info["status"]
    print(f"run {info['run_id']}  {info['application']}  {status}  "
          f"{info['duration'] or 0:.2f}s  backend {info['backend']}")
    lease = info["lease"]
    if lease is not None and lease["live"]:
        print(f"driven by {lease['owner']} (its lease holds {lease['expires_in']:.1f} s more unless renewed)")
    elif info["status"] == "running":
        print(f"nobody drives it (its driver is gone): continue it with `engine resume {info['run_id']}`")
    for wait in info["waits"]:
        until = (f", until {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(wait['deadline']))}"
                 if wait["deadline"] is not None else "")
        print(f"waiting for signal {wait['name']!r} since "
              f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(wait['since']))}{until}: "
              f"send it with `engine signal {info['run_id']} {wait['name']} --data JSON`")
    if info["error"]:
        print(f"error: {info['error']}")
    elif "result_file" in info:
        print(f"result: {_file_hint(info['run_id'], info['result_file'])}")
    elif info["status"] == "succeeded":
        print(f"result: {json.dumps(info['result'])[:500]}")
    if any(v is not None for v in info["budget"]["limits"].values()):
        from engine.scheduler.budgets import use_text

        print(f"budget: {use_text(info['budget'])}")
    print(f"calls: {c['total']} total, {c['succeeded']} succeeded, {c['failed']} failed, "
          f"{c['reused']} reused, {c['executions']} executions")
    if info["rerun_of"]:
        print(f"rerun of {info['rerun_of']} from {info['rerun_from']}: {c['executed']} calls executed, "
              f"{c['reused']} reused from it")
    for call in info["call_list"][: args.limit]:
        dur = f"{call['duration']:.3f}s" if call["duration"] is not None else "-"
        err = f"  {call['error'][:100]}" if call["error"] else ""
        status = "reused" if call["reused"] else call["status"]
        print(f"  {call['id']}  {call['function']:<20} {status:<10} "
              f"attempts {call['attempts']}  {dur}  parent {call['parent'] or '-'}"
              f"{_progress_text(call['progress'])}{err}")
    if len(info["call_list"]) > args.limit:
        print(f"  ... {len(info['call_list']) - args.limit} more (--limit N, or --json)")
    if info["metrics"]:
        counters = ", ".join(f"{k} {v}" for k, v in sorted(info["metrics"]["counters"].items()))
        timers = ", ".join(f"{k} {t['count']}× {t['sum']:.3f}s" for k, t in sorted(info["metrics"]["timers"].items()))
        print("metrics: " + "; ".join(part for part in (counters, timers) if part))
    return EXIT_OK


def _show_output(store: Any, run_id: str, path: str, info: dict[str, Any]) -> None:
    from engine import wire

    row = store.get_run(run_id)
    data = store.run_result(row) if row.status == "succeeded" else None
    if data is None:
        raise SDKUsageError(f"run {run_id} is {row.status}: it has an output once it succeeded")
    written = _write_output(wire.loads(data), path)
    if "result_file" in info:
        info["result_file"] = written


def cmd_logs(args: argparse.Namespace) -> int:
    store = _open(args)
    try:
        store.get_run(args.run_id)
        entries = store.logs(args.run_id, args.function)
    finally:
        store.close()
    for call_id, function, attempt, text in entries:
        for line in text.rstrip("\n").splitlines():
            print(f"[{function} {call_id[:10]} #{attempt}] {line}")
    return EXIT_OK


def cmd_signal(args: argparse.Namespace) -> int:
    """Send a signal to a run: to the server at $ENGINE_SERVER when it is set, else into the
    state directory's store, where the run's driver (`engine run`, `engine resume`) finds it."""
    from urllib.parse import quote

    try:
        value = json.loads(args.data)
    except ValueError as exc:
        raise SDKUsageError(f"--data is not valid JSON: {exc}") from None
    if os.environ.get("ENGINE_SERVER"):
        from engine.server.client import ServerClient

        client = ServerClient(None, args.token)
        try:
            data = client.call("POST", f"/v1/runs/{quote(args.run_id, safe='')}/signals/{quote(args.name, safe='')}",
                               json.dumps(value).encode())
        finally:
            client.close()
        seq = data["seq"]
    else:
        from engine.scheduler.signals import send_signal

        store = _open(args)
        try:
            seq = send_signal(store, args.run_id, args.name, value).seq
        finally:
            store.close()
    if args.json:
        print(json.dumps({"run_id": args.run_id, "name": args.name, "seq": seq}))
    else:
        print(f"sent signal {args.name!r} to run {args.run_id}", file=sys.stderr)
    return EXIT_OK


# --- images and doctor -------------------------------------------------------------------


def cmd_image_build(args: argparse.Namespace) -> int:
    from engine import images

    view = ProgressView()
    images_needed = []
    if args.target:
        from engine.app import load_app

        target = args.target
        if ":" not in target:
            target = _first_application(target)
        app = load_app(target, require_secrets=False)
        images_needed = [s.config.image for s in app.functions.values() if s.config.image is not None]
    if args.push:
        images.registry_image(args.push, "")  # a malformed address fails before the build
    tags = images.build_images(images_needed, progress=view.note, force=args.force)
    if args.push:
        # What cluster nodes pull (the swarm backend): the runtime image and every function image.
        names = ["runtime", *tags]
        pushed = images.push_images([images.runtime_image_tag(), *tags.values()], args.push,
                                    progress=view.note)
        tags = dict(zip(names, pushed, strict=True))
    for name, tag in tags.items():
        print(f"{name}: {tag}")
    return EXIT_OK


def cmd_image_prune(args: argparse.Namespace) -> int:
    from engine import images

    removed = images.prune_images(dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for tag in removed:
        print(f"{verb} {tag}")
    if not removed:
        print("nothing to remove")
    return EXIT_OK


def _first_application(path: str) -> str:
    from engine.app import import_file
    from engine.sdk.function import Function

    if not Path(path).is_file():
        raise SDKUsageError(f"no such file: {path}")
    module, _, _ = import_file(Path(path))
    for name, value in vars(module).items():
        if isinstance(value, Function) and value.is_application:
            return f"{path}:{name}"
    raise SDKUsageError(f"{path} defines no @application()")


def cmd_doctor(args: argparse.Namespace) -> int:
    from engine.doctor import run_checks

    ok = True
    for check in run_checks():
        mark = "ok " if check.ok else "!! "
        print(f"{mark} {check.name}: {check.detail}")
        if not check.ok and check.fix:
            print(f"     fix: {check.fix}")
        ok = ok and (check.ok or not check.required)
    return EXIT_OK if ok else EXIT_FAILED


# --- server ------------------------------------------------------------------------------


def cmd_server(args: argparse.Namespace) -> int:
    import os

    from engine.server.main import ServerOptions, serve

    if args.max_concurrent_runs is not None and args.max_concurrent_runs < 1:
        raise SDKUsageError("--max-concurrent-runs must be at least 1")
    return serve(ServerOptions(
        state_dir=_state_dir(args), host=args.host, port=args.port,
        config_path=Path(args.config) if args.config else None, backend=args.backend,
        token=args.token or os.environ.get("ENGINE_TOKEN") or None,
        max_concurrent_runs=args.max_concurrent_runs,
    ))


def cmd_deploy(args: argparse.Namespace) -> int:
    from urllib.parse import quote

    from engine.app import module_location, zip_project
    from engine.server.client import ServerClient

    path = Path(args.file)
    if not path.is_file() or path.suffix != ".py":
        raise SDKUsageError(f"no such Python file: {args.file}")
    _, root = module_location(path)
    relative = path.resolve().relative_to(root.resolve()).as_posix()
    client = ServerClient(args.server, args.token)
    try:
        data = client.call("POST", f"/v1/deployments?file={quote(relative)}", zip_project(root),
                           content_type="application/zip")
    finally:
        client.close()
    if args.json:
        print(json.dumps(data))
        return EXIT_OK
    for app in data["applications"]:
        state = "deployed" if app["new"] else "unchanged,"
        print(f"{app['name']}: {state} version {app['version']}  "
              f"(POST {client.url}/v1/applications/{app['name']}/runs)")
    return EXIT_OK


# --- entry point -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="engine", description="Durable workflows: every function in its own container.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--state-dir", help="where runs are checkpointed (default .engine/ or $ENGINE_STATE_DIR)")
        p.add_argument("--store", metavar="URL",
                       help="the store: sqlite:///PATH (default: engine.db in the state directory) or "
                            "postgresql://USER:PASS@HOST:PORT/DB (default $ENGINE_STORE)")

    p = sub.add_parser("run", help="run an application")
    p.add_argument("target", metavar="FILE.py:FUNCTION")
    p.add_argument("--input", help="JSON input: the value of the one parameter, or an object of them")
    p.add_argument("--input-file", metavar="PATH",
                   help="a file for the parameter annotated File (--input then gives the others)")
    p.add_argument("--content-type", metavar="TYPE",
                   help="the --input-file's content type (default: guessed from its name)")
    p.add_argument("--output", metavar="PATH",
                   help="write the result there: a File's bytes, anything else as JSON")
    p.add_argument("--backend", choices=["process", "docker", "swarm", "auto"])
    p.add_argument("--config", help="YAML config (default: engine.yaml beside the file)")
    p.add_argument("--env-file", help="KEY=VALUE file the functions' secrets are read from")
    p.add_argument("--json", action="store_true", help="print one JSON line on stdout")
    p.add_argument("--budget", metavar="LIMITS",
                   help="the run's budget, e.g. calls=1000,depth=3,duration=600 (replaces the "
                        "application's limits it names; none lifts one)")
    p.add_argument("--model", metavar="MODEL",
                   help="the run's model: every engine.ai call of it that passes no model= uses it "
                        "(as the X-Engine-Model header of a submission; resume keeps it)")
    common(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("resume", help="continue a failed or interrupted run from its checkpoints")
    p.add_argument("run_id")
    p.add_argument("--output", metavar="PATH", help="write the result there (as `engine run --output`)")
    p.add_argument("--backend", choices=["process", "docker", "swarm", "auto"])
    p.add_argument("--env-file")
    p.add_argument("--json", action="store_true")
    p.add_argument("--budget", metavar="LIMITS",
                   help="raise (or lift, with none) limits of the run's budget, e.g. calls=5000")
    common(p)
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("rerun", help="a new run of a finished run's input that reruns it from one "
                                     "function with the current code, reusing the rest")
    p.add_argument("run_id")
    p.add_argument("--from", dest="function", required=True, metavar="FUNCTION",
                   help="its calls, what they created, what takes their values and what waited for "
                        "them execute again; every other checkpoint is reused")
    p.add_argument("file", nargs="?", metavar="FILE.py[:APP]",
                   help="the code to rerun it with (default: the file the run used)")
    p.add_argument("--output", metavar="PATH", help="write the result there (as `engine run --output`)")
    p.add_argument("--backend", choices=["process", "docker", "swarm", "auto"])
    p.add_argument("--config", help="YAML config (default: engine.yaml beside the file)")
    p.add_argument("--env-file")
    p.add_argument("--json", action="store_true")
    p.add_argument("--budget", metavar="LIMITS", help="the new run's budget, as `engine run --budget`")
    common(p)
    p.set_defaults(func=cmd_rerun)

    p = sub.add_parser("runs", help="list runs, newest first")
    p.add_argument("--json", action="store_true")
    p.add_argument("--limit", type=int, default=50)
    common(p)
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("show", help="a run's status, result, error and calls")
    p.add_argument("run_id")
    p.add_argument("--json", action="store_true")
    p.add_argument("--limit", type=int, default=50, help="calls listed (default 50)")
    p.add_argument("--output", metavar="PATH",
                   help="write the run's result there: a File's bytes, anything else as JSON")
    common(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("logs", help="what a run's functions printed")
    p.add_argument("run_id")
    p.add_argument("--function")
    common(p)
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("signal", help="send a signal to a run that waits for it (engine.signal)")
    p.add_argument("run_id")
    p.add_argument("name")
    p.add_argument("--data", default="null", metavar="JSON", help="the signal's value (default null)")
    p.add_argument("--token", help="with $ENGINE_SERVER: default $ENGINE_TOKEN")
    p.add_argument("--json", action="store_true")
    common(p)
    p.set_defaults(func=cmd_signal)

    p = sub.add_parser("image", help="container images")
    isub = p.add_subparsers(dest="image_command", required=True, parser_class=_Parser)
    b = isub.add_parser("build", help="build the runtime image and every image an application uses")
    b.add_argument("target", nargs="?", metavar="FILE.py[:FUNCTION]")
    b.add_argument("--force", action="store_true", help="rebuild even if the image exists")
    b.add_argument("--push", metavar="REGISTRY", help="then push them to REGISTRY (host:port), for the swarm backend")
    b.set_defaults(func=cmd_image_build)

    pr = isub.add_parser("prune", help="remove runtime and function images of older engine code")
    pr.add_argument("--dry-run", action="store_true", help="list what would be removed")
    pr.set_defaults(func=cmd_image_prune)

    p = sub.add_parser("doctor", help="check Docker, images and Python versions")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("server", help="serve the HTTP API and the dashboard")
    p.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1; others need --token)")
    p.add_argument("--port", type=int, default=8900)
    p.add_argument("--config", help="YAML config: backend, max_executors, idle_timeout, max_concurrent_runs, swarm")
    p.add_argument("--backend", choices=["process", "docker", "swarm", "auto"])
    p.add_argument("--token", help="require `Authorization: Bearer TOKEN` (default $ENGINE_TOKEN)")
    p.add_argument("--max-concurrent-runs", type=int, metavar="N", help="runs executing at once (default 16)")
    common(p)
    p.set_defaults(func=cmd_server)

    p = sub.add_parser("deploy", help="upload an application file's project to a server")
    p.add_argument("file", metavar="FILE.py")
    p.add_argument("--server", help="server URL (default $ENGINE_SERVER or http://127.0.0.1:8900)")
    p.add_argument("--token", help="default $ENGINE_TOKEN")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_deploy)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if (extra and args.command == "rerun" and args.file is None and len(extra) == 1
                and not extra[0].startswith("-")):
            args.file = extra[0]  # `rerun RUN --from F FILE.py`: argparse took positionals first
        elif extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        if getattr(args, "store", None):
            # One place every command (and every store it opens) reads it from.
            os.environ["ENGINE_STORE"] = args.store
        # The program (not a caller in this process) ends right after a run.
        args.process_ends = argv is None and args.command in ("run", "resume", "rerun")
        code = int(args.func(args))
        if args.process_ends:
            _exit_now(code)  # skip the teardown
        return code
    except UsageExit as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    except SDKUsageError as exc:
        print(f"engine: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except InfrastructureError as exc:
        print(f"engine: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except EngineError as exc:
        print(f"engine: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt as exc:
        from engine.runner import RunInterrupted

        if isinstance(exc, RunInterrupted):
            if "--json" in (argv if argv is not None else sys.argv):
                print(json.dumps({"run_id": exc.run_id, "status": "cancelled", "result": None,
                                  "error": "interrupted (Ctrl-C)"}))
            print(f"engine: interrupted; executors stopped. Continue with `engine resume {exc.run_id}`",
                  file=sys.stderr)
        else:
            print("engine: interrupted", file=sys.stderr)
        return 130


def _exit_now(code: int) -> None:
    """End the process at once after a run, as the interpreter would but without tearing its
    modules down one by one (about 0.1 s with gRPC, protobuf and the Docker SDK loaded). By
    now the run is over: its executors are stopped (containers removed), its store committed
    and closed. The atexit handlers (logging, tracing) run and the output is flushed here; the
    threads still alive are idle workers of thread pools."""
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["main"]
