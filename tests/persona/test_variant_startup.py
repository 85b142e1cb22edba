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


def test_persona_run_with_an_incomplete_template_dir_stops_before_any_child(tmp_path: Path) -> None:
    """docs/serving.md: a `PERSONA_TEMPLATE_DIR` without the six block files stops start-up
    naming the first one missing. `persona run` said so only from inside its worker, which it
    then restarted five times (about 40 s, the broker started and stopped with it) before giving
    up with exit status 1; the templates are now checked before any child, like the settings."""
    templates = tmp_path / "templates"
    (templates / "email").mkdir(parents=True)
    variant = DEFAULT_TEMPLATE_DIR / "email" / "recommendations.html"
    shutil.copy(variant, templates / "email" / "recommendations.compact.html")
    env = {"PERSONA_TEMPLATE_DIR": str(templates)}
    args = ("run", "--no-demo", "--port", str(free_port()), "--data-dir", str(tmp_path / "data"))
    result = persona_bare(*args, env=env, timeout=120)
    missing = templates / "email" / "recommendations.html"
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.count(f"persona: block template {missing} is missing") == 1
    assert "embedded broker" not in result.stdout + result.stderr
    assert "giving up" not in result.stderr
