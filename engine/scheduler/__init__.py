"""The scheduler: the call graph, readiness, dispatch, retries and resume (`scheduler.py`),
executor pools (`pools.py`), per-run state (`state.py`) and the callback service that running
functions talk to (`callback.py`)."""

from engine.scheduler.scheduler import Scheduler, new_run_id, root_call_id

__all__ = ["Scheduler", "new_run_id", "root_call_id"]
