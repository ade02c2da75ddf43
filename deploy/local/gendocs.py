"""`make docs`: rewrite the generated parts of the documentation (.env.example, the README's settings table).

tests/unit/test_settings.py fails when they differ from what this would write.
"""

from __future__ import annotations

from pathlib import Path

from app.settings.docs import render_env_example, render_settings_table

ROOT = Path(__file__).resolve().parents[2]
BEGIN, END = "<!-- settings:begin -->\n", "<!-- settings:end -->\n"


def readme_with_table(readme: str) -> str:
    """The README with its settings table replaced by the current one."""
    head, _, rest = readme.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return head + BEGIN + render_settings_table() + END + tail


def main() -> None:
    """Write both files."""
    (ROOT / ".env.example").write_text(render_env_example())
    readme = ROOT / "README.md"
    readme.write_text(readme_with_table(readme.read_text()))


if __name__ == "__main__":
    main()
