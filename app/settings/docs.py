"""The settings documented: each variable's one-line description (its field docstring), `.env.example` and the
README's configuration table (`make docs` writes both)."""

from __future__ import annotations

import ast
import inspect
import itertools

from app.settings import ENV_PREFIX, Settings, groups


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


def field_docs() -> dict[str, str]:
    """Each variable's name and its one-line description, group by group (the field docstrings)."""
    docs: dict[str, str] = {}
    for cls in groups().values():
        body = ast.parse(inspect.getsource(cls)).body[0].body  # type: ignore[attr-defined]
        for node, nxt in itertools.pairwise(body):
            is_field = isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
            if is_field and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
                assert isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                docs[ENV_PREFIX + (cls.PREFIX + node.target.id).upper()] = str(nxt.value.value)
    return docs
