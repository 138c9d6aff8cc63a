"""The script's import block, from the imports each template part asks for.

The shared parts and the task's parts each name the imports their code uses, as
plain import statements; this module merges them (one `from X import ...` per
module) and writes them in the order and layout ruff's isort rules leave
(standard library, then the rest; `import x` lines before `from x import y`
lines; names constants first, then classes, then the others), so that a task adds
its imports without the shared template naming them.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable

from .code import WIDTH


def import_block(statements: Iterable[str]) -> str:
    """The import lines for `statements` (each a Python import statement), sections
    separated by one blank line, without a trailing newline."""
    straight: set[tuple[str, str | None]] = set()
    names: dict[str, set[tuple[str, str | None]]] = {}
    for statement in statements:
        for node in ast.parse(statement).body:
            if isinstance(node, ast.Import):
                straight.update((a.name, a.asname) for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.setdefault(node.module, set()).update((a.name, a.asname) for a in node.names)
            else:
                raise ValueError(f"not an absolute import statement: {statement!r}")
    sections: list[list[str]] = []
    for standard in (True, False):
        lines = [_straight(*item) for item in sorted(straight, key=_module_key) if _stdlib(item[0]) == standard]
        lines += [_from(module, names[module]) for module in sorted(names, key=_key) if _stdlib(module) == standard]
        if lines:
            sections.append(lines)
    return "\n\n".join("\n".join(lines) for lines in sections)


def _stdlib(module: str) -> bool:
    return module.split(".")[0] in sys.stdlib_module_names


def _key(module: str) -> tuple[str, str]:
    return module.lower(), module


def _module_key(item: tuple[str, str | None]) -> tuple:
    name, alias = item
    return (*_key(name), alias or "")


def _member_key(item: tuple[str, str | None]) -> tuple:
    name, alias = item
    if name.isupper() and len(name) > 1:
        kind = 0  # a constant
    elif name[0].isupper():
        kind = 1  # a class
    else:
        kind = 2
    return kind, name.lower(), name, alias or ""


def _alias(name: str, alias: str | None) -> str:
    return f"{name} as {alias}" if alias else name


def _straight(name: str, alias: str | None) -> str:
    return f"import {_alias(name, alias)}"


def _from(module: str, members: set[tuple[str, str | None]]) -> str:
    written = [_alias(*member) for member in sorted(members, key=_member_key)]
    line = f"from {module} import {', '.join(written)}"
    if len(line) <= WIDTH:
        return line
    return f"from {module} import (\n" + "".join(f"    {name},\n" for name in written) + ")"
