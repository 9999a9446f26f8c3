"""Calls the deployed application `callee` (child_callee.py) by name, inside its own run."""

from engine import application, function, run_remote_application


@application()
@function()
def ask_callee(name: str) -> str:
    return run_remote_application("callee", name).output()
