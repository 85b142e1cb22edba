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


def _swapped_after_start(tmp_path: Path, target: Callable[[Path], Path]) -> str:
    """The e-mail block rendered after `email/_grid.html` (an include, loaded at the first
    render, not at start) was replaced by a symbolic link to `target(shop)`: its content."""
    from tests.engine.test_blocks import inp, lookup, product

    shop = copy_templates(tmp_path)
    renderer = Renderer(shop)  # the start-up check passes
    grid = shop / "email" / "_grid.html"
    link_to = target(shop)
    grid.unlink()
    grid.symlink_to(link_to)
    return renderer.render(inp(fmt="html"), [product("p1")], True, "unknown_user", lookup).content


@pytest.mark.timeout(60)
def test_a_template_swapped_for_a_link_out_after_start_is_never_served(tmp_path: Path) -> None:
    """The directory is checked at start, but an included template is loaded at its first
    render: one replaced meanwhile by a link out of the directory was served in the block (a
    secret beside it, /etc/passwd). Each file is checked as it is opened: such a one fails the
    render (the block falls back), its target unread."""
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-MARKER-4711")
    content = _swapped_after_start(tmp_path, lambda shop: secret)
    assert "SECRET-MARKER-4711" not in content


@pytest.mark.timeout(60)
def test_a_template_swapped_for_a_link_within_after_start_is_served(tmp_path: Path) -> None:
    def mine(shop: Path) -> Path:
        (shop / "mine.html").write_text("MINE-{{ items | length }}")
        return shop / "mine.html"

    assert "MINE-1" in _swapped_after_start(tmp_path, mine)
