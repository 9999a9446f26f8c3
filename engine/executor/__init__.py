"""The function executor: what runs inside every process or container.

`python -m engine.executor --listen HOST:PORT` starts a gRPC `FunctionExecutor` server
(`server.py`); the SDK runtime it installs for each call (`runtime.py`) turns futures into
Submit/Await calls to the scheduler's callback service. It imports nothing from the scheduler,
the store or the backends: it is the whole of the engine that a container needs. On the
process backend, executors are forked from a template process that has imported it once
(`forkserver.py`).
"""
