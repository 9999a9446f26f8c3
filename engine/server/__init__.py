"""`engine server`: the control plane — an HTTP API and a live dashboard on top of the same
scheduler, store and backends that `engine run` uses.

The parts, one module each:

- `main.py` — start-up and shutdown: the state directory lock, the backend, the scheduler, the
  HTTP listener, signal handling, structured (JSON) logs.
- `http.py` — a small HTTP/1.1 server on the scheduler's own asyncio loop (why not
  `http.server`: see its docstring), with server-sent events.
- `api.py` — the routes: JSON in and out, authentication, one-line error messages.
- `control.py` — the control plane itself: the durable run queue (`max_concurrent_runs`),
  starting, cancelling and resuming runs, recovery after a restart or a `kill -9`, and the
  event hub that feeds server-sent events and metrics.
- `deployments.py` — deployed code: every version of every application unpacked under
  `<state_dir>/apps/<name>/<version>/`, imported in isolation from the other deployments.
- `views.py` — what the API shows of runs and calls, read from the store: run details, the
  call DAG (parent, dependency and tail-call edges), logs.
- `metrics.py` — `/metrics` through `prometheus_client`: counters, gauges and histograms that
  are really recorded, in the server's own registry.
- `openapi.py` — the OpenAPI document served at `/openapi.json`.
- `client.py` — a stdlib-only HTTP client: `engine deploy` and `run_remote_application` use it.
- `static/` — the dashboard: one HTML page, one script, one stylesheet; no build step and no
  third-party code.

Importing this package imports nothing else: the SDK's `run_remote_application` reaches
`client.py` without loading the scheduler.
"""
