"""A function that needs a secret, given at run time (never baked into code or images)."""

from __future__ import annotations

import os

from engine import application, function


@function(secrets=["ENGINE_TEST_TOKEN_7F3A"])
def read_secret(suffix: str) -> str:
    return os.environ["ENGINE_TEST_TOKEN_7F3A"][::-1] + suffix


@application()
@function()
def secret_app(suffix: str) -> str:
    return read_secret.future(suffix)
