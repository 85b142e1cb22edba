"""A PERSONA_TEMPLATE_DIR handed over carelessly or with hostile intent: a file in it that is a
FIFO (a read would wait for a writer forever), a symbolic link out of it (/etc/passwd served in
blocks), or far larger than any template. Each is refused at start (TemplateSetupError naming
the file), without hanging."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.blocks import Renderer, TemplateSetupError
from tests.engine.test_blocks import copy_templates

MAX_TEMPLATE_FILE = 1 << 20


def _fifo(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.mkfifo(path)


def _link_out(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.symlink_to("/etc/passwd")


def _huge(path: Path) -> None:
    with open(path, "wb") as out:
        out.truncate(MAX_TEMPLATE_FILE + 1)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("rel", "attack", "told"),
    [
        ("i18n/fr.json", _fifo, "not a regular file"),
        ("email/recommendations.html", _fifo, "not a regular file"),
        ("email/_grid.html", _fifo, "not a regular file"),
        ("email/recommendations.html", _link_out, "symbolic link out of"),
        ("ads/winback.json", _link_out, "symbolic link out of"),
        ("email/recommendations.html", _huge, f"larger than {MAX_TEMPLATE_FILE} bytes"),
    ],
)
def test_a_hostile_file_in_the_template_dir_is_refused_at_start(
    tmp_path: Path, rel: str, attack: Callable[[Path], None], told: str
) -> None:
    shop = copy_templates(tmp_path)
    attack(shop / rel)
    with pytest.raises(TemplateSetupError, match=told) as refused:
        Renderer(shop)
    assert str(shop / rel) in str(refused.value)


def test_a_link_inside_the_template_dir_is_taken(tmp_path: Path) -> None:
    shop = copy_templates(tmp_path)
    (shop / "email" / "recommendations.html").rename(shop / "mine.html")
    (shop / "email" / "recommendations.html").symlink_to(shop / "mine.html")
    Renderer(shop)
