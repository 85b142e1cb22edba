"""Write the settings' documentation from their declarations (engine/settings.py): the table in
docs/operations.md (between its markers) and persona.example.toml. `make docs` runs it;
tests/persona/test_settings_docs.py fails when the committed files differ from what it writes.

    python -m persona.settings_docs [--check]
"""

from __future__ import annotations

import sys
from pathlib import Path

from engine.settings import example_toml, settings_table

ROOT = Path(__file__).resolve().parent.parent
OPERATIONS = ROOT / "docs" / "operations.md"
EXAMPLE = ROOT / "persona.example.toml"
BEGIN = "<!-- settings table: generated from engine/settings.py by `make docs`; do not edit -->\n"
END = "<!-- end of the generated settings table -->\n"


def operations_text(current: str) -> str:
    """`current` (docs/operations.md) with the generated table between the markers."""
    head, begin, rest = current.partition(BEGIN)
    _old, end, tail = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"{OPERATIONS} lacks the settings table's markers")
    return head + BEGIN + settings_table() + END + tail


def stale() -> list[Path]:
    """The files whose committed text differs from what would be written."""
    out = []
    if OPERATIONS.read_text() != operations_text(OPERATIONS.read_text()):
        out.append(OPERATIONS)
    if not EXAMPLE.exists() or EXAMPLE.read_text() != example_toml():
        out.append(EXAMPLE)
    return out


def main(argv: list[str]) -> int:
    if "--check" in argv:
        files = stale()
        for path in files:
            print(f"{path.relative_to(ROOT)} is not current: run make docs", file=sys.stderr)
        return 1 if files else 0
    OPERATIONS.write_text(operations_text(OPERATIONS.read_text()))
    EXAMPLE.write_text(example_toml())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
