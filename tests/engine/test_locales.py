"""Locales and currencies (issue 19 item 6), the pure parts: price formats per locale, the message
files and their fallbacks, the currency of a locale, a product's price in the user's currency."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from engine.blocks import DEFAULT_TEMPLATE_DIR, Renderer, TemplateSetupError
from engine.catalog import validate_product
from engine.locales import (
    NBSP,
    Messages,
    MessagesError,
    currency_of,
    fallbacks,
    format_price,
    local_price,
    valid_locale,
)

PACKAGED = DEFAULT_TEMPLATE_DIR


@pytest.mark.parametrize(
    ("price", "currency", "locale", "text"),
    [
        (12.5, "GBP", "en-GB", "£12.50"),
        (12.5, "EUR", "en", "€12.50"),
        (1234.5, "USD", "en-US", "$1,234.50"),
        (12.5, "PLN", "en-GB", "12.50 PLN"),  # English writes other currencies by code
        (12.5, "EUR", "de-DE", f"12,50{NBSP}€"),
        (1234.5, "EUR", "de", f"1.234,50{NBSP}€"),
        (12.5, "PLN", "pl-PL", f"12,50{NBSP}zł"),
        (1234.5, "PLN", "pl", f"1234,50{NBSP}zł"),  # Polish groups from five digits on
        (12345.5, "PLN", "pl", f"12{NBSP}345,50{NBSP}zł"),
        (12.5, "XYZ", "de-AT", f"12,50{NBSP}XYZ"),
        (12.5, "XYZ", "", "12.50 XYZ"),
        (12.5, "EUR", "fr-FR", "€12.50"),  # a language without a style is written as English
    ],
)
def test_format_price_per_locale(price: float, currency: str, locale: str, text: str) -> None:
    assert format_price(price, currency, locale) == text


def test_format_price_without_a_locale_is_what_blocks_wrote_before() -> None:
    assert [format_price(p, c) for p, c in [(2.55, "GBP"), (3, "EUR"), (4, "USD")]] == [
        "£2.55",
        "€3.00",
        "$4.00",
    ]
    assert format_price(1234567.0, "JPY") == "1,234,567 JPY"  # yen have no minor unit


def test_valid_locale_canonicalizes_and_refuses_what_is_not_a_tag() -> None:
    assert valid_locale("pl-pl") == "pl-PL" and valid_locale("zh-hant-tw") == "zh-Hant-TW"
    for bad in ("", "not a tag", "pl_PL", "x" * 70, 12, None, ["pl"], {"pl": 1}, "p"):
        assert valid_locale(bad) is None, bad


def test_fallbacks_go_from_the_most_specific_tag_to_english() -> None:
    assert fallbacks("pl-PL") == ["pl-PL", "pl", "en"]
    assert fallbacks("zh-Hant-TW") == ["zh-Hant-TW", "zh-Hant", "zh", "en"]
    assert fallbacks("en-GB") == ["en-GB", "en"] and fallbacks("") == ["en"]


def test_shipped_languages_have_every_english_key() -> None:
    messages = Messages.load(PACKAGED)
    assert {"en", "pl", "de"} <= set(messages.languages)
    english = messages.catalogs["en"]
    for language in ("pl", "de"):
        own = messages.catalogs[language]
        assert set(own) == set(english), language
        assert all(own[k] != english[k] for k in english), language  # really translated
    assert messages.for_locale("pl-PL")["heading_recommendations"] == "Polecane dla Ciebie"
    assert messages.for_locale("de-AT")["heading_fallback"] == "Unsere Bestseller"
    assert messages.for_locale("fr-FR") == english  # an unknown language: English
    assert messages.for_locale("") == english


def _write(directory: Path, tag: str, data: object) -> None:
    (directory / "i18n").mkdir(parents=True, exist_ok=True)
    (directory / "i18n" / f"{tag}.json").write_text(json.dumps(data), encoding="utf-8")


def test_a_shop_adds_a_language_and_a_missing_key_falls_back_to_english(tmp_path: Path) -> None:
    _write(tmp_path, "fr", {"heading_recommendations": "Recommandé pour vous"})
    _write(tmp_path, "pl-PL", {"quantity": "Sztuk"})  # a region overrides its language
    messages = Messages.load(tmp_path, PACKAGED)
    french = messages.for_locale("fr-CA")
    assert french["heading_recommendations"] == "Recommandé pour vous"
    assert french["heading_fallback"] == "Our best-sellers"  # not in fr.json: English
    assert messages.for_locale("pl-PL")["quantity"] == "Sztuk"
    assert messages.for_locale("pl-PL")["heading_fallback"] == "Nasze bestsellery"
    assert messages.for_locale("pl")["quantity"] == "Ilość"


def test_a_shops_english_file_overrides_only_the_texts_it_has(tmp_path: Path) -> None:
    _write(tmp_path, "en", {"heading_winback": "Come back!"})
    english = Messages.load(tmp_path, PACKAGED).for_locale("en-GB")
    assert english["heading_winback"] == "Come back!"
    assert english["heading_recommendations"] == "Recommended for you"


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("de.json", "{not json", "not JSON"),
        ("de.json", '["a list"]', "must be an object"),
        ("de.json", '{"quantity": 3}', "must be a text"),
        ("de.json", '{"bad key!": "x"}', "is not a key"),
        ("de.json", '{"quantity": "' + "x" * 600 + '"}', "must be a text"),
        ("de.json", '{"quantity": "a\\u0000b"}', "quantity"),
        ("en_GB.json", '{"quantity": "Menge"}', "not a BCP 47"),
    ],
)
def test_a_bad_message_file_stops_the_renderer_naming_the_file(
    tmp_path: Path, name: str, content: str, says: str
) -> None:
    for path in PACKAGED.glob("*/*.*"):  # a whole template directory, plus one bad file
        target = tmp_path / path.relative_to(PACKAGED)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    (tmp_path / "i18n" / name).write_text(content, encoding="utf-8")
    with pytest.raises(TemplateSetupError, match=name) as raised:
        Renderer(tmp_path)
    assert says in str(raised.value)
    with pytest.raises(MessagesError):
        Messages.load(tmp_path)


def test_the_currency_of_a_locale_comes_from_its_region_else_its_language() -> None:
    expected = {
        "pl-PL": "PLN",
        "de-DE": "EUR",
        "de-AT": "EUR",
        "en-GB": "GBP",
        "en-US": "USD",
        "en-IE": "EUR",
        "pl": "PLN",
        "de": "EUR",
        "zh-Hant-TW": None,  # a region not in the table
        "en": None,
        "": None,
    }
    assert {tag: currency_of(tag) for tag in expected} == expected


def test_local_price_shows_the_users_currency_only_when_the_catalog_has_it() -> None:
    product = validate_product(
        {
            "item_id": "a",
            "title": "A",
            "url": "https://shop.example/a",
            "image_url": "https://shop.example/a.jpg",
            "price": 12.5,
            "currency": "EUR",
            "prices": {"PLN": 54},
        }
    )
    assert local_price(product, 12.5, "PLN") == (54.0, "PLN")
    assert local_price(product, 12.5, "GBP") == (12.5, "EUR")  # no GBP price: its own
    assert local_price(product, 10.0, "EUR") == (10.0, "EUR")  # its own currency: the sale
    assert local_price(product, 12.5, None) == (12.5, "EUR")


@pytest.mark.parametrize(
    ("price", "currency", "locale", "text"),
    [
        # ISO 4217 minor units: no decimals for yen and won, three for the dinars
        (1000, "JPY", "en", "1,000 JPY"),
        (1234567, "JPY", "de-DE", f"1.234.567{NBSP}JPY"),
        (12345, "KRW", "pl", f"12{NBSP}345{NBSP}KRW"),
        (1.234, "KWD", "en", "1.234 KWD"),
        (0.125, "BHD", "de", f"0,125{NBSP}BHD"),
        (1234.5, "BHD", "pl", f"1234,500{NBSP}BHD"),
        # half up, as shops and checkouts round, not as the float's binary value happens to fall
        (2.675, "EUR", "en", "€2.68"),
        (1.005, "EUR", "de", f"1,01{NBSP}€"),
        (0.5, "JPY", "en", "1 JPY"),
        (1e9, "USD", "en-US", "$1,000,000,000.00"),
        (0, "GBP", "", "£0.00"),
    ],
)
def test_format_price_writes_each_currencys_minor_units(
    price: float, currency: str, locale: str, text: str
) -> None:
    assert format_price(price, currency, locale) == text


def test_cart_line_totals_and_subtotal_keep_the_currencys_minor_units() -> None:
    """A cart of Kuwaiti dinar prices (three decimals): 2 x 1.234 is 2.468, not 2.47."""
    from engine.blocks import BlockInput, BlockPolicy, assemble
    from engine.events import validate
    from engine.profile import apply

    catalog = {
        item: validate_product(
            {
                "item_id": item,
                "title": item,
                "url": f"https://shop.example/{item}",
                "image_url": f"https://shop.example/{item}.jpg",
                "price": price,
                "currency": "KWD",
            }
        )
        for item, price in (("a", 1.234), ("b", 0.005))
    }
    profile = None
    for n, (item, quantity) in enumerate((("a", 2), ("b", 3))):
        event = {"event_id": f"e{n}", "type": "add_to_cart", "user_id": "u", "item_id": item}
        profile = apply(profile, validate({**event, "ts": 1_790_000_000_000, "quantity": quantity}))
    inp = BlockInput(
        block="cart_reminder",
        fmt="html",
        user_id="u",
        profile=profile,
        churn=None,
        recommendations=[],
        models={},
        popular=[],
    )
    html = assemble(inp, catalog.get, BlockPolicy(), Renderer()).content
    assert "1.234 KWD" in html and "2.468 KWD" in html  # a's price and its line
    assert "0.005 KWD" in html and "0.015 KWD" in html  # b's price and its line
    assert "2.483 KWD" in html  # the subtotal


def test_the_currency_of_a_locale_reads_only_its_region_subtag() -> None:
    """Extensions (`-u-...`) and private use (`-x-...`) hold two-letter subtags that are not
    regions: a German reader tagged `de-x-us` is not shown dollars."""
    expected = {
        "de-x-us": "EUR",  # private use: not the United States
        "de-u-co-phonebk": "EUR",  # a collation, not Colombia
        "en-x-gb": None,
        "x-pl": None,
        "pl-PL-x-de": "PLN",
        "de-CH-1996": "CHF",  # a variant after the region
        "sr-Latn-RS": None,
        "zh-Hant-TW": None,
        "es-419": None,  # a numeric region: none in the table
    }
    assert {tag: currency_of(tag) for tag in expected} == expected


def _block_in(
    locale: str | None, block: str = "recommendations", renderer: Renderer | None = None
) -> str:
    from engine.blocks import BlockInput, BlockPolicy, assemble
    from engine.events import validate
    from engine.params import build
    from engine.profile import apply

    catalog = {
        item: validate_product(
            {
                "item_id": item,
                "title": "שמלה",
                "url": f"https://shop.example/{item}",
                "image_url": f"https://shop.example/{item}.jpg",
                "price": 12.5,
                "currency": "EUR",
            }
        )
        for item in ("a", "b")
    }
    event = {"event_id": "e", "type": "add_to_cart", "user_id": "u", "item_id": "a"}
    profile = apply(None, validate({**event, "ts": 1_790_000_000_000, "quantity": 1}))
    inp = BlockInput(
        block=block,
        fmt="html",
        user_id="u",
        profile=profile,
        churn=0.9,
        recommendations=["b"],
        models={},
        popular=["a", "b"],
        params=build({"locale": locale} if locale else {}),
    )
    return assemble(inp, catalog.get, BlockPolicy(), renderer or Renderer()).content


# a text of its own for each right-to-left language below (and `az`): the block is written in it
TRANSLATED = {"ar": "مقترح لك", "he": "מומלץ עבורך", "fa": "پیشنهاد برای شما", "ur": "آپ کے لیے"}
TRANSLATED |= {"az": "Sizin üçün", "pa": "تہاڈے لئی"}


@pytest.fixture(scope="module")
def translated(tmp_path_factory: pytest.TempPathFactory) -> Renderer:
    """A template directory (the packaged one's files) with texts for TRANSLATED's languages."""
    directory = tmp_path_factory.mktemp("translated")
    for path in PACKAGED.glob("*/*.*"):
        target = directory / path.relative_to(PACKAGED)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    for tag, text in TRANSLATED.items():
        headings = ("recommendations", "cart_reminder", "winback")
        _write(directory, tag, {f"heading_{b}": text for b in headings})
    return Renderer(directory)


@pytest.mark.parametrize("block", ["recommendations", "cart_reminder", "winback"])
@pytest.mark.parametrize(
    ("locale", "direction"),
    [
        ("ar", "rtl"),
        ("he-IL", "rtl"),
        ("fa-IR", "rtl"),
        ("ur", "rtl"),
        ("az-Arab", "rtl"),  # the script decides
        ("pa-Arab-PK", "rtl"),
        ("az-Latn", "ltr"),
        ("en-GB", "ltr"),
        ("de", "ltr"),
    ],
)
def test_an_e_mail_block_is_written_in_its_languages_direction(
    block: str, locale: str, direction: str, translated: Renderer
) -> None:
    """An Arabic or Hebrew block (its texts translated) says `dir="rtl"` beside its `lang` and
    aligns its texts to the right; a left-to-right one says `dir="ltr"` (it may sit in a
    right-to-left host message)."""
    html = _block_in(locale, block, translated)
    first = html[: html.index(">")]
    assert f'lang="{locale}"' in first and f'dir="{direction}"' in first, first
    start = "right" if direction == "rtl" else "left"
    heading = re.search(r'text-align:(\w+);"><h2', html)
    assert heading is not None and heading.group(1) == start
    if block == "cart_reminder":  # the lines' texts, and the subtotal at the end
        assert re.search(r"vertical-align:top;text-align:(\w+);", html).group(1) == start  # type: ignore[union-attr]
        end = "left" if direction == "rtl" else "right"
        assert re.search(r"text-align:(\w+);font-size:16px", html).group(1) == end  # type: ignore[union-attr]


@pytest.mark.parametrize("block", ["recommendations", "cart_reminder"])
@pytest.mark.parametrize(
    ("locale", "lang"),
    [
        *[("ar", "en"), ("he-IL", "en"), ("az-Arab", "en"), ("az-Latn", "en"), ("fr-FR", "en")],
        *[("de", "de"), ("pl-PL", "pl-PL"), ("en-GB", "en-GB")],
    ],
)
def test_a_block_whose_texts_fell_back_to_english_says_english_left_to_right(
    block: str, locale: str, lang: str
) -> None:
    """A locale without texts (no `ar.json`) is written in English: the block said `lang="ar"
    dir="rtl"` over English texts (a screen reader read them as Arabic, the layout mirrored).
    It says the language its texts are in, `en`, and `ltr`; a translated one keeps its tag."""
    html = _block_in(locale, block)
    first = html[: html.index(">")]
    assert f'lang="{lang}"' in first and 'dir="ltr"' in first, first
    heading = re.search(r'text-align:(\w+);"><h2', html)
    assert heading is not None and heading.group(1) == "left"
    if lang == "en":
        assert "Recommended for you" in html or "Still in your cart" in html


def test_a_translated_right_to_left_block_keeps_its_tag_and_direction(
    translated: Renderer,
) -> None:
    html = _block_in("ar-EG", "recommendations", translated)
    first = html[: html.index(">")]
    assert 'lang="ar-EG"' in first and 'dir="rtl"' in first, first
    assert TRANSLATED["ar"] in html


def test_a_block_without_a_locale_keeps_its_hosts_direction() -> None:
    html = _block_in(None)
    first = html[: html.index(">")]
    assert "lang=" not in first and "dir=" not in first
