"""`make docs`: rewrite the generated parts of the documentation (.env.example, the README's settings table).

tests/unit/test_settings.py fails when they differ from what this would write.
"""

from __future__ import annotations

from pathlib import Path

from app.settings import ENV_PREFIX, Settings, field_docs

ROOT = Path(__file__).resolve().parents[2]
BEGIN, END = "<!-- settings:begin -->\n", "<!-- settings:end -->\n"


def render_env_example() -> str:
    """The whole `.env.example`: every setting with its description and default (`make docs` writes it)."""
    defaults = Settings()
    lines = [
        "# SpatialGen Direct Upload service settings (all optional; defaults shown).",
        "# With nothing set, `make run` starts embedded Valkey and S3 (moto) on loopback.",
        "",
    ]
    for env, doc in field_docs().items():
        lines += [f"# {doc}", f"# {env}={defaults.value(env.removeprefix(ENV_PREFIX).lower())}"]
    return "\n".join(lines) + "\n"


def render_settings_table() -> str:
    """The README's configuration table (`make docs` writes it between its markers)."""
    defaults = Settings()
    rows = ["| variable | default | what it is |", "|---|---|---|"]
    for env, doc in field_docs().items():
        value = str(defaults.value(env.removeprefix(ENV_PREFIX).lower()))
        rows.append(f"| `{env}` | {f'`{value}`' if value else '(empty)'} | {doc} |")
    return "\n".join(rows) + "\n"


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
