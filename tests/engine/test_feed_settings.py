"""PERSONA_CATALOG_FEEDS and PERSONA_FEED_LINK (issue 19 items 4-5)."""

from __future__ import annotations

import pytest

from engine.settings import SettingsError, load_settings, parse_catalog_feeds


def test_catalog_feeds_parse_with_fractional_minutes() -> None:
    text = "https://a.example.com/f.xml?token=t0ken@60; http://127.0.0.1:9/f.tsv@0.5"
    assert parse_catalog_feeds(text) == [
        ("https://a.example.com/f.xml?token=t0ken", 60.0),
        ("http://127.0.0.1:9/f.tsv", 0.5),
    ]
    settings = load_settings(env={"PERSONA_CATALOG_FEEDS": text})
    assert settings.catalog_feeds == text and "t0ken" not in repr(settings)


@pytest.mark.parametrize(
    "text", ["ftp://x.example.com/f@5", "https://x.example.com/f@0", "https://x/f", "https://x@nan"]
)
def test_bad_catalog_feeds_stop_start_up_without_showing_the_url(text: str) -> None:
    with pytest.raises(SettingsError, match="PERSONA_CATALOG_FEEDS=\\(hidden\\)") as caught:
        load_settings(env={"PERSONA_CATALOG_FEEDS": text})
    assert "x.example.com" not in str(caught.value)


def test_feed_link_is_an_http_url() -> None:
    assert load_settings(env={}).feed_link is None
    link = load_settings(env={"PERSONA_FEED_LINK": "https://shop.example.com/"}).feed_link
    assert link == "https://shop.example.com/"
    with pytest.raises(SettingsError, match="PERSONA_FEED_LINK"):
        load_settings(env={"PERSONA_FEED_LINK": "shop.example.com"})
