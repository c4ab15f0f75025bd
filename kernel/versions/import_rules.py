"""What a strategy module may import: the standard library, numpy, its siblings (relatively)
and ``kernel.strategy_api``; nothing else of the project. Checked on the parsed source,
before any of it runs."""
from __future__ import annotations

import ast

_ALLOWED_KERNEL_IMPORTS = {"kernel.strategy_api"}


def check_imports(tree: ast.AST, filename: str) -> None:
    """Raise ImportError at the first import that breaks the rules."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top == "strategies":
                # An absolute import would escape the generation and share modules across versions.
                raise ImportError(
                    f"{filename}:{node.lineno}: absolute import of {name!r}: import sibling "
                    "modules relatively (from .indicators import ema)"
                )
            if top in ("kernel", "trading", "foresight_site", "django") and name not in _ALLOWED_KERNEL_IMPORTS:
                raise ImportError(
                    f"{filename}:{node.lineno}: a strategy may import only kernel.strategy_api, "
                    f"not {name!r}"
                )
