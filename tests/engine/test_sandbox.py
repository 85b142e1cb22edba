"""engine.sandbox attacked: a corpus of published Jinja2 sandbox-escape / SSTI techniques (written
for this project) against a context that holds a content service with a data dir, a key file and
settings with a secret one attribute away; and hostile templates against every budget (asserted
on counts and sizes, never on elapsed time)."""

from __future__ import annotations

import gc
import re
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import pytest
from markupsafe import Markup

from engine.blocks import Renderer
from engine.sandbox import (
    MAX_INT_BITS,
    MAX_ITEMS,
    MAX_STR,
    NOTHING,
    TOTALS,
    Budget,
    BudgetExceeded,
    LazyMapping,
    Limits,
    RequestBudget,
    StrictEnvironment,
    check_percent,
    describe_error,
    field_wise,
    output_too_large,
    plain_data,
)
from engine.settings import Settings

SECRET = "s3cret-admin-key-0123456789abcdefXYZ"
FILE_CONTENT = f"local:{SECRET}:content:read,events:write,privacy:admin"

# Published techniques (PayloadsAllTheThings, HackTricks, the jinja2 advisories GHSA-h5c8-rqwp-cp95
# (CVE-2024-56326), GHSA-cpwx-vrp4-4pq7 (CVE-2025-27516), GHSA-h75v-3vvj-5mfj (CVE-2024-22195 via
# xmlattr), ...), rewritten against what a render template can name: `blocks`, `user`, globals.
PAYLOADS = [
    # the issue's report: the content service, its state, a path, a file
    '{{ blocks.content.state.data_dir.joinpath("local-api-key").read_text() }}',
    "{{ blocks.content }}{{ blocks['content'] }}{{ blocks.state }}{{ blocks.settings }}",
    "{{ blocks._compute }}{{ blocks|attr('_compute') }}{{ blocks._compute.__closure__ }}",
    "{{ blocks._values }}{{ blocks._names }}{{ blocks.__slots__ }}",
    "{{ blocks.__class__ }}{{ blocks.__class__.__init__.__globals__ }}",
    "{{ blocks.get.__self__ }}{{ blocks.keys()|string }}{{ blocks.items.__self__ }}",
    # object graph walks
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__.__base__.__subclasses__()[140].__init__.__globals__['sys'] }}",
    "{{ user.__class__.__mro__ }}{{ user.__init__.__globals__ }}{{ user.__class__ }}",
    "{{ user.get.__self__.__class__ }}{{ user.items.__func__ }}{{ user.keys.__qualname__ }}",
    "{{ ().__class__.__bases__[0].__subclasses__() }}{{ [].__class__.__base__ }}",
    "{{ (1).__class__ }}{{ (1).real.__class__ }}{{ (1).bit_length }}{{ 1.5.hex }}",
    "{{ 'a'.upper.__self__ }}{{ 'a'.upper.__qualname__ }}{{ 'a'.encode('utf-8') }}",
    # self and the template's context
    "{{ self }}{{ self|string }}{{ self ~ '' }}{{ [self] }}{{ self|e }}",
    "{{ self._TemplateReference__context }}{{ self|attr('_TemplateReference__context') }}",
    "{{ self.__init__.__globals__ }}{{ self._TemplateReference__context.environment }}",
    "{% block b %}x{% endblock %}{{ self.b }}{{ self.b() }}{{ self.b.__call__ }}",
    # globals: cycler, joiner, namespace, lipsum, range, dict
    "{{ cycler.__init__.__globals__.os.popen('cat local-api-key').read() }}",
    "{{ cycler }}{{ cycler(1, 2) }}{{ cycler(1, 2).__init__.__globals__ }}{{ cycler(1).items }}",
    "{{ joiner }}{{ joiner.__init__.__globals__ }}{% set j = joiner() %}{{ j.sep }}{{ j|string }}",
    "{{ namespace }}{{ namespace.__init__.__globals__ }}{{ namespace(a=1) }}",
    "{{ namespace(a=1)._Namespace__attrs }}{{ namespace(a=1)|attr('_Namespace__attrs') }}",
    "{{ lipsum }}{{ lipsum.__globals__ }}{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ range }}{{ range.__self__ }}{{ range.__module__ }}{{ range(3).__class__ }}",
    "{{ dict }}{{ dict.mro() }}{{ dict.__base__.__subclasses__() }}{{ dict.fromkeys }}",
    "{{ dict(a=range) }}{{ dict(x=self)|tojson }}{{ dict(x=cycler)|string }}",
    "{{ request }}{{ config }}{{ config.items() }}{{ settings }}{{ environment }}{{ context }}",
    "{{ request.application.__globals__.__builtins__.open('/etc/passwd').read() }}",
    "{{ url_for.__globals__ }}{{ get_flashed_messages.__globals__ }}{{ g }}",
    # attr filter and map(attribute=)
    "{{ user|attr('__class__') }}{{ ''|attr('__class__')|attr('__mro__') }}",
    "{{ user|attr('__class__')|attr('__init__')|attr('__globals__') }}",
    "{{ [user]|map(attribute='__class__')|list }}{{ [blocks]|map(attribute='_compute')|list }}",
    "{{ [user]|map(attribute='__class__.__mro__')|list }}{{ [self]|map('string')|list }}",
    "{{ [blocks]|map(attribute='get.__self__')|list }}{{ [1]|map('attr', '__class__')|list }}",
    "{{ [user]|selectattr('__class__')|list }}{{ [user]|sort(attribute='__class__') }}",
    "{{ [user]|groupby('__class__') }}{{ [range]|join }}{{ [cycler]|sum(start=0) }}",
    # format-string tricks: str.format, format_map, |format, %, indirect references (CVE-2024-56326)
    "{{ '{0.__class__}'.format(user) }}{{ '{0.__class__.__init__.__globals__}'.format(blocks) }}",
    "{{ '{0!r}'.format(self) }}{{ '{0}'.format(range) }}{{ '{x}'.format_map(user) }}",
    "{% set f = '{0.__class__.__mro__}'.format %}{{ f(user) }}",
    "{% for f in ['{0.__class__}']|map(attribute='format') %}{{ f(user) }}{% endfor %}",
    "{{ user.get('x', '{0.__class__}').format(user) }}{{ ('{0.' ~ '__class__}').format(1) }}",
    # CVE-2025-27516: |attr reaching str.format
    "{{ '{0.__class__}'|attr('format')(user) }}"
    "{{ ('{0.__init__.__globals__}'|attr('format'))(blocks) }}",
    "{{ '{0.__class__}'|attr('format_map')({'0': user}) }}",
    "{{ '%s'|format(self) }}{{ '%r'|format(blocks.get) }}{{ '%r'|format(range) }}",
    "{{ '%s' % self }}{{ '%r' % (cycler,) }}{{ '%(a)r' % {'a': range} }}{{ '%s' % [self] }}",
    "{{ '%s%s' % (joiner, namespace) }}{{ '%(x)s'|format(x=lipsum) }}",
    # loop
    "{% for x in [1] %}{{ loop }}{{ loop|string }}{{ loop.__class__ }}{{ loop._iterator }}"
    "{% endfor %}",
    "{% for x in [1] %}{{ loop.cycle.__self__ }}{{ loop|attr('_iterable') }}{{ [loop] }}"
    "{% endfor %}",
    "{% for x in [1] %}{{ loop.__init__.__globals__ }}{{ loop.changed.__func__ }}{% endfor %}",
    # namespace mutation, set, macros, caller
    "{% set ns = namespace() %}{% set ns.x = self %}{{ ns.x }}{% set ns.y = range %}{{ ns.y }}",
    "{% set ns = namespace() %}{% set ns._Namespace__attrs = 1 %}{{ ns }}{{ ns.x }}",
    "{% set ns = namespace(a=user) %}{{ ns.a.__class__ }}{{ ns|string }}",
    "{% macro m() %}{{ caller }}{{ caller|string }}{% endmacro %}{% call m() %}x{% endcall %}",
    "{% macro m() %}{% endmacro %}{{ m }}{{ m.__globals__ }}{{ m._func }}{{ m|string }}",
    "{% set x = user.update %}{{ x }}{{ user.update({'a': 1}) }}{{ user.clear() }}",
    # escape hatches: include/import/extends, filesystem
    "{% include '/etc/passwd' %}",
    "{% include 'local-api-key' %}{% import 'os' as os %}",
    "{% extends '../../data/local-api-key' %}",
    # error messages that would carry a repr
    "{{ user[range].x }}{{ user[self].y }}",
    "{{ user[cycler]['a'] }}{{ blocks[range] }}",
    "{{ range() }}{{ dict(1) }}{{ cycler.next() }}",
    # filters that stringify: every one of them on an object
    "{{ range|upper }}{{ range|lower }}{{ self|title }}{{ cycler|capitalize }}{{ joiner|trim }}",
    "{{ range|tojson }}{{ range|pprint }}{{ self|safe }}{{ range|forceescape }}",
    "{{ self|urlencode }}{{ self|center }}{{ self|indent }}{{ self|wordwrap }}{{ self|truncate }}",
    "{{ self|replace('a', 'b') }}{{ range|filesizeformat }}{{ self|int }}{{ self|batch(2) }}",
    "{{ range|striptags }}{{ range|urlize }}{{ self|wordcount }}{{ self|list }}{{ self|length }}",
    "{{ {'a': range}|xmlattr }}{{ {'a': range}|dictsort }}{{ {'a': range}|items|list }}",
]

FORBIDDEN = re.compile(
    r"<\w+ object|<function|<class|<module|<bound|<built-in|<method|<slot|<generator"
    r"|PosixPath|Settings\(|ContentService|MemoryState|0x[0-9a-f]{6,}|__globals__'?:|/etc/passwd:"
)


@dataclass
class State:
    data_dir: Path
    settings: Settings


@dataclass
class Service:
    state: State


@pytest.fixture
def context(tmp_path: Path) -> dict[str, Any]:
    """What a render template gets, with the objects the issue reached one closure away."""
    (tmp_path / "local-api-key").write_text(FILE_CONTENT)
    service = Service(State(tmp_path, Settings(api_keys=f"admin:{SECRET}:privacy:admin")))

    def compute(name: str) -> Markup:
        assert service.state.data_dir.is_dir()
        return Markup(f"<table><tr><td>{name}</td></tr></table>")

    blocks = LazyMapping(("recommendations", "cart_reminder", "winback"), compute)
    return {"blocks": blocks, "user": {"user_id": "u1", "first_name": "Ada", "orders": 2}}


def answer(source: str, context: dict[str, Any], limits: Limits | None = None) -> str:
    """What a caller would see: the output, or the error text."""
    env = StrictEnvironment(autoescape=True, undefined=jinja2.Undefined)
    try:
        return env.render(env.from_string(source), context, Budget(limits or Limits()))
    except Exception as exc:
        return describe_error(exc)


def assert_clean(text: str, tmp_path: Path) -> None:
    assert not FORBIDDEN.search(text), text
    assert SECRET not in text and FILE_CONTENT not in text
    assert str(tmp_path) not in text and "local-api-key" not in text.replace("'local-api-key'", "")


@pytest.mark.parametrize("source", PAYLOADS)
def test_no_escape_payload_reaches_an_object(
    source: str, context: dict[str, Any], tmp_path: Path
) -> None:
    assert_clean(answer(source, context), tmp_path)


@pytest.mark.parametrize("source", PAYLOADS)
def test_no_payload_reaches_an_object_one_statement_at_a_time(
    source: str, context: dict[str, Any], tmp_path: Path
) -> None:
    """Each `{{ }}` alone (a failing first one must not hide a leaking second one)."""
    for part in re.findall(r"\{\{.*?\}\}", source):
        assert_clean(answer(part, context), tmp_path)


def test_the_issue_payload_on_the_old_sandbox_did_leak(
    context: dict[str, Any], tmp_path: Path
) -> None:
    """The corpus attacks something real: the same payload through jinja2's own sandbox and a
    dict holding the service (what api/render passed) reads the key file."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Old(dict[str, Any]):
        content = Service(State(tmp_path, Settings()))

    old = ImmutableSandboxedEnvironment().from_string(PAYLOADS[0]).render(blocks=Old())
    assert SECRET in old
    assert SECRET not in answer(PAYLOADS[0], context)


def test_templates_still_do_their_job(context: dict[str, Any]) -> None:
    source = (
        "Hi {{ user.first_name|default('there')|upper }}! {{ blocks.recommendations }}"
        "{% for k, v in user|dictsort %}{{ k }}={{ v }}{{ ',' if not loop.last }}{% endfor %}"
        "{% set ns = namespace(n=0) %}{% for i in range(4) %}{% set ns.n = ns.n + i %}{% endfor %}"
        " {{ ns.n }} {{ '%05.1f'|format(3.14159) }} {{ 'a b c'.split()|join('-') }}"
        " {{ [3, 1, 2]|sort|list }} {{ 2 ** 10 }} {{ 'ab' * 2 }} {{ 'x' ~ 1 }}"
        "{% set c = cycler('odd', 'even') %} {{ c.next() }} {{ c.next() }}"
        "{% macro greet(n) %}<{{ n }}>{% endmacro %} {{ greet('b') }}"
    )
    text = answer(source, context)
    assert text.startswith("Hi ADA! <table><tr><td>recommendations</td></tr></table>")
    assert "first_name=Ada,orders=2,user_id=u1" in text and " 6 " in text
    assert text.endswith("003.1 a-b-c [1, 2, 3] 1024 abab x1 odd even <b>")


# -- budgets ---------------------------------------------------------------------------------------

HOSTILE = {
    "{{ 9**(9**9) }}": "integer larger",
    "{{ (10**1000) * (10**1000) }}": "integer larger",
    "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}": "range",
    "{% for a in range(10000) %}{% for b in range(10000) %}x{% endfor %}{% endfor %}": "loop iter",
    '{{ "x" * 10**9 }}': "too long",
    "{{ [1] * 10**8 }}": "too long",
    '{{ "a"|center(10**9) }}': "width",
    '{{ "%0999999999d"|format(1) }}': "format width",
    '{{ "%.999999999f" % 1.5 }}': "format width",
    '{{ "%*d" % (10**9, 1) }}': "format width",
    '{{ "%(a)0999999999d" % {"a": 1} }}': "format width",
    '{{ ("x\n" * 1000)|indent(10**6) }}': "indented",
    "{{ ('a' * 100000)|replace('a', 'aaaaaaaaaaaaaaaaaaaa') }}": "replaced",
    "{{ (['x' * 100000] * 10000)|join }}": "larger than",
    "{{ range(100)|join('x' * 100000) }}": "joined",
    # json.dumps's indent: 10,000 items x 100,000 spaces was ~1 GB built in one C call (8 s)
    "{{ range(10000)|list|tojson(indent=100000) }}": "indented JSON",
    "{{ [[[[[[1]]]]]]|tojson(indent='x' * 1000000) }}": "indented JSON",
    "{{ [1]|batch(10**9, 0)|list }}": "batch",
    "{{ [1]|slice(10**9, 0)|list }}": "slices",
    "{{ ('x' * 1000000)|list }}": "items",
    "{{ ('x' * 100000)|wordwrap(1) }}": "wrap",
    "{{ [[1] * 5000] * 5000|sum(start=[]) }}": "sum",
    "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(1) }}": "nested deeper",
    "{% macro f(n) %}{{ f(n) ~ f(n) }}{% endmacro %}{{ f(1) }}": "nested deeper",
    "{% set x %}{% for i in range(5000) %}{{ 'y' * 1000 }}{% endfor %}{% endset %}": "captured",
    "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
    "{% endfor %}": "joined text",
    "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}"
    "{% endfor %}": "too long",
    "{% for i in range(10000) %}{{ 'x' * 1000 }}{% endfor %}": "output is larger",
    # `round` computes 10**precision in one C call: `1|round(-(10**9))` held a reader's event loop
    # at 100 % CPU for good (10**6 already takes ~1 s, 20 times a message's CPU budget)
    "{{ 1|round(-(10**6)) }}": "rounding precision",
    "{{ 1.5|round(10**6, 'floor') }}": "rounding precision",
    "{{ 1.5|round(10**6, 'ceil') }}": "rounding precision",
}


@pytest.mark.parametrize("source", list(HOSTILE))
def test_hostile_templates_are_refused(source: str, context: dict[str, Any]) -> None:
    text = answer(source, context)
    assert text.startswith(("BudgetExceeded", "SecurityError")), text[:200]
    assert HOSTILE[source] in text


def test_round_within_its_bound_still_rounds(context: dict[str, Any]) -> None:
    assert answer("{{ 42.55|round(1, 'floor') }} {{ 1234|round(-2) }}", context) == "42.5 1200"
    assert answer("{{ 1|round(-1228) }} {{ 2.5|round(1228) }}", context) == "0 2.5"


def test_the_right_associative_power_of_the_issue_is_harmless(context: dict[str, Any]) -> None:
    """Jinja's `**` is left-associative: `9**9**9` is (9**9)**9, 78 digits (`9**(9**9)` is
    refused above)."""
    assert answer("{{ 9**9**9 }}", context) == str((9**9) ** 9)


def run(source: str, limits: Limits, context: dict[str, Any] | None = None) -> tuple[Budget, str]:
    env = StrictEnvironment(autoescape=True)
    budget = Budget(limits)
    try:
        return budget, env.render(env.from_string(source), context or {}, budget)
    except BudgetExceeded as exc:
        return budget, str(exc)


def test_the_step_budget_counts_loop_iterations_and_calls() -> None:
    budget, text = run("{% for i in range(100) %}{{ i|string }}{% endfor %}", Limits(steps=1000))
    assert budget.steps == 201 and text.endswith("99")  # range(), 100 iterations, 100 filters
    budget, text = run("{% for i in range(10000) %}{% endfor %}", Limits(steps=1000))
    assert budget.steps == 1001 and "more than 1000 loop iterations" in text


def test_the_cpu_budget_stops_work_that_steps_would_allow() -> None:
    source = "{% for a in range(10000) %}{{ range(10000)|list|sort|length }}{% endfor %}"
    budget, text = run(source, Limits(cpu_seconds=0.02, steps=10**9))
    assert "ms of CPU time" in text and budget.steps < 3 * 10_000


def test_the_output_budget_counts_utf8_bytes() -> None:
    budget, text = run("{% for i in range(100) %}é{% endfor %}", Limits(output_bytes=150))
    assert "larger than 150 bytes" in text and 150 < budget.output <= 152
    budget, text = run("{% for i in range(100) %}é{% endfor %}", Limits(output_bytes=200))
    assert text == "é" * 100 and budget.output == 200


def test_the_built_characters_budget() -> None:
    source = "{% for i in range(100) %}{% set s = 'x' * 1000 %}{% endfor %}"
    budget, text = run(source, Limits(built_chars=50_000))
    assert "more than 50000 characters built" in text and budget.built == 51_000


def test_recursive_loops_are_bounded_in_depth() -> None:
    tree: list[Any] = []
    for _ in range(30):
        tree = [tree]
    source = "{% for x in tree recursive %}[{{ loop(x) }}]{% endfor %}"
    _, text = run(source, Limits(depth=10), {"tree": tree})
    assert "nested deeper than 10" in text
    _, text = run(source, Limits(depth=40), {"tree": tree})
    assert text.count("[") == 30


def test_the_bounds_of_c_level_operations_are_exact() -> None:
    assert run(f"{{{{ ('x' * {MAX_STR})|length }}}}", Limits())[1] == str(MAX_STR)
    assert "too long" in run(f"{{{{ 'x' * {MAX_STR + 1} }}}}", Limits())[1]
    assert run(f"{{{{ 2 ** {MAX_INT_BITS // 2 - 1} }}}}", Limits())[1].isdigit()
    assert "integer" in run(f"{{{{ 2 ** {MAX_INT_BITS // 2 + 1} }}}}", Limits())[1]
    assert run(f"{{{{ range({MAX_ITEMS})|list|length }}}}", Limits())[1] == str(MAX_ITEMS)
    assert "range" in run(f"{{{{ range({MAX_ITEMS + 1}) }}}}", Limits())[1]
    check_percent("%(a)s %5d %.3f %%d %1000s")
    with pytest.raises(BudgetExceeded):
        check_percent("%(a(b)c)1001s")


# One `%` or `|format` is one C call: a mapping key named in every conversion, or a width on
# each, multiplies its output (`('%(a)s' * 100000) % {'a': 'x' * 10**6}` is 10**11 characters,
# built before any check after the call could refuse it). Each would build over 100 MB here.
AMPLIFIED = [
    "{{ ('%(a)s' * 1000) % {'a': 'x' * 200000} }}",
    "{{ ('%(a)s' * 1000)|format(a='x' * 200000) }}",
    "{{ ['%(a)s' * 1000]|map('format', a='x' * 200000)|list }}",
    "{{ ('%(a)1000s' * 100000) % {'a': 'x'} }}",
    "{{ ('%1000s' * 10000) % ((1,) * 10000) }}",
    "{{ ('%(a)r' * 1000) % {'a': '\\x00' * 100000} }}",
    "{{ ('%(a)s' * 2000) % {'a': range(10000)|list} }}",
    # a Markup format escapes what it inserts: 5 x 200,000 characters become 5 x 1,000,000
    "{{ (('%(a)s' * 5)|safe) % {'a': '\"' * 200000} }}",
]


@pytest.mark.parametrize("source", AMPLIFIED)
def test_percent_formatting_is_bounded_before_it_runs(source: str) -> None:
    tracemalloc.start()
    try:
        _, text = run(source, Limits(cpu_seconds=60))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "a formatted text above" in text, text[:200]
    assert peak < 16 << 20  # the output would be 100-400 MB; its bound is 1 MiB


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ '%(a)s-%(a)s' % {'a': 'x' * 1000} }}", "x" * 1000 + "-" + "x" * 1000),
        ("{{ '%5d|%-4s|%.2f|%%|%r' % (42, 'ab', 3.14159, 'q') }}", "   42|ab  |3.14|%|&#39;q&#39;"),
        ("{{ '%s' % ('y' * 500000) }}", "y" * 500000),
        ("{{ '%(n)s items'|format(n=3) }}", "3 items"),
        ("{{ '%d %.0f %o' % (1e308, 1e308, 2**1000) }}", f"{int(1e308)} {1e308:.0f} {2**1000:o}"),
        ("{{ '%.3e %f' % (10**300 * 1.0, 1e300) }}", f"{1e300:.3e} {1e300:f}"),
    ],
)
def test_percent_formatting_within_its_bound(source: str, expected: str) -> None:
    assert run(source, Limits())[1] == expected


def test_request_budget_sums_its_messages() -> None:
    now = [0.0]
    request = RequestBudget(
        Limits(steps=200, output_bytes=1000),
        Limits(cpu_seconds=10, steps=450, output_bytes=2500, built_chars=10**9),
        wall_seconds=5,
        clock=lambda: now[0],
    )
    env = StrictEnvironment()
    template = env.from_string("{% for i in range(90) %}{{ 'x' * 10 }}{% endfor %}")
    outputs = []
    for _ in range(4):
        try:
            message = request.message()
        except BudgetExceeded as exc:
            outputs.append(str(exc))
            continue
        try:
            outputs.append(env.render(template, {}, message))
        except BudgetExceeded as exc:
            outputs.append(str(exc))
        finally:
            request.spend(message)
    assert outputs[:2] == ["x" * 900] * 2
    assert "more than 88 loop iterations" in outputs[2]  # 181 steps a message, 450 in all
    assert "budget is spent" in outputs[3]
    fresh = RequestBudget(Limits(), Limits(), wall_seconds=5, clock=lambda: now[0])
    now[0] = 12.0
    with pytest.raises(BudgetExceeded, match="time"):
        fresh.message()


def test_limits_are_combined_field_by_field_over_their_totals() -> None:
    a = Limits(cpu_seconds=1.5, steps=10, output_bytes=100, built_chars=1000, depth=3)
    b = Limits(cpu_seconds=0.5, steps=4, output_bytes=130, built_chars=200, depth=9)
    assert TOTALS == ("cpu_seconds", "steps", "output_bytes", "built_chars")  # not depth
    assert field_wise(lambda x, y: x - y, a, b, depth=7) == Limits(
        cpu_seconds=1.0, steps=6, output_bytes=-30, built_chars=800, depth=7
    )
    assert field_wise(min, a, b, NOTHING, depth=1) == Limits(0.0, 0, 0, 0, 1)
    assert a.amounts() == (1.5, 10, 100, 1000)
    assert a.part(0.3333) == Limits(
        cpu_seconds=0.499, steps=3, output_bytes=33, built_chars=333, depth=3
    )
    assert [type(value) for value in NOTHING.amounts()] == [float, int, int, int]
    assert NOTHING.depth == Limits().depth
    budget = Budget(a)
    budget.cpu_used, budget.steps, budget.output, budget.built = 0.25, 2, 3, 4
    assert budget.used() == Limits(0.25, 2, 3, 4, depth=3)


def test_a_request_budget_gives_and_takes_back_shares_of_what_is_left() -> None:
    total = Limits(cpu_seconds=2.0, steps=1000, output_bytes=500, built_chars=90, depth=5)
    request = RequestBudget(Limits(), total, wall_seconds=5)
    message = request.message()
    message.cpu_used, message.steps, message.output, message.built = 0.5, 100, 600, 10
    request.spend(message)
    assert request.spent == Limits(cpu_seconds=0.5, steps=100, output_bytes=600, built_chars=10)
    left = request.left_totals()  # none below 0, each of its type
    assert left == Limits(cpu_seconds=1.5, steps=900, output_bytes=0, built_chars=80, depth=5)
    assert [type(value) for value in left.amounts()] == [float, int, int, int]
    share = request.give(0.3333)  # floored: CPU to the millisecond, the others to a whole
    assert share == Limits(cpu_seconds=0.499, steps=299, output_bytes=0, built_chars=26, depth=5)
    assert request.total == Limits(
        cpu_seconds=2.0 - 0.499, steps=701, output_bytes=500, built_chars=64, depth=5
    )
    request.take_back(share)
    assert request.total == total
    with pytest.raises(BudgetExceeded, match="rendering budget is spent"):  # no output bytes left
        request.message()


def test_lazy_values_are_computed_once_outside_the_template_budget() -> None:
    calls: list[str] = []

    def compute(name: str) -> str:
        calls.append(name)
        _, text = run("{% for i in range(50) %}{% endfor %}ok", Limits(steps=60))
        return text

    blocks = LazyMapping(("a", "b"), compute)
    budget, text = run(
        "{{ blocks.a }}{{ blocks.a }}{{ 'b' in blocks }}", Limits(steps=5), {"blocks": blocks}
    )
    assert text == "okokTrue" and calls == ["a"] and budget.steps <= 5


def burn(seconds: float) -> None:
    """Spend `seconds` of this thread's CPU time."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_the_cpu_time_of_lazy_values_is_not_charged_to_the_template() -> None:
    """A block computed for a template (a cold model, a slow store) does not spend the message's
    CPU budget: the template still runs its loop after 60 ms of block work against 20 ms."""
    blocks = LazyMapping(("a",), lambda name: burn(0.06) or "ok")
    source = "{{ blocks.a }}{% for i in range(200) %}{% endfor %}done"
    budget, text = run(source, Limits(cpu_seconds=0.02), {"blocks": blocks})
    assert text == "okdone" and budget.excluded >= 0.06 and budget.cpu_used < 0.06


def test_garbage_collection_while_rendering_is_not_charged_to_the_template() -> None:
    """A full collection of a large heap in the middle of a message is the process's cost, not
    the template's: the budget's clock moves past it."""
    heap = [[i] for i in range(1_000_000)]
    budget = Budget(Limits(cpu_seconds=0.001))
    with budget.activate():
        gc.collect()
        budget.check_clock()  # would raise "more than 1 ms of CPU time" if the collection counted
    assert budget.excluded >= 0.001 and budget.cpu_used < budget.excluded
    assert len(heap) == 1_000_000


def test_the_block_renderer_uses_the_strict_sandbox(tmp_path: Path) -> None:
    for sub in ("email", "ads"):
        (tmp_path / sub).mkdir()
    for block in ("recommendations", "cart_reminder", "winback"):
        (tmp_path / "email" / f"{block}.html").write_text("{{ items.__class__ }}")
        (tmp_path / "ads" / f"{block}.json").write_text("{{ fmt|attr('format') }}")
    renderer = Renderer(tmp_path)
    assert isinstance(renderer.env, StrictEnvironment)
    with pytest.raises(jinja2.exceptions.SecurityError):
        renderer.env.get_template("email/recommendations.html").render(items=[])
    with pytest.raises(jinja2.exceptions.SecurityError):
        renderer.env.get_template("ads/recommendations.json").render(fmt="{0.__class__}")


def test_plain_data_refuses_what_is_not_json() -> None:
    assert plain_data({"a": [1, "x", None, 2.5, {"b": True}]}) == {
        "a": [1, "x", None, 2.5, {"b": True}]
    }
    for bad in (b"bytes", {1: "x"}, [object()], {"a": "x" * (MAX_STR + 1)}, [0] * (MAX_ITEMS + 1)):
        with pytest.raises(ValueError):
            plain_data(bad)
    deep: Any = []
    for _ in range(40):
        deep = [deep]
    with pytest.raises(ValueError):
        plain_data(deep)


def test_error_texts_carry_no_object_repr() -> None:
    exc = KeyError(object())
    assert "<...>" in describe_error(exc) and not FORBIDDEN.search(describe_error(exc))
    assert len(describe_error(ValueError("x" * 1000))) == 300


def test_error_texts_name_no_internal_type() -> None:
    from engine.sandbox import describe_error

    exc = jinja2.UndefinedError("'engine.sandbox.LazyMapping object' has no attribute 'content'")
    text = describe_error(exc)
    assert "engine" not in text and "LazyMapping" not in text
    assert text == "UndefinedError: 'object' has no attribute 'content'"
    assert describe_error(ValueError("'list object' has no attribute 'x'")).endswith(
        "'list object' has no attribute 'x'"
    )


def test_tojson_with_a_modest_indent_still_works(context: dict[str, Any]) -> None:
    text = answer("{{ {'a': [1, 2]}|tojson(indent=2) }}", context)
    assert text == '{\n  "a": [\n    1,\n    2\n  ]\n}'


def test_a_render_stopped_at_its_output_budget_is_closed_at_once() -> None:
    """A render past `output_bytes` is a `BudgetExceeded` saying so (`output_too_large`), and the
    template's generator it stopped is closed then: left suspended, it was finalized by the
    garbage collector in the middle of a later render (a block retried with fewer items), and
    the process crashed (CPython 3.11, a segmentation fault in the test run)."""
    closed: list[bool] = []

    def pieces() -> Any:
        try:
            while True:
                yield "x" * 100
        finally:
            closed.append(True)

    env = StrictEnvironment()
    with pytest.raises(BudgetExceeded) as raised:
        env._collect(pieces(), Budget(Limits(output_bytes=1000)))
    assert output_too_large(raised.value) and "output is larger" in str(raised.value)
    assert closed == [True]
    assert not output_too_large(BudgetExceeded("more than 5 loop iterations and calls"))
