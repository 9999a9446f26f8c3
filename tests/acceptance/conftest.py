"""Fixtures of the acceptance tests: `llm`, the local model server, once per session
(tests/acceptance/llmlib.py)."""

from llmlib import llm  # noqa: F401 - a fixture, registered by being imported here
