"""What a strategy module may import and call, checked on its parsed source before any of it runs.

Imports are an allowlist: the standard library, numpy, ``kernel.strategy_api`` and the
strategy's sibling modules (relative imports: ``from .indicators import ema``). Anything else
is refused, naming the module. So are the standard library modules that start processes or
threads, open sockets, touch files, load code or reach into the interpreter (``DENIED``:
``os`` and all of ``os.*``, ``subprocess``, ``socket``, ``pathlib``, ``sys``, ...), and the
builtins that do the same (``open``, ``exec``, ``eval``, ``compile``, ``__import__``, ...).

A module may opt in, explicitly and with a reason, by a module-level literal read from the
source (never executed)::

    ALLOW_IMPORTS = {"socket": "pushes fills to our risk desk"}
    ALLOW_BUILTINS = {"open": "reads a lookup table shipped beside the strategy"}

An opt-in covers the module that declares it, the named modules and their submodules; it
never covers the project's own packages (``kernel`` beyond the strategy API, ``trading``,
``strategies`` imported absolutely, Django). docs/strategies.md, "Imports", is the user's page.

This is a guard rail against the honest mistake and the obvious shortcut, not a sandbox:
Python code running in the kernel's process can always reach further (``random._os``).
"""
from __future__ import annotations

import ast
import sys

_ALLOWED_KERNEL_IMPORTS = {"kernel.strategy_api"}
_PROJECT = frozenset({"kernel", "trading", "foresight_site", "django", "bench", "tests", "manage"})
_ALLOWED_THIRD_PARTY = frozenset({"numpy"})

_PROCESSES = "starts processes or runs commands"
_THREADS = "starts threads, handles signals or runs event loops in the kernel's process"
_NETWORK = "opens network connections"
_FILES = "reads or writes files outside strategies/"
_CODE = "loads code or reaches into the interpreter and the kernel's own modules"
_PROCESS_WIDE = "changes settings of the whole kernel process"

# Standard library modules refused unless opted in, with the reason given in the error.
DENIED: dict[str, str] = {
    **dict.fromkeys(("os", "posix", "nt", "subprocess", "multiprocessing", "concurrent", "pty", "pipes",
                     "platform", "webbrowser", "pydoc", "ensurepip", "venv", "idlelib", "tkinter",
                     "turtle", "turtledemo"), _PROCESSES),
    **dict.fromkeys(("threading", "signal", "asyncio", "selectors", "select", "asyncore",
                     "asynchat"), _THREADS),
    **dict.fromkeys(("socket", "ssl", "http", "urllib", "ftplib", "smtplib", "smtpd", "poplib", "imaplib",
                     "telnetlib", "nntplib", "xmlrpc", "socketserver", "wsgiref"), _NETWORK),
    **dict.fromkeys(("shutil", "tempfile", "pathlib", "io", "fileinput", "glob", "zipfile", "tarfile",
                     "gzip", "bz2", "lzma", "zipapp", "shelve", "dbm", "sqlite3", "logging", "mmap",
                     "fcntl", "filecmp", "netrc", "mailbox", "codecs", "py_compile", "compileall",
                     "trace", "cProfile", "profile", "syslog", "getpass", "readline", "curses",
                     "tty", "termios", "resource", "msilib", "winreg", "msvcrt"), _FILES),
    **dict.fromkeys(("importlib", "imp", "pkgutil", "runpy", "zipimport", "code", "codeop", "builtins",
                     "ctypes", "gc", "inspect", "sys", "atexit", "faulthandler", "tracemalloc", "pdb",
                     "bdb", "site", "sysconfig", "distutils", "lib2to3", "__main__"), _CODE),
    **dict.fromkeys(("locale", "warnings"), _PROCESS_WIDE),
}
_NUMPY_DENIED = {"numpy.f2py": _PROCESSES, "numpy.distutils": _PROCESSES, "numpy.ctypeslib": _CODE,
                 "numpy.testing": _PROCESSES}

# Builtins refused unless opted in (ALLOW_BUILTINS), with the reason.
DENIED_BUILTINS: dict[str, str] = {
    "open": "opens files",
    "exec": "runs code that was not checked", "eval": "runs code that was not checked",
    "compile": "compiles code that was not checked", "__import__": "imports around the rules",
    "breakpoint": "stops the kernel in a debugger", "input": "waits for a terminal",
    "exit": "exits the kernel", "quit": "exits the kernel",
    "__builtins__": "reaches every builtin around the rules",
}
_OPT_INS = ("ALLOW_IMPORTS", "ALLOW_BUILTINS")
_RULE = ("a strategy imports the standard library, numpy, kernel.strategy_api and its sibling "
         "modules (relatively)")


def opt_ins(tree: ast.AST, filename: str) -> dict[str, dict[str, str]]:
    """The module's ``ALLOW_IMPORTS`` / ``ALLOW_BUILTINS`` literals ({name: reason}), read
    from the source. Raises ImportError for a declaration that is not such a literal."""
    out: dict[str, dict[str, str]] = {}
    for node in getattr(tree, "body", []):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, (ast.AnnAssign, ast.AugAssign)) else []
        for target in targets:
            if not (isinstance(target, ast.Name) and target.id in _OPT_INS):
                continue
            where = f"{filename}:{node.lineno}: {target.id}"
            if target.id in out or not isinstance(node, (ast.Assign, ast.AnnAssign)):
                raise ImportError(f"{where} must be declared once, as one dict literal")
            value = node.value
            if not isinstance(value, ast.Dict) or None in value.keys:
                raise ImportError(f"{where} must be a dict literal {{name: reason}}")
            decl: dict[str, str] = {}
            for k, v in zip(value.keys, value.values):
                ok_key = isinstance(k, ast.Constant) and isinstance(k.value, str) and k.value.strip()
                ok_reason = isinstance(v, ast.Constant) and isinstance(v.value, str) and v.value.strip()
                if not (ok_key and ok_reason):
                    raise ImportError(f"{where}: each entry is a name and a non-empty reason, both strings")
                decl[k.value.strip()] = v.value.strip()
            if target.id == "ALLOW_IMPORTS":
                for name in decl:
                    top = name.split(".")[0]
                    if top in _PROJECT or top == "strategies" or top.startswith("_fsgen"):
                        raise ImportError(f"{where}: {name!r} cannot be opted in: the project's own "
                                          "modules are never a strategy's to import")
            out[target.id] = decl
    return out


def _opted(name: str, allowed: dict[str, str]) -> bool:
    parts = name.split(".")
    return any(".".join(parts[:i]) in allowed for i in range(1, len(parts) + 1))


def _refusal(name: str) -> str | None:
    """Why ``name`` (an absolute import) may not be imported without an opt-in, or None."""
    top = name.split(".")[0]
    if top == "numpy":
        hit = next((n for n in _NUMPY_DENIED if name == n or name.startswith(n + ".")), None)
        return f"{name!r} {_NUMPY_DENIED[hit]}" if hit else None
    if top in DENIED:
        return f"{name!r} {DENIED[top]}"
    if top.startswith("_") and top != "__future__":
        return f"{name!r} is a private module of the interpreter"
    if top in sys.stdlib_module_names or top in _ALLOWED_THIRD_PARTY:
        return None
    return f"{name!r} is not allowed: {_RULE}"


def check_imports(tree: ast.AST, filename: str, allowed: dict[str, str] | None = None) -> None:
    """Raise ImportError at the first import that breaks the rules. ``allowed`` is the module's
    ALLOW_IMPORTS (read from the tree when not given)."""
    if allowed is None:
        allowed = opt_ins(tree, filename).get("ALLOW_IMPORTS", {})
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "numpy" or node.module.startswith("numpy."):
                names += [f"{node.module}.{a.name}" for a in node.names]  # from numpy import f2py
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top == "strategies" or top.startswith("_fsgen"):
                # An absolute import would escape the generation and share modules across versions.
                raise ImportError(
                    f"{filename}:{node.lineno}: absolute import of {name!r}: import sibling "
                    "modules relatively (from .indicators import ema)"
                )
            if top in _PROJECT and name not in _ALLOWED_KERNEL_IMPORTS:
                raise ImportError(
                    f"{filename}:{node.lineno}: a strategy may import only kernel.strategy_api, "
                    f"not {name!r}"
                )
            if top in _PROJECT:
                continue
            why = _refusal(name)
            if why is not None and not _opted(name, allowed):
                raise ImportError(f"{filename}:{node.lineno}: import of {why}; to use it anyway, say why "
                                  f"in the module: ALLOW_IMPORTS = {{{top!r}: \"why\"}} (docs/strategies.md)")


def check_builtins(tree: ast.AST, filename: str, allowed: dict[str, str] | None = None) -> None:
    """Raise ImportError at the first use of a refused builtin (``open``, ``exec``, ...), by
    name or as an attribute (``x.__import__``), unless ALLOW_BUILTINS names it."""
    if allowed is None:
        allowed = opt_ins(tree, filename).get("ALLOW_BUILTINS", {})
    for node in ast.walk(tree):
        name = node.id if isinstance(node, ast.Name) else node.attr if (
            isinstance(node, ast.Attribute) and node.attr.startswith("__")) else None
        if name in DENIED_BUILTINS and name not in allowed:
            raise ImportError(f"{filename}:{node.lineno}: {name!r} {DENIED_BUILTINS[name]}: a strategy does "
                              f"not use it; to use it anyway, say why in the module: "
                              f"ALLOW_BUILTINS = {{{name!r}: \"why\"}} (docs/strategies.md)")


def check_source(tree: ast.AST, filename: str) -> dict[str, dict[str, str]]:
    """Every rule of this module on one parsed source; returns its opt-ins."""
    declared = opt_ins(tree, filename)
    check_imports(tree, filename, declared.get("ALLOW_IMPORTS", {}))
    check_builtins(tree, filename, declared.get("ALLOW_BUILTINS", {}))
    return declared
