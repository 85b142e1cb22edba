"""Template variants (content experiments, issue 18 item 4): a file next to the block's template,
`email/<block>.<variant>.html` / `ads/<block>.<variant>.json`, found in the shop's template
directory and the packaged one, checked at start-up like the block's own templates, rendered for
the variant (the default template where a format has no file), and treated as hostile like any
template. The holdout arm gets the fallback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.blocks import BlockPolicy, Renderer, TemplateSetupError, assemble, template_path
from tests.engine.test_blocks import FALLBACK_IDS, copy_templates, inp, lookup, shopper


def with_variant(tmp_path: Path, name: str = "compact", text: str | None = None) -> Path:
    directory = copy_templates(tmp_path)
    html = (directory / "email" / "recommendations.html").read_text()
    marked = "<!-- the compact design -->" + html if text is None else text
    (directory / "email" / f"recommendations.{name}.html").write_text(marked)
    return directory


def test_a_variant_file_is_found_and_rendered_for_its_variant(tmp_path: Path) -> None:
    renderer = Renderer(template_dir=with_variant(tmp_path))
    assert renderer.has_variant("recommendations", "compact")
    assert not renderer.has_variant("winback", "compact")
    assert not renderer.has_variant("recommendations", "missing")
    out = assemble(inp(profile=shopper(), variant="compact"), lookup, BlockPolicy(), renderer)
    assert "the compact design" in out.content and out.variant == "compact"
    plain = assemble(inp(profile=shopper()), lookup, BlockPolicy(), renderer)
    assert "the compact design" not in plain.content and plain.variant == "default"
    # json has no compact file: the block's own template, with the variant named in it
    ads = assemble(
        inp(fmt="json", profile=shopper(), variant="compact"), lookup, BlockPolicy(), renderer
    )
    assert json.loads(ads.content)["variant"] == "compact"


def test_a_variant_that_does_not_compile_stops_start_up_naming_the_file(tmp_path: Path) -> None:
    directory = with_variant(tmp_path, "broken", "{% for x in %}")
    with pytest.raises(TemplateSetupError, match=r"email/recommendations\.broken\.html.*line 1"):
        Renderer(template_dir=directory)


def test_a_hostile_variant_is_refused_like_any_template(tmp_path: Path) -> None:
    hostile = "{{ items.__class__.__mro__ }}{{ ''.__class__.__base__.__subclasses__() }}"
    renderer = Renderer(template_dir=with_variant(tmp_path, "evil", hostile))
    out = assemble(inp(profile=shopper(), variant="evil"), lookup, BlockPolicy(), renderer)
    assert out.fallback and out.reason == "template_error"
    assert "mro" not in out.content and "subclasses" not in out.content


def test_odd_file_names_are_no_variants(tmp_path: Path) -> None:
    directory = with_variant(tmp_path)
    for name in ("recommendations.Bad Name.html", "recommendations.holdout.html"):
        (directory / "email" / name).write_text("{% for x in %}")  # never loaded
    renderer = Renderer(template_dir=directory)
    assert renderer.variants[("recommendations", "html")] == frozenset({"compact"})


def test_the_holdout_gets_the_fallback(tmp_path: Path) -> None:
    renderer = Renderer(template_dir=with_variant(tmp_path))
    for fmt in ("html", "json"):
        out = assemble(
            inp(fmt=fmt, profile=shopper(), variant="holdout"), lookup, BlockPolicy(), renderer
        )
        assert out.fallback and out.reason == "holdout" and out.variant == "holdout"
        assert list(out.items) == FALLBACK_IDS


def test_template_path_of_a_variant() -> None:
    assert template_path("winback", "html", "warm") == "email/winback.warm.html"
    assert template_path("winback", "json", "warm") == "ads/winback.warm.json"
    assert template_path("winback", "json") == "ads/winback.json"
