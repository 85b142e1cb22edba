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
        ("email/recommendations.html", _link_out, "symbolic link to a file out of"),
        ("ads/winback.json", _link_out, "symbolic link to a file out of"),
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


@pytest.mark.timeout(60)
@pytest.mark.parametrize("rel", ["loop.html", "email/loop", "i18n/loop.json"])
def test_a_symbolic_link_loop_in_the_template_dir_is_refused_at_start(
    tmp_path: Path, rel: str
) -> None:
    """Two links naming each other: Path.resolve raised RuntimeError("Symlink loop ...") out of
    the start-up check, a traceback rather than a refusal naming the file."""
    shop = copy_templates(tmp_path)
    (shop / rel).symlink_to(shop / f"{rel}.other")
    (shop / f"{rel}.other").symlink_to(shop / rel)
    with pytest.raises(TemplateSetupError, match="symbolic link loop") as refused:
        Renderer(shop)
    links = (shop / rel, shop / f"{rel}.other")  # the walk meets either first
    assert any(f"template file {link} " in str(refused.value) for link in links)


@pytest.mark.timeout(60)
def test_a_symbolic_link_to_a_subdirectory_out_of_the_template_dir_is_refused(
    tmp_path: Path,
) -> None:
    """A linked subdirectory is not walked (os.walk does not follow links): one out of the
    directory is refused as a whole, whatever it holds; the message speaks of a directory."""
    shop = copy_templates(tmp_path)
    outside = tmp_path / "elsewhere"
    (shop / "email").rename(outside)
    (shop / "email").symlink_to(outside)
    with pytest.raises(TemplateSetupError, match="a symbolic link to a directory out of") as told:
        Renderer(shop)
    assert f"{shop / 'email'} is a symbolic link" in str(told.value)


@pytest.mark.timeout(60)
def test_a_link_to_a_subdirectory_within_the_template_dir_is_taken_and_cannot_loop(
    tmp_path: Path,
) -> None:
    """A link back up the tree (`email/again -> ..`) is a loop for a walk that follows links;
    the check does not follow them, and the link's target is walked as itself."""
    shop = copy_templates(tmp_path)
    (shop / "email" / "again").symlink_to(shop)
    Renderer(shop)
