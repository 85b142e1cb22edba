"""Locales and currencies (issue 19 item 6): message files, price formats, the user's currency.
Pure (no I/O but reading the message files once, at start-up, as the templates are read).

- Texts: `templates/i18n/<tag>.json`, one flat JSON object of message key -> text per language
  (`en.json`, `pl.json`, `de.json` shipped; a shop adds a language by adding a file to its template
  directory's `i18n/`). `Messages.for_locale("pl-PL")` merges `en`, then `pl`, then `pl-PL`: a key
  missing in a language falls back to English, never an error.
- Prices: `format_price(12.5, "EUR", "de-DE")` -> `12,50 €` (a small table of the languages and
  currencies Persona ships; any other language is written as English, any other currency by its
  ISO code: `12.50 XYZ`).
- The user's currency comes from the region of their locale (`pl-PL` -> PLN, `de-DE` -> EUR,
  `en-GB` -> GBP, `en-US` -> USD; a bare `pl` or `de` -> PLN or EUR); a product priced in it
  (`Product.prices`) is shown in it, any other in its own `price`/`currency`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from engine.catalog import Product
from engine.params import InvalidParam, build
from engine.text import BadJson, outside_json, text_problem

DEFAULT_LANGUAGE = "en"
MESSAGES_DIR = "i18n"  # inside a template directory
MAX_MESSAGES_FILE = 64 * 1024  # bytes of one message file
MAX_MESSAGES = 200  # keys of one message file
MAX_MESSAGE = 500  # characters of one text
MAX_LOCALE = 64  # characters of a stored locale tag (as engine.params.MAX_LOCALE)
NBSP = "\u00a0"  # between amount and symbol, and pl's thousands: a price never breaks a line

# Regions (ISO 3166) -> their currency; a language without region -> its usual currency.
REGION_CURRENCY: dict[str, str] = {
    **dict.fromkeys(
        ("AT", "BE", "CY", "DE", "EE", "ES", "FI", "FR", "GR", "HR", "IE", "IT", "LT", "LU"),
        "EUR",
    ),
    **dict.fromkeys(("LV", "MT", "NL", "PT", "SI", "SK"), "EUR"),
    "PL": "PLN",
    "GB": "GBP",
    "US": "USD",
    "CH": "CHF",
    "CZ": "CZK",
}
LANGUAGE_CURRENCY: dict[str, str] = {"pl": "PLN", "de": "EUR"}
SYMBOLS: dict[str, str] = {"GBP": "£", "EUR": "€", "USD": "$", "PLN": "zł"}
# ISO 4217 minor units of the currencies that do not have two decimals (yen are never written
# `1,000.00`, a Kuwaiti dinar price of 1.234 is not 1.23); every other code has 2.
MINOR_UNITS: dict[str, int] = {
    **dict.fromkeys(
        ("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI"), 0
    ),
    **dict.fromkeys(("VND", "VUV", "XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
    "CLF": 4,
    "UYW": 4,
}


# Right-to-left writing (CLDR's character order): the scripts, and the languages usually written
# in one when the tag names no script (`az-Arab` is right-to-left, `az` and `ug-Latn` are not).
RTL_SCRIPTS = frozenset({"Adlm", "Arab", "Hebr", "Mand", "Nkoo", "Rohg", "Syrc", "Thaa", "Yezi"})
RTL_LANGUAGES = frozenset(
    {"ar", "arc", "ckb", "dv", "fa", "he", "iw", "ks", "ku", "lrc", "mzn", "ps", "sd", "syr"}
    | {"ug", "ur", "yi"}
)


class MessagesError(ValueError):
    """A message file that is not a flat JSON object of short texts; the message names it."""


@dataclass(frozen=True, slots=True)
class PriceStyle:
    decimal: str
    group: str
    symbol_first: bool  # `£12.50` rather than `12,50 €`
    symbols: frozenset[str]  # the currencies written with their symbol, the others by code
    min_group: int = 1  # 2: no separator in 4-digit amounts (Polish writes 1234,50)


EN_STYLE = PriceStyle(".", ",", True, frozenset({"GBP", "EUR", "USD"}))
STYLES: dict[str, PriceStyle] = {
    "en": EN_STYLE,
    "de": PriceStyle(",", ".", False, frozenset(SYMBOLS)),
    "pl": PriceStyle(",", NBSP, False, frozenset(SYMBOLS), min_group=2),
}


def language_of(locale: str) -> str:
    """The primary language subtag: `pl-PL` -> `pl`; `""` -> `en`."""
    return locale.split("-", 1)[0].lower() or DEFAULT_LANGUAGE


def direction(locale: str) -> str:
    """`rtl` for a tag written right to left (`ar`, `he-IL`, `fa`, `az-Arab`), else `ltr`: its
    script subtag when it has one, else its language."""
    language, script, _ = subtags(locale)
    if script is not None:
        return "rtl" if script in RTL_SCRIPTS else "ltr"
    return "rtl" if language.lower() in RTL_LANGUAGES else "ltr"


def valid_locale(value: Any) -> str | None:
    """A BCP 47 tag in canonical case (engine.params rules), or None when `value` is not one."""
    if not isinstance(value, str) or not value or len(value) > MAX_LOCALE:
        return None
    try:
        return build({"locale": value}).locale
    except InvalidParam:
        return None


def fallbacks(locale: str) -> list[str]:
    """The tags to look a text up under, most specific first, English last:
    `pl-PL` -> [`pl-PL`, `pl`, `en`]; `zh-Hant-TW` -> [`zh-Hant-TW`, `zh-Hant`, `zh`, `en`]."""
    parts = locale.split("-") if locale else []
    chain = ["-".join(parts[:n]) for n in range(len(parts), 0, -1)]
    return [*dict.fromkeys([*chain, DEFAULT_LANGUAGE])]


# -- texts -----------------------------------------------------------------------------------------


class Messages:
    """The message files of a template directory (and the packaged ones it does not replace)."""

    def __init__(self, catalogs: dict[str, dict[str, str]]) -> None:
        self.catalogs = catalogs
        self._merged: dict[str, dict[str, str]] = {}

    @classmethod
    def load(cls, *directories: Path) -> Messages:
        """The `i18n/*.json` files of the directories, key by key, the first directory's
        winning (a shop's file overrides the texts it has). Raises MessagesError naming a bad
        file."""
        catalogs: dict[str, dict[str, str]] = {}
        for directory in dict.fromkeys(reversed(directories)):
            for path in sorted((directory / MESSAGES_DIR).glob("*.json")):
                catalogs.setdefault(_tag_of(path), {}).update(read_messages(path))
        if DEFAULT_LANGUAGE not in catalogs:
            raise MessagesError(f"no {MESSAGES_DIR}/{DEFAULT_LANGUAGE}.json message file")
        return cls(catalogs)

    @property
    def languages(self) -> list[str]:
        return sorted(self.catalogs)

    def for_locale(self, locale: str) -> dict[str, str]:
        """The texts for `locale`: English overlaid by each more specific file that exists.
        The same dict for the same locale (do not change it)."""
        merged = self._merged.get(locale)
        if merged is None:
            merged = {}
            for tag in reversed(fallbacks(locale)):
                merged.update(self.catalogs.get(tag, {}))
            if len(self._merged) < 1000:  # tags are bounded and few in practice
                self._merged[locale] = merged
        return merged

    def lang_of(self, locale: str) -> str:
        """The language a block in `locale` is written in, for its `lang` (and `dir`): `locale`
        itself when a message file of its chain (`fallbacks`, English aside) has texts, else
        English (`en`): a locale without texts (`ar` with no `ar.json`) is written in English;
        "" for "" (no locale)."""
        if not locale or language_of(locale) == DEFAULT_LANGUAGE:
            return locale
        if any(self.catalogs.get(tag) for tag in fallbacks(locale)[:-1]):
            return locale
        return DEFAULT_LANGUAGE


def _tag_of(path: Path) -> str:
    tag = valid_locale(path.stem)
    if tag is None:
        raise MessagesError(f"message file {path}: {path.stem!r} is not a BCP 47 language tag")
    return tag


def read_messages(path: Path) -> dict[str, str]:
    """One message file: a JSON object of at most MAX_MESSAGES key -> text (MAX_MESSAGE chars)."""
    raw = path.read_bytes()
    if len(raw) > MAX_MESSAGES_FILE:
        raise MessagesError(f"message file {path} is larger than {MAX_MESSAGES_FILE} bytes")
    try:
        data = outside_json(raw)
    except BadJson as exc:
        raise MessagesError(f"message file {path} is not JSON: {exc}") from None
    if not isinstance(data, dict) or len(data) > MAX_MESSAGES:
        raise MessagesError(f"message file {path} must be an object of at most {MAX_MESSAGES}")
    for key, text in data.items():
        problem = _message_problem(key, text)
        if problem:
            raise MessagesError(f"message file {path}: {key[:64]!r} {problem}")
    return data


def _message_problem(key: str, text: Any) -> str | None:
    if not key.isidentifier() or len(key) > 64:
        return "is not a key of letters, digits and _ (1..64)"
    if not isinstance(text, str) or len(text) > MAX_MESSAGE:
        return f"must be a text of at most {MAX_MESSAGE} characters"
    return text_problem(text) if text else None


# -- prices ----------------------------------------------------------------------------------------


def format_price(price: float, currency: str, locale: str = "") -> str:
    """`price` for people in `locale`'s style: en `£12.50` `€12.50` `$12.50`, de `12,50 €`,
    pl `12,50 zł`; a currency without a symbol by its code (`12.50 XYZ`, `12,50 XYZ`). With the
    currency's minor units (`1,000 JPY`, `1.234 KWD`), rounded half up (2.675 -> 2.68)."""
    style = STYLES.get(language_of(locale), EN_STYLE)
    amount = _amount(rounded(price, currency), minor_units(currency), style)
    if currency not in style.symbols:
        return f"{amount} {currency}" if style is EN_STYLE else f"{amount}{NBSP}{currency}"
    symbol = SYMBOLS[currency]
    return f"{symbol}{amount}" if style.symbol_first else f"{amount}{NBSP}{symbol}"


def minor_units(currency: str) -> int:
    """The decimals `currency` is written with (ISO 4217): 0 for JPY, 3 for KWD, else 2."""
    return MINOR_UNITS.get(currency, 2)


def rounded(amount: float | Decimal, currency: str) -> Decimal:
    """`amount` to `currency`'s minor units, half up, from its shortest decimal form (the float
    2.675 is 2.67499999... in binary; the shop wrote 2.675 and means 2.68)."""
    exact = amount if isinstance(amount, Decimal) else Decimal(repr(float(amount)))
    out = exact.quantize(Decimal(1).scaleb(-minor_units(currency)), rounding=ROUND_HALF_UP)
    return out if out else abs(out)  # never "-0.00"


def line_total(price: float, quantity: int, currency: str) -> float:
    """`quantity` times `price`, to `currency`'s minor units (2 x 1.234 KWD = 2.468)."""
    return float(rounded(Decimal(repr(float(price))) * quantity, currency))


def total(amounts: Iterable[float], currency: str) -> float:
    """The sum of amounts in one currency, exact in decimal, to its minor units."""
    return float(rounded(sum((Decimal(repr(float(a))) for a in amounts), Decimal(0)), currency))


def _amount(amount: Decimal, digits: int, style: PriceStyle) -> str:
    text = f"{amount:,.{digits}f}"  # `1,234.50`: swap in the style's separators
    if style.min_group > 1 and abs(amount) < 10 ** (3 * style.min_group - 2):
        text = text.replace(",", "")
    return text.replace(",", "\x00").replace(".", style.decimal).replace("\x00", style.group)


# -- currencies ------------------------------------------------------------------------------------


def currency_of(locale: str) -> str | None:
    """The currency of the locale's region (`pl-PL` -> PLN), else of its language when it has
    one usual currency (`pl` -> PLN, `de` -> EUR); None otherwise (`en`, `""`). Only the region
    subtag counts, never a two-letter subtag of an extension or private use (`de-x-us` -> EUR)."""
    region = region_of(locale)
    if region is not None:
        return REGION_CURRENCY.get(region)
    return LANGUAGE_CURRENCY.get(language_of(locale)) if locale else None


def region_of(locale: str) -> str | None:
    """The region subtag of a tag (`zh-Hant-TW` -> `TW`, `es-419` -> `419`), or None: it
    follows the language, its extended language subtags and its script, before any variant,
    extension (`-u-`) or private use (`-x-`)."""
    return subtags(locale)[2]


def subtags(locale: str) -> tuple[str, str | None, str | None]:
    """A tag's language, script (title case) and region (upper case) subtags, None where it has
    none: after the language come its extended language subtags (3 letters), then a script (4
    letters), then a region (2 letters or 3 digits), before any variant, extension (`-u-`) or
    private use (`-x-`), whose subtags are never read as these (`de-x-us` has no region)."""
    parts = locale.split("-")
    script: str | None = None
    for part in parts[1:] if len(parts[0]) > 1 else ():
        if (len(part) == 2 and part.isalpha()) or (len(part) == 3 and part.isdigit()):
            return parts[0], script, part.upper()
        if script is None and len(part) == 4 and part.isalpha():
            script = part.title()
        elif not (script is None and len(part) == 3 and part.isalpha()):  # not an extlang
            break
    return parts[0], script, None


def local_price(product: Product, price: float, currency: str | None) -> tuple[float, str]:
    """What a block shows for `product` whose own price is `price` (the sale price while one
    runs): its price in `currency` when the catalog gives one, else `price` in its own currency.
    Prices in other currencies are list prices: a sale applies to `price`/`currency` only."""
    if currency is not None and currency != product.currency and currency in product.prices:
        return product.prices[currency], currency
    return price, product.currency
