"""The trigger runner sees the worker only through its ports (issue 20 item 1): streams/triggers.py
imports nothing of streams.app, not even for type checking, and never names the streams object."""

from __future__ import annotations

import ast
from pathlib import Path

import streams.triggers

SOURCE = Path(streams.triggers.__file__).read_text()


def test_the_trigger_runner_imports_nothing_of_the_streams_app() -> None:
    imported: set[str] = set()
    for node in ast.walk(ast.parse(SOURCE)):
        if isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert "streams.delivery" in imported  # the walk sees the module's imports
    assert not {name for name in imported if name == "streams.app" or name == "streams"}
    assert "PersonaStreams" not in SOURCE
