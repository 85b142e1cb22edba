"""A strict Jinja2 sandbox for templates that come from outside: senders' e-mail templates
(`POST /v1/render`) and shops' block templates (`engine.blocks.Renderer`). Pure (stdlib, jinja2).

Templates see data, never objects:
- attributes are an allow-list per type (`ALLOWED_ATTRIBUTES`: harmless `str`/`Markup` methods,
  never `format`/`format_map`; `items`/`keys`/`values`/`get` of mappings; the documented `loop`
  fields; what a `namespace()` holds; `grouper`/`list` of `groupby` groups); everything else is
  refused, and only those methods, macros, `loop(...)`, `joiner()` and the globals below can be
  called;
- globals: a bounded `range`, `dict`, `namespace`, `cycler`, `joiner` (no `lipsum`);
- every value a template turns into text (`{{ }}`, `~`, `%`, filters) must be plain data (strings,
  numbers, booleans, None, lists, tuples, dicts, ranges), so no object repr ever comes out; filters
  are an allow-list too (`pprint` is not on it) and return lists, never generators.

Templates cannot exhaust the process. Per render (`Limits`, one `Budget`): CPU time (checked at
loop iterations, calls, filters and operators), steps (loop iterations + calls + filters +
operators), output bytes, characters built in intermediate strings and call depth (macros,
recursive loops). Whatever a deadline cannot interrupt (one C-level operation) is bounded before
it runs: `**` and `*` on integers (`MAX_INT_BITS`), `*` and `+` building strings or lists
(`MAX_STR`, `MAX_ITEMS`), `%`/`format` widths (`MAX_WIDTH`) and output (`percent_size`: a
mapping key named in every conversion multiplies a value), `center`, `indent`, `wordwrap`,
`replace`, `join`, `round` (its precision), `tojson` (its indent), `batch`, `slice`, `sum`,
`list`, `range` and any joined buffer (macros, `set` blocks). A refusal raises
`BudgetExceeded` (or jinja2's `SecurityError`) out of the render.

`StrictEnvironment.render(template, context, budget)` renders under a budget; a plain
`Template.render()` gets a fresh `Budget(env.limits)`. Values computed while rendering
(`LazyMapping`, e.g. the blocks of a message) are computed outside the template's budget; their
CPU time, and the garbage collector's while a template renders, is not charged to it.
"""

from __future__ import annotations

import functools
import gc
import math
import operator
import re
import time
import types
from collections.abc import Callable, ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, fields, replace
from itertools import islice
from typing import Any

from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.filters import FILTERS as DEFAULT_FILTERS
from jinja2.runtime import Context, LoopContext, Macro, Undefined, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Cycler, Joiner, Namespace, pass_context
from jinja2.visitor import NodeTransformer
from markupsafe import Markup

MAX_STR = 1 << 20  # characters of any one string a template builds
MAX_ITEMS = 10_000  # items of any list, tuple or range a template builds
MAX_INT_BITS = 4096  # bits of any integer a template computes (about 1,233 digits)
MAX_WIDTH = 1000  # field width or precision in `%` and `|format`
MAX_ROUND_DIGITS = MAX_INT_BITS * 3 // 10  # `round`'s precision: 10**it within MAX_INT_BITS
MAX_SLOW_INPUT = 32 * 1024  # characters into the pure-Python filters (wordwrap, urlize)
MAX_NODES = 100_000  # values visited when checking that a value is plain data
MAX_DEPTH = 32  # nesting of plain data, and of calls (macros, recursive loops)
CLOCK_EVERY = 8  # steps between two reads of the CPU clock (a read costs ~1-2 us)

LOOP_FILTER = "persona loop"  # internal filter names: a template cannot spell them
CONCAT_FILTER = "persona concat"


@dataclass(frozen=True)
class Limits:
    """What one render may use. Defaults: a message of a sender's template.

    Every field but `depth` is a total: a request's budget adds, subtracts and shares them
    field by field (`field_wise`, `part`); a total's metadata names the `Budget` attribute that
    counts what one render used of it (`used`) and, for a fractional one, the units it is split
    in (`per`: 1000, a share of CPU seconds is floored to the millisecond)."""

    cpu_seconds: float = field(default=0.05, metadata={"used": "cpu_used", "per": 1000})
    # loop iterations + calls + filters + intercepted operators
    steps: int = field(default=20_000, metadata={"used": "steps"})
    # UTF-8 bytes of the rendered text
    output_bytes: int = field(default=1 << 20, metadata={"used": "output"})
    # characters of every intermediate string built
    built_chars: int = field(default=16 << 20, metadata={"used": "built"})
    depth: int = MAX_DEPTH  # nested macro calls and recursive loops

    def amounts(self) -> tuple[float, ...]:
        """The totals' values, in field order."""
        return tuple(getattr(self, name) for name in TOTALS)

    def part(self, fraction: float) -> Limits:
        """`fraction` of each total, floored (to its `per`-th part, else to a whole number);
        this depth."""
        parts: dict[str, Any] = {}
        for total in _TOTAL_FIELDS:
            value, per = getattr(self, total.name) * fraction, total.metadata.get("per")
            parts[total.name] = math.floor(value * per) / per if per else math.floor(value)
        return replace(self, **parts)


_TOTAL_FIELDS = tuple(f for f in fields(Limits) if "used" in f.metadata)
TOTALS = tuple(f.name for f in _TOTAL_FIELDS)  # the names of Limits' totals
# No total used: 0 of each total's type (0.0 CPU seconds, 0 steps, ...); the default depth.
NOTHING = Limits(**{name: type(getattr(Limits(), name))(0) for name in TOTALS})


def field_wise(op: Callable[..., Any], *limits: Limits, depth: int) -> Limits:
    """The Limits whose each total is `op` of `limits`' values of it (in their order), and
    whose depth is `depth`."""
    return Limits(
        depth=depth, **{name: op(*(getattr(each, name) for each in limits)) for name in TOTALS}
    )


MESSAGE_LIMITS = Limits()  # one message of POST /v1/render
REQUEST_LIMITS = Limits(  # the sum over one POST /v1/render
    cpu_seconds=4.0, steps=2_000_000, output_bytes=32 << 20, built_chars=256 << 20
)
REQUEST_TIME_SHARE = 0.6  # of the request timeout (wall clock) for rendering one request


def describe_limits() -> str:
    """The render budgets in words (the OpenAPI description and docs/api.md)."""
    m, r = MESSAGE_LIMITS, REQUEST_LIMITS
    return (
        f"Per message: {m.cpu_seconds * 1000:g} ms of CPU, {m.steps:,} loop iterations and "
        f"calls, {m.output_bytes >> 20} MiB of output, {m.built_chars >> 20} MiB of "
        f"intermediate strings, calls nested {m.depth} deep; strings of at most "
        f"{MAX_STR >> 20} MiB, lists and ranges of at most {MAX_ITEMS:,} items, integers of "
        f"at most {MAX_INT_BITS} bits, format widths of at most {MAX_WIDTH}. Per request: "
        f"{r.cpu_seconds:g} s of CPU, {r.steps:,} steps, {r.output_bytes >> 20} MiB of output."
    )


class BudgetExceeded(SecurityError):
    """A render used more than its `Limits` allow (or would have, for C-level operations).
    `output`: it was its text that passed `Limits.output_bytes` (the data may be too large for
    it: a block then renders fewer items, engine/blocks.py). `request`: the message was not
    started, its request's time or rendering budget being spent (`RequestBudget.message`): no
    failure of the template (`request_spent`)."""

    def __init__(self, message: str, *, output: bool = False, request: bool = False) -> None:
        super().__init__(message)
        self.output = output
        self.request = request


def request_spent(exc: BaseException) -> bool:
    """Whether `exc` refused a message its request had no time or budget left for."""
    return isinstance(exc, BudgetExceeded) and exc.request


def output_too_large(exc: BaseException) -> bool:
    """Whether `exc` is a render's text passing its `Limits.output_bytes`."""
    return isinstance(exc, BudgetExceeded) and exc.output


_CURRENT: ContextVar[Budget | None] = ContextVar("persona_template_budget", default=None)


class Budget:
    """The resources left to one render. `activate()` makes it the one templates charge."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.steps = 0
        self.output = 0
        self.built = 0
        self.depth = 0
        self.cpu_used = 0.0
        self.excluded = 0.0  # CPU seconds not charged: trusted code, the garbage collector
        self._deadline = float("inf")
        self._gc_started: float | None = None

    def used(self) -> Limits:
        """What this render used of each total (`Limits` metadata `used`); its limits' depth."""
        used = {f.name: getattr(self, f.metadata["used"]) for f in _TOTAL_FIELDS}
        return Limits(depth=self.limits.depth, **used)

    @contextmanager
    def activate(self) -> Iterator[Budget]:
        started = time.thread_time()
        excluded = self.excluded
        self._deadline = started + self.limits.cpu_seconds
        token = _CURRENT.set(self)
        try:
            yield self
        finally:
            _CURRENT.reset(token)
            self.cpu_used += time.thread_time() - started - (self.excluded - excluded)

    def exclude(self, seconds: float) -> None:
        """Do not charge `seconds` of CPU time spent meanwhile to the template."""
        self.excluded += seconds
        self._deadline += seconds

    def charge(self, steps: int = 1) -> None:
        self.steps += steps
        if self.steps > self.limits.steps:
            raise BudgetExceeded(f"more than {self.limits.steps} loop iterations and calls")
        if self.steps % CLOCK_EVERY == 0:
            self.check_clock()

    def check_clock(self) -> None:
        if time.thread_time() > self._deadline:
            ms = round(self.limits.cpu_seconds * 1000)
            raise BudgetExceeded(f"more than {ms} ms of CPU time")

    def build(self, chars: int) -> None:
        self.built += chars
        if self.built > self.limits.built_chars:
            raise BudgetExceeded(f"more than {self.limits.built_chars} characters built")
        if chars > 65_536:
            self.check_clock()


def current() -> Budget:
    budget = _CURRENT.get()
    if budget is None:
        raise SecurityError("a template runs only under a budget (StrictEnvironment.render)")
    return budget


@contextmanager
def outside_budget() -> Iterator[None]:
    """Run trusted code (e.g. a block computed for a template) without the template's budget:
    its CPU time is not charged either."""
    budget = _CURRENT.get()
    token = _CURRENT.set(None)
    started = time.thread_time()
    try:
        yield
    finally:
        _CURRENT.reset(token)
        if budget is not None:
            budget.exclude(time.thread_time() - started)


def _collecting(phase: str, info: dict[str, int]) -> None:
    """gc callback: a collection while a template renders is not the template's CPU time (a
    full collection in a large process takes tens of milliseconds: a message's whole budget)."""
    budget = _CURRENT.get()
    if budget is None:
        return
    if phase == "start":
        budget._gc_started = time.thread_time()
    elif budget._gc_started is not None:
        budget.exclude(time.thread_time() - budget._gc_started)
        budget._gc_started = None


gc.callbacks.append(_collecting)


class LazyMapping(Mapping[str, Any]):
    """A read-only mapping whose values are computed on first use, outside the template's budget.
    A template reaches nothing but `[name]` / `.name` (and the mapping methods)."""

    __slots__ = ("_compute", "_names", "_values")

    def __init__(self, names: Iterable[str], compute: Callable[[str], Any]) -> None:
        self._names = tuple(names)
        self._compute = compute
        self._values: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if not isinstance(name, str) or name not in self._names:
            raise KeyError("no such name")
        if name not in self._values:
            with outside_budget():
                self._values[name] = self._compute(name)
        return self._values[name]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return repr({name: str(value) for name, value in self.items()})


# -- plain data ------------------------------------------------------------------------------------

_VIEWS = (list, tuple, KeysView, ValuesView, ItemsView)


def _kind(value: Any) -> str:
    return type(value).__name__


def _scalar_size(value: Any) -> int | None:
    """The text size of a plain scalar (an upper bound), None if `value` is not one."""
    if isinstance(value, str):
        return len(value) + 2
    if isinstance(value, bool) or value is None:
        return 5
    if isinstance(value, int):
        return value.bit_length() // 3 + 2
    if isinstance(value, float):
        return 24
    if isinstance(value, (Undefined, range)):
        return 40
    return None


_FAST = frozenset({str, int, float, bool, type(None)})


def check_plain(value: Any, limit: int = MAX_STR) -> int:
    """The size of `value` as text (an upper bound); SecurityError if it holds anything but plain
    data, nests deeper than MAX_DEPTH, or is larger than `limit` characters."""
    if type(value) in _FAST:
        size = _scalar_size(value) or 0
        if size > limit:
            raise BudgetExceeded(f"a value larger than {limit} characters")
        return size
    size, seen = 0, 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        seen += 1
        if seen > MAX_NODES or depth > MAX_DEPTH:
            raise SecurityError("the value is too large or too deeply nested for a template")
        scalar = _scalar_size(item)
        if scalar is not None:
            size += scalar
        elif isinstance(item, Mapping):
            size += 2 + 4 * len(item)
            stack.extend((part, depth + 1) for pair in item.items() for part in pair)
        elif isinstance(item, _VIEWS):
            size += 40 + 2 * len(item)
            stack.extend((part, depth + 1) for part in item)
        else:
            raise SecurityError(f"a template cannot use a {_kind(item)!r} value as data")
        if size > limit:
            raise BudgetExceeded(f"a value larger than {limit} characters")
    return size


def finalize(value: Any) -> Any:
    """Every `{{ }}` value: plain data only."""
    check_plain(value)
    return value


def materialize(value: Any) -> Any:
    """An iterator (generator, reversed, map, ...) as a list of at most MAX_ITEMS items."""
    if not isinstance(value, Iterator):
        return value
    items = list(islice(value, MAX_ITEMS + 1))
    if len(items) > MAX_ITEMS:
        raise BudgetExceeded(f"more than {MAX_ITEMS} items")
    return items


def bounded(value: Any, budget: Budget) -> Any:
    """`value` (a result a template gets) if within the size bounds: strings (charged as built),
    lists and tuples, integers."""
    if isinstance(value, str):
        if len(value) > MAX_STR:
            raise BudgetExceeded(f"a string longer than {MAX_STR} characters")
        budget.build(len(value))
    elif isinstance(value, (list, tuple)) and len(value) > MAX_ITEMS:
        raise BudgetExceeded(f"more than {MAX_ITEMS} items")
    elif isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise BudgetExceeded(f"an integer larger than {MAX_INT_BITS} bits")
    return value


def plain_data(value: Any, depth: int = 0) -> Any:
    """Outside data for a template (e.g. a sender's merge fields), checked: JSON values only
    (str keys), at most MAX_DEPTH deep, MAX_ITEMS per list or object, MAX_STR per string;
    ValueError otherwise."""
    if depth > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH}")
    if value is None or isinstance(value, (str, bool, int, float)):
        if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
            raise ValueError(f"an integer larger than {MAX_INT_BITS} bits")
        if isinstance(value, str) and len(value) > MAX_STR:
            raise ValueError(f"a string longer than {MAX_STR} characters")
        return value
    if isinstance(value, (list, tuple)) and len(value) <= MAX_ITEMS:
        return [plain_data(v, depth + 1) for v in value]
    if isinstance(value, dict) and len(value) <= MAX_ITEMS:
        if not all(isinstance(k, str) for k in value):
            raise ValueError("object keys must be strings")
        return {k: plain_data(v, depth + 1) for k, v in value.items()}
    raise ValueError(f"a {_kind(value)!r} is not a JSON value (or is too long)")


_REPR = re.compile(r"<[^<>]*>")
# Jinja names an undefined attribute's owner by its qualified type ('pkg.module.Class object')
_TYPE_NAME = re.compile(r"'[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)+ object'")


def describe_error(exc: BaseException, limit: int = 300) -> str:
    """`Type: message` for a caller, with anything that looks like an object repr removed."""
    text = _TYPE_NAME.sub("'object'", _REPR.sub("<...>", f"{type(exc).__name__}: {exc}"))
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- C-level operations, bounded before they run ---------------------------------------------------


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _size(value: Any) -> int:
    return len(value) if isinstance(value, (str, list, tuple)) else 0


def _cap(value: Any) -> int:
    return MAX_STR if isinstance(value, str) else MAX_ITEMS


def check_add(left: Any, right: Any) -> None:
    if isinstance(left, (str, list, tuple)) and _size(left) + _size(right) > _cap(left):
        raise BudgetExceeded("a string or list too long")


def check_mul(left: Any, right: Any) -> None:
    if _int(left) and not _int(right):
        left, right = right, left
    if isinstance(left, (str, list, tuple)) and _int(right):
        if len(left) * max(right, 0) > _cap(left):
            raise BudgetExceeded("a string or list too long")
    elif _int(left) and _int(right) and left.bit_length() + right.bit_length() > MAX_INT_BITS:
        raise BudgetExceeded(f"an integer larger than {MAX_INT_BITS} bits")


def check_pow(left: Any, right: Any) -> None:
    big = _int(left) and _int(right) and right > 0 and abs(left) > 1
    if big and left.bit_length() * right > MAX_INT_BITS:
        raise BudgetExceeded(f"an integer larger than {MAX_INT_BITS} bits")


_PERCENT_SPEC = set("#0- +123456789.*hlL")


def check_percent(fmt: str) -> None:
    """Refuse `%` conversions with a `*` or a width or precision above MAX_WIDTH."""
    i, n = 0, len(fmt)
    while (i := fmt.find("%", i) + 1) > 0:
        if i < n and fmt[i] == "(":
            depth = 0
            while i < n:
                depth += {"(": 1, ")": -1}.get(fmt[i], 0)
                i += 1
                if depth == 0:
                    break
        j = i
        while j < n and fmt[j] in _PERCENT_SPEC:
            j += 1
        spec = fmt[i:j]
        if "*" in spec or any(int(d) > MAX_WIDTH for d in re.findall(r"\d+", spec)):
            raise BudgetExceeded(f"a format width or precision above {MAX_WIDTH}")
        i = j + 1


_CONVERSION = re.compile(  # %(key)flags width.precision length conversion
    r"%(?:\(([^()]*(?:\([^()]*\)[^()]*)*)\))?([#0\- +]*)([\d*]*)(?:\.([\d*]*))?[hlL]?(.)?"
)


def _text_bound(value: Any, conversion: str) -> int:
    """At most how many characters one `%` conversion of `value` writes (before its width)."""
    if isinstance(value, str) and conversion == "s":
        return len(value)
    if isinstance(value, float):  # `%f`, `%d` or `%o` of 1e308 write its 309 to 342 digits
        return (int(abs(value)).bit_length() if math.isfinite(value) else 0) // 3 + 40
    if isinstance(value, int):
        return check_plain(value) + 32
    return 10 * check_plain(value) + 32  # repr or str of data: `\U0001f600` for one character


def percent_size(fmt: str, args: Any) -> int:
    """An upper bound of what the conversions of `fmt % args` write, computed without building
    it: a mapping key named in every conversion, or a width on each, multiplies the output of
    one C call."""
    size, taken = 0, 0
    named: dict[tuple[str, str], int] = {}  # a key's bound, computed once however often named
    for match in _CONVERSION.finditer(fmt):
        key, _, width, precision, conversion = match.groups()
        if conversion is None or conversion == "%":
            continue
        if key is not None:
            if (key, conversion) not in named:
                value = args.get(key) if isinstance(args, Mapping) else args
                named[key, conversion] = _text_bound(value, conversion)
            size += named[key, conversion]
        elif isinstance(args, tuple):
            size += _text_bound(args[taken] if taken < len(args) else None, conversion)
            taken += 1
        else:
            size += _text_bound(args, conversion)
        size += sum(int(n) for n in (width, precision) if n and n.isdigit())
        if size > MAX_STR:
            break  # enough to refuse it
    return size


def check_format(fmt: str, args: Any) -> None:
    """`fmt % args` within MAX_WIDTH and MAX_STR, refused before it runs (a `Markup` format
    escapes what it inserts: `"` becomes `&#34;`)."""
    check_percent(fmt)
    check_plain(args)
    escaped = 5 if isinstance(fmt, Markup) else 1
    _at_most(len(fmt) + escaped * percent_size(fmt, args), MAX_STR, "a formatted text")


def check_mod(left: Any, right: Any) -> None:
    if isinstance(left, str):
        check_format(left, right)


BINOP_CHECKS: dict[str, Callable[[Any, Any], None]] = {
    "+": check_add,
    "*": check_mul,
    "**": check_pow,
    "%": check_mod,
}


# -- filters ---------------------------------------------------------------------------------------


def _width(value: Any) -> int:
    return len(value) if isinstance(value, str) else int(value)


def _at_most(n: int, limit: int, what: str) -> None:
    if n > limit:
        raise BudgetExceeded(f"{what} above {limit}")


def pre_center(value: Any, width: Any = 80) -> None:
    _at_most(int(width), MAX_STR, "a width")


def pre_indent(value: Any, width: Any = 4, *args: Any, **kwargs: Any) -> None:
    lines = str(value).count("\n") + 1
    _at_most(_width(width) * lines + len(str(value)), MAX_STR, "an indented text")


def pre_wordwrap(value: Any, width: Any = 79, *args: Any, **kwargs: Any) -> None:
    text = str(value)
    _at_most(len(text), MAX_SLOW_INPUT, "a text to wrap")
    wrap = kwargs.get("wrapstring", args[1] if len(args) > 1 else None) or "\n"
    _at_most(len(str(wrap)) * (len(text) + 1), MAX_STR, "a wrapped text")


def pre_urlize(value: Any, *args: Any, **kwargs: Any) -> None:
    _at_most(len(str(value)), MAX_SLOW_INPUT, "a text to urlize")


def pre_format(value: Any, *args: Any, **kwargs: Any) -> None:
    check_format(value if isinstance(value, str) else str(value), kwargs or args)


def pre_round(value: Any, precision: Any = 0, method: Any = "common") -> None:
    """`round` computes 10**precision in one C call (an integer's `round` with a negative
    precision, `floor`/`ceil` with any): bound it as `**` is."""
    _at_most(abs(int(precision)), MAX_ROUND_DIGITS, "a rounding precision")


def pre_replace(value: Any, old: Any, new: Any, count: Any = None) -> None:
    text, old, new = str(value), str(old), str(new)
    n = text.count(old) if old else len(text) + 1
    if count is not None:
        n = min(n, max(int(count), 0))
    _at_most(len(text) + n * max(len(new) - len(old), 0), MAX_STR, "a replaced text")


def pre_tojson(value: Any, indent: Any = None) -> None:
    """json.dumps writes a newline and `indent` times the depth before every item: bound that."""
    width = len(indent) if isinstance(indent, str) else max(int(indent or 0), 0)
    if not width:
        return
    extra, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            stack.extend((part, depth + 1) for part in item.values())
            extra += (len(item) + 1) * (1 + width * depth)
        elif isinstance(item, _VIEWS):
            stack.extend((part, depth + 1) for part in item)
            extra += (len(item) + 1) * (1 + width * depth)
        _at_most(extra, MAX_STR, "an indented JSON text")
    _at_most(check_plain(value) + extra, MAX_STR, "an indented JSON text")


def pre_join(value: Any, d: Any = "", attribute: Any = None) -> None:
    _at_most(len(str(d)) * _length(value), MAX_STR, "a joined text")


def pre_batch(value: Any, linecount: Any, fill_with: Any = None) -> None:
    _at_most(int(linecount), MAX_ITEMS, "a batch size")
    _sequence(value)


def pre_slice(value: Any, slices: Any, fill_with: Any = None) -> None:
    _at_most(int(slices), MAX_ITEMS, "a number of slices")
    _sequence(value)


def pre_sum(value: Any, attribute: Any = None, start: Any = 0) -> None:
    if not isinstance(start, (int, float)):
        raise SecurityError("sum adds numbers only")
    _sequence(value)


def _length(value: Any) -> int:
    try:
        return len(value)
    except TypeError:
        return 0


def _sequence(value: Any, *args: Any, **kwargs: Any) -> None:
    """Filters that make a list out of their input: a string gives one item per character."""
    _at_most(_length(value), MAX_ITEMS, "a number of items")


PRE_CHECKS: dict[str, Callable[..., None]] = {
    "center": pre_center,
    "indent": pre_indent,
    "wordwrap": pre_wordwrap,
    "urlize": pre_urlize,
    "format": pre_format,
    "replace": pre_replace,
    "round": pre_round,
    "join": pre_join,
    "batch": pre_batch,
    "slice": pre_slice,
    "sum": pre_sum,
    "tojson": pre_tojson,
    **{
        name: _sequence
        for name in (
            "list",
            "sort",
            "unique",
            "map",
            "select",
            "reject",
            "selectattr",
            "rejectattr",
            "groupby",
            "dictsort",
            "items",
            "min",
            "max",
        )
    },
}
ALLOWED_FILTERS = frozenset(DEFAULT_FILTERS) - {"pprint"}


def guarded(fn: Callable[..., Any], pre: Callable[..., None] | None) -> Callable[..., Any]:
    """A filter that charges the budget, takes and returns plain data only, and runs `pre`
    (the bound of what it would build) before the filter itself."""
    skip = 0 if getattr(fn, "jinja_pass_arg", None) is None else 1

    @functools.wraps(fn)
    def filter_(*args: Any, **kwargs: Any) -> Any:
        budget = current()
        budget.charge()
        values = args[skip:]
        if kwargs or any(type(value) not in _FAST for value in values):
            values = tuple(materialize(value) for value in values)
            kwargs = {name: materialize(value) for name, value in kwargs.items()}
            for value in (*values, *kwargs.values()):
                check_plain(value)
        if pre is not None:
            pre(*values, **kwargs)
        return bounded(materialize(fn(*args[:skip], *values, **kwargs)), budget)

    return filter_


def _charged(iterable: Iterable[Any], budget: Budget) -> Iterator[Any]:
    for item in iterable:
        budget.charge()
        yield item


@pass_context
def loop_filter(context: Context, iterable: Any) -> Iterator[Any]:
    """Every `{% for %}` iterates through this: one step per item."""
    return _charged(iterable, current())


@pass_context
def concat_filter(context: Context, items: list[Any]) -> str:
    """Every `a ~ b`: plain data only, bounded."""
    size = sum(check_plain(item) for item in items)
    _at_most(size, MAX_STR, "a joined text")
    join = markup_join if context.eval_ctx.autoescape else str_join
    joined: str = bounded(join(items), current())
    return joined


class _Guard(NodeTransformer):
    """Routes every loop through `loop_filter` and every `~` through `concat_filter`."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, LOOP_FILTER, [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        items = nodes.List(list(node.nodes), lineno=node.lineno)
        return nodes.Filter(items, CONCAT_FILTER, [], [], None, None, lineno=node.lineno)


# -- the environment -------------------------------------------------------------------------------

STR_METHODS = frozenset(
    [
        "capitalize",
        "casefold",
        "count",
        "endswith",
        "find",
        "index",
        "isalnum",
        "isalpha",
        "isascii",
        "isdecimal",
        "isdigit",
        "islower",
        "isnumeric",
        "isspace",
        "istitle",
        "isupper",
        "lower",
        "lstrip",
        "partition",
        "removeprefix",
        "removesuffix",
        "rfind",
        "rindex",
        "rpartition",
        "rsplit",
        "rstrip",
        "split",
        "splitlines",
        "startswith",
        "strip",
        "swapcase",
        "title",
        "upper",
        "striptags",
        "unescape",
    ]
)
LOOP_ATTRIBUTES = frozenset(
    [
        "index",
        "index0",
        "revindex",
        "revindex0",
        "first",
        "last",
        "length",
        "depth",
        "depth0",
        "previtem",
        "nextitem",
        "cycle",
        "changed",
    ]
)
ALLOWED_ATTRIBUTES: tuple[tuple[type, frozenset[str]], ...] = (
    (str, STR_METHODS),
    (Mapping, frozenset({"items", "keys", "values", "get"})),
    (LoopContext, LOOP_ATTRIBUTES),
    (Cycler, frozenset({"next", "current", "reset"})),
)
_METHODS = (types.MethodType, types.BuiltinMethodType)


def bounded_range(*args: int) -> range:
    """`range` of at most MAX_ITEMS numbers."""
    numbers = range(*args)
    _at_most(len(numbers), MAX_ITEMS, "a range length")
    return numbers


SAFE_GLOBALS: dict[str, Any] = {
    "range": bounded_range,
    "dict": dict,
    "namespace": Namespace,
    "cycler": Cycler,
    "joiner": Joiner,
}


def _group_attribute(obj: Any, attr: str) -> bool:
    """`grouper` and `list` of a `groupby` group (a named tuple)."""
    return isinstance(obj, tuple) and attr in ("grouper", "list") and hasattr(obj, "_fields")


class StrictEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox of this module. `limits` are those of a render that brings no `Budget`."""

    intercepted_binops = frozenset(BINOP_CHECKS)

    def __init__(self, limits: Limits | None = None, **options: Any) -> None:
        super().__init__(finalize=finalize, **options)
        self.limits = limits or Limits()
        self.globals = dict(SAFE_GLOBALS)
        self.filters = {
            name: guarded(DEFAULT_FILTERS[name], PRE_CHECKS.get(name)) for name in ALLOWED_FILTERS
        }
        self.filters[LOOP_FILTER] = loop_filter
        self.filters[CONCAT_FILTER] = concat_filter
        self.concat = self._concat  # type: ignore[method-assign]

    def render(self, template: Any, context: Mapping[str, Any], budget: Budget) -> str:
        """`template` rendered with `context` under `budget` (BudgetExceeded past a limit)."""
        with budget.activate():
            return self._collect(template.generate(context), budget)

    def _collect(self, pieces: Iterable[str], budget: Budget) -> str:
        out: list[str] = []
        cap = budget.limits.output_bytes
        try:
            for piece in pieces:
                budget.output += (
                    len(piece) if piece.isascii() else len(piece.encode("utf-8", "replace"))
                )
                if budget.output > cap:
                    raise BudgetExceeded(f"the output is larger than {cap} bytes", output=True)
                out.append(piece)
        finally:
            # a render stopped here is closed here, under its budget, not left suspended for
            # the garbage collector to finalize in the middle of whatever runs then
            close = getattr(pieces, "close", None)
            if close is not None:
                close()
        return "".join(out)

    def _concat(self, parts: Iterable[str]) -> str:
        if isinstance(parts, list):  # a buffer: a macro, a `set` or `filter` or `call` block
            budget = current()
            _at_most(sum(map(len, parts)), MAX_STR, "a captured text")
            budget.build(sum(map(len, parts)))
            return "".join(parts)
        outer = _CURRENT.get()  # Template.render(): the whole output of a template
        if outer is not None:
            return self._collect(parts, outer)
        with Budget(self.limits).activate() as budget:
            return self._collect(parts, budget)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        guarded: nodes.Template = _Guard().visit(tree)
        return guarded

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if attr.startswith("_"):
            return False
        if isinstance(obj, Namespace) or _group_attribute(obj, attr):
            return True
        return any(isinstance(obj, kind) and attr in names for kind, names in ALLOWED_ATTRIBUTES)

    def is_safe_callable(self, obj: Any) -> bool:
        if isinstance(obj, (Macro, LoopContext, Joiner)):
            return True
        if any(obj is safe for safe in SAFE_GLOBALS.values()):
            return True
        if isinstance(obj, _METHODS):
            return self.is_safe_attribute(obj.__self__, obj.__name__, obj)
        return False

    def wrap_str_format(self, value: Any) -> None:
        """`str.format` and `format_map` are not on the allow-list: never wrapped, never reached."""
        return None

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        budget = current()
        budget.charge()
        if isinstance(obj, Undefined):
            return obj()  # raises what made it undefined (an unsafe or a missing attribute)
        if not self.is_safe_callable(obj):
            raise SecurityError(f"a template cannot call a {_kind(obj)!r}")
        if isinstance(obj, LoopContext) and args:  # `loop(children)` in a recursive loop
            args = (_charged(args[0], budget), *args[1:])
        budget.depth += 1
        try:
            if budget.depth > budget.limits.depth:
                raise BudgetExceeded(f"calls nested deeper than {budget.limits.depth}")
            return bounded(context.call(obj, *args, **kwargs), budget)
        finally:
            budget.depth -= 1

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = current()
        budget.charge()
        BINOP_CHECKS[operator](left, right)
        return bounded(self.binop_table[operator](left, right), budget)


def _plus(a: Limits, b: Limits, sign: int) -> Limits:
    """`a` plus (`sign` 1) or minus (-1) `b`'s totals; `a`'s depth."""
    return field_wise(lambda mine, theirs: mine + sign * theirs, a, b, depth=a.depth)


class RequestBudget:
    """The resources left to a request that renders many messages, each under its own `Budget`
    (`message()`): `total` bounds their sum (CPU seconds, steps, output bytes, characters built),
    `wall_seconds` the time from the request's start to its last message."""

    def __init__(
        self,
        per_message: Limits,
        total: Limits,
        wall_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        late: str = "the request's time for rendering is spent",
    ) -> None:
        self.per_message = per_message
        self.total = total
        self.spent = NOTHING
        self._clock = clock
        self._deadline = clock() + wall_seconds
        self._late = late  # why a message asked for past `wall_seconds` is refused

    def left(self) -> float:
        """Seconds until messages are refused for the request's wall time (negative past it)."""
        return self._deadline - self._clock()

    def message(self) -> Budget:
        """The budget of the next message; BudgetExceeded (`request`) once the request's is
        spent."""
        if self._clock() > self._deadline:
            raise BudgetExceeded(self._late, request=True)
        per, total, spent = self.per_message, self.total, self.spent
        left = field_wise(lambda p, t, s: min(p, t - s), per, total, spent, depth=per.depth)
        if min(left.amounts()) <= 0:
            raise BudgetExceeded("the request's rendering budget is spent", request=True)
        return Budget(left)

    def left_totals(self) -> Limits:
        """What is left of the request's totals (none below 0)."""
        total, spent = self.total, self.spent
        return field_wise(
            lambda zero, t, s: max(zero, t - s), NOTHING, total, spent, depth=total.depth
        )

    def give(self, fraction: float) -> Limits:
        """`fraction` (0..1) of what is left of the request's totals, taken from them: another
        process renders part of the request under it (api/render.py), so the request as a
        whole stays within one budget."""
        left, part = self.left_totals(), min(1.0, max(0.0, fraction))
        share = left.part(part)
        self.total = _plus(self.total, share, -1)
        return share

    def take_back(self, share: Limits) -> None:
        """A share `give` handed out that was never used (its process was not reached)."""
        self.total = _plus(self.total, share, 1)

    def spend(self, budget: Budget) -> None:
        self.spent = field_wise(operator.add, self.spent, budget.used(), depth=self.spent.depth)
