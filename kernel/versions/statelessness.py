"""Strategies keep no state at module level: the values that could hold it, fingerprinted.

Functions, classes and modules are code, not state; everything else a module holds at
its top level is watched. A version is fingerprinted once its checks pass (the baseline);
after each cycle a cheaper watch says whether anything moved since.
"""
from __future__ import annotations

import hashlib
import types

_SKIP_TYPES = (
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    type,
    staticmethod,
    classmethod,
    property,
)

# (module, number of globals, {name: repr}) per module, taken with the baseline
ModuleStateWatch = list[tuple[types.ModuleType, int, dict[str, str]]]


def _watched(mod: types.ModuleType) -> dict[str, str]:
    out = {}
    for key, value in vars(mod).items():
        if key.startswith("__") or isinstance(value, _SKIP_TYPES) or callable(value):
            continue
        try:
            out[key] = repr(value)
        except Exception:  # noqa: BLE001
            continue
    return out


def module_state_fingerprint(modules: list[types.ModuleType]) -> str:
    """A digest of every module-level value that could hold state (not functions,
    classes or modules). Strategies keep none, so it never changes, unless one cheats."""
    h = hashlib.blake2b(digest_size=16)
    for mod in modules:
        h.update(mod.__name__.encode())
        for key, value in sorted(vars(mod).items(), key=lambda kv: kv[0]):
            if key.startswith("__") or isinstance(value, _SKIP_TYPES) or callable(value):
                continue
            h.update(key.encode())
            try:
                h.update(repr(value).encode("utf-8", "replace"))
            except Exception:  # noqa: BLE001 - an unrepresentable value still counts
                h.update(b"<unrepr>" + str(id(value)).encode())
    return h.hexdigest()


def module_state_watch(modules: list[types.ModuleType]) -> ModuleStateWatch:
    """What ``module_state_changed`` compares with later."""
    return [(m, len(vars(m)), _watched(m)) for m in modules]


def module_state_changed(watch: ModuleStateWatch) -> bool:
    """Did module-level state change since ``watch`` was taken? Cheaper than a fingerprint (it
    runs after every evaluate): a new global changes the count, a mutated value its repr."""
    for mod, count, values in watch:
        if len(vars(mod)) != count:
            return True
        for name, text in values.items():
            try:
                if repr(vars(mod).get(name)) != text:
                    return True
            except Exception:  # noqa: BLE001 - an unrepresentable value was so at baseline too
                continue
    return False
