"""Deployed on its own, and called by child_caller.py's application inside its runs."""

from engine import application, function


@function()
def upper(text: str) -> str:
    return text.upper()


@application()
@function()
def callee(name: str) -> str:
    return f"callee v1 says hello to {upper(name)}"
