"""A template variant that does not compile stops a worker at start-up, before it contacts the
broker, with a message naming the file (issue 18 item 4: variants are checked like the block
templates)."""

from __future__ import annotations

import shutil
from pathlib import Path

from engine.blocks import DEFAULT_TEMPLATE_DIR
from streams.broker import free_port
from tests.conftest import CLUSTER_SECRET, persona_bare


def test_a_broken_variant_stops_the_worker_naming_the_file(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(DEFAULT_TEMPLATE_DIR, templates, ignore=shutil.ignore_patterns("*.py"))
    broken = templates / "ads" / "winback.warm.json"
    broken.write_text('{"block": {{ block|tojson }')
    env = {"PERSONA_TEMPLATE_DIR": str(templates), "PERSONA_CLUSTER_SECRET": CLUSTER_SECRET}
    # nothing listens on the broker port: the templates are checked first
    broker = f"127.0.0.1:{free_port()}"
    args = ("worker", "--broker", broker, "--data-dir", str(tmp_path / "data"))
    result = persona_bare(*args, env=env, timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"persona: block template {broken} does not compile" in result.stderr
    assert "Traceback" not in result.stderr and "broker error" not in result.stderr
