"""`engine server`: the control plane — an HTTP API and a live dashboard on top of the same
scheduler, store and backends that `engine run` uses.

The parts, one module each:

- `main.py` — start-up and shutdown: the state directory lock, the backend, the scheduler, the
  HTTP listener, signal handling, structured (JSON) logs.
- `web.py` — the HTTP layer: aiohttp's web server on the scheduler's own asyncio loop (why: see
  its docstring), errors as one-line JSON.
- `routes.py` — the route table: every route once, with what it may answer.
- `api.py` — the handlers the table names: authentication, reading the request, answering
  with a model.
- `models.py` — the response bodies and query strings as pydantic models.
- `openapi.py` — the OpenAPI document served at `/openapi.json`, generated from the route
  table and the models.
- `control.py` — the control plane itself: accepting, starting, cancelling and resuming runs,
  recovery after a restart or a `kill -9`, watching the scheduler's events.
- `queue.py` — the durable run queue: which queued runs this server claims (oldest first, up to
  `max_concurrent_runs`), and take-over of runs whose driver died.
- `webhooks.py` — completion webhooks: each run's end POSTed, signed, from the store's durable
  outbox, retried with back-off; one delivery task per server.
- `events.py` — the event hub: server-sent events of runs, woken by the control plane.
- `deployments.py` — deployed code: every version of every application unpacked under
  `<state_dir>/apps/<name>/<version>/`, imported in isolation from the other deployments.
- `views.py` — what the API shows of runs and calls, read from the store: run details, the
  call DAG (parent, dependency and tail-call edges), logs.
- `metrics.py` — `/metrics` through `prometheus_client`: every series the server exports,
  really recorded, in the server's own registry.
- `client.py` — a stdlib-only HTTP client: `engine deploy` and `run_remote_application` use it.
- `static/` — the dashboard: one HTML page, one script, one stylesheet; no build step and no
  third-party code.

Importing this package imports nothing else: the SDK's `run_remote_application` reaches
`client.py` without loading the scheduler.
"""
