"""The scheduler: the call graph, readiness, retries and resume (`scheduler.py`); dispatch of
ready calls to executors and those executors' lifecycle (`dispatch.py`), over executor pools
(`pools.py`) and the warm pool (`warm.py`); argument and result values (`values.py`); per-run
state (`state.py`) and the callback service that running functions talk to (`callback.py`)."""

from engine.scheduler.scheduler import Scheduler, new_run_id, root_call_id

__all__ = ["Scheduler", "new_run_id", "root_call_id"]
