"""`examples/tensorlake/request_context`, end to end: with `engine run` (state, progress and
metrics, shown by `engine show`), and served by `engine server`, where the `X-Reviewer` header of
the submission reaches the functions through `RequestContext.headers`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from serverlib import ServerProcess  # noqa: E402

pytestmark = pytest.mark.acceptance

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tensorlake" / "request_context"
DOCUMENTS = {
    "memo": "The password is on the board.\n\nDo not share it with anyone.",
    "payroll": "Salary figures for the quarter.\n\nConfidential until March.\n\nSee the table.",
    "notes": "Lunch at noon.",
}


def test_request_context_example_with_engine_run(state_dir, cli) -> None:
    code, out, err = cli("run", f"{EXAMPLE / 'app.py'}:review_documents", "--input",
                         json.dumps(DOCUMENTS), "--json")
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["status"] == "succeeded", result
    review = result["result"]
    assert review == {"reviewer": "anonymous", "documents": 3, "words": 26,
                      "flagged": {"memo": ["password"], "payroll": ["confidential", "salary"]}}

    code, out, err = cli("show", result["run_id"], "--json")
    assert code == 0, err
    info = json.loads(out)
    progress = {c["progress"]["message"] for c in info["call_list"] if c["progress"]}
    assert {"memo: paragraph 2 of 2", "payroll: paragraph 3 of 3", "notes: paragraph 1 of 1",
            "reviewing 3 documents", "review complete"} <= progress
    assert info["metrics"]["counters"] == {"words": 26, "flagged_words": 3}
    assert info["metrics"]["timers"]["review_seconds"]["count"] == 3

    code, out, err = cli("show", result["run_id"])
    assert "[3/3] payroll: paragraph 3 of 3" in out and "metrics: flagged_words 3, words 26" in out


def test_request_context_example_served(tmp_path) -> None:
    server = ServerProcess(tmp_path / "state").start()
    try:
        server.deploy(EXAMPLE / "app.py")
        run_id = server.submit("review_documents", DOCUMENTS, headers={"X-Reviewer": "ada"})
        assert server.wait(run_id)["status"] == "succeeded"
        review = server.ok("GET", f"/v1/runs/{run_id}/output")
        assert review["reviewer"] == "ada" and review["documents"] == 3
    finally:
        server.stop()
