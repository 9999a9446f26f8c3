"""Values that cannot cross between functions raise Tensorlake's typed errors on real executors:
`SerializationError` for an argument or a result that does not pickle, `DeserializationError`
for a value that does not unpickle where it arrives (tests/integration/apps/app_values.py)."""

from __future__ import annotations

import pytest

from engine import FunctionError, run_local_application


def test_arguments_and_results_that_do_not_cross_raise_typed_errors(apps, state_dir) -> None:
    app = apps("app_values")
    out = run_local_application(app.values_app, 1).output()
    assert out == ["SerializationError: True", "DeserializationError: True"]


def test_a_result_that_does_not_pickle_fails_the_run_with_serialization_error(apps, state_dir, show) -> None:
    app = apps("app_values")
    request = run_local_application(app.returns_lock, 1)
    with pytest.raises(FunctionError, match="raised SerializationError: returns_lock returned a "
                                            "lock that cannot be serialised"):
        request.output()
    info = show(request.id)
    assert info["status"] == "failed" and "SerializationError" in info["error"]
