"""Strategies keep no state of their own: everything a version's modules reach, watched.

A strategy keeps what it wants remembered in ``Decision.state``; anything else that changes
between two calls is state hidden from the kernel. The walk starts at the globals of every
module of the version (the strategy and its sibling helpers) and follows:

- functions of the generation: their defaults (``__defaults__``, ``__kwdefaults__``), closure
  cells and attributes (``__dict__``); bound methods (their ``__self__``), ``functools.partial``;
- classes of the generation: their ``__dict__`` (class attributes, methods, nested classes),
  and their base classes of the generation;
- instances (``__dict__`` and ``__slots__``) and containers (dict, list, set, deque, tuple,
  frozenset, mappingproxy, bytearray, arrays, numpy arrays), recursively, each object once.

Code and values from elsewhere (modules, classes and functions of the standard library, numpy,
``kernel.strategy_api``) are followed no further than their identity: rebinding a global to
another one is a change, their own internals are not the strategy's. An iterator or a generator
at module level is refused outright (consuming it is state), and so is module data too large or
too deeply nested to watch (MAX_WATCHED ids, MAX_DEPTH levels): in doubt, refuse.

Each mutable place found is a *probe*: the object and a cheap signature of it (the identities
of what it holds, in order). ``module_state_watch`` takes them once a version passed its
checks; ``module_state_changed`` recomputes the signatures after every cycle (the cost is in
docs/benchmarks.md, "Statelessness check"). ``module_state_fingerprint`` digests the same
signatures, to compare the state before and after a smoke evaluation. Both compare identities
within one process only: nothing here is stored.

``check_static_state`` refuses, before the module runs, what is certain from the source: a
mutable default argument (``def f(x=[])``) of a function defined in the strategy package.
"""
from __future__ import annotations

import array
import ast
import collections
import functools
import hashlib
import random
import types
from typing import Any, Callable

from ..errors import ReloadFailed

MAX_DEPTH = 48  # levels of nesting below a module global
MAX_WATCHED = 50_000  # identities compared per check (elements of mutable containers, attributes)
MAX_ARRAY_BYTES = 8 * 1024 * 1024  # bytes of mutable arrays hashed per check

# Module globals that are the import system's, not the strategy's.
_MODULE_MACHINERY = frozenset({"__builtins__", "__loader__", "__spec__", "__name__", "__file__", "__cached__",
                               "__package__", "__doc__", "__path__"})
# Class attributes that Python or pydantic own (some of them filled lazily, e.g. __annotations__).
_CLASS_MACHINERY = frozenset({
    "__module__", "__qualname__", "__doc__", "__dict__", "__weakref__", "__annotations__", "__slots__",
    "__abstractmethods__", "__orig_bases__", "__parameters__", "__firstlineno__", "__static_attributes__",
    "__signature__", "__class_vars__", "__private_attributes__", "__type_params__", "__match_args__",
    "_is_protocol", "_is_runtime_protocol", "__protocol_attrs__", "__non_callable_proto_members__",
    "__callable_proto_members_only__", "__hash__",
})
_CLASS_MACHINERY_PREFIXES = ("__pydantic", "_abc_")
# Immutable values: their identity, held by the parent's signature, is all there is to watch.
_ATOMS = (int, float, complex, str, bytes, bool, type(None), type(Ellipsis), type(NotImplemented), range, slice)
_DESCRIPTORS = (types.MemberDescriptorType, types.GetSetDescriptorType, types.WrapperDescriptorType,
                types.MethodDescriptorType, types.MethodWrapperType, types.ClassMethodDescriptorType)
_CODE_MODULES = frozenset({"typing", "typing_extensions", "__future__", "abc", "re", "enum"})
_MISSING = object()


class Probe:
    """One mutable place: where it is (for messages), the object, and its signature then."""

    __slots__ = ("path", "obj", "sig", "snap")

    def __init__(self, path: str, obj: Any, sig: Callable[[Any], Any]) -> None:
        self.path, self.obj, self.sig = path, obj, sig
        self.snap = sig(obj)


ModuleStateWatch = list[Probe]

# ------------------------------------------------------------------ signatures (cheap, per cycle)


def _sig_mapping(d) -> tuple:
    return tuple(d), tuple(map(id, d.values()))


def _sig_sequence(seq) -> tuple:
    return tuple(map(id, seq))


def _sig_set(s) -> frozenset:
    return frozenset(map(id, s))


def _sig_bytes(b) -> bytes:
    return b.tobytes() if isinstance(b, array.array) else bytes(b)


def _sig_array(a) -> tuple:
    return a.shape, a.dtype.str, hashlib.blake2b(a.tobytes(), digest_size=16).digest()


def _sig_function(f) -> tuple:
    d = f.__dict__  # a function's attributes: rebinding one, or adding one, is a change
    return (id(f.__code__), id(f.__defaults__), id(f.__kwdefaults__), id(f.__closure__), id(d),
            tuple(d), tuple(map(id, d.values())))


def _sig_cell(cell) -> int:
    try:
        return id(cell.cell_contents)
    except ValueError:  # an empty cell
        return 0


def _class_items(cls) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in cls.__dict__.items()
            if k not in _CLASS_MACHINERY and not k.startswith(_CLASS_MACHINERY_PREFIXES)]


def _sig_class(cls) -> tuple:
    return tuple((k, id(v)) for k, v in _class_items(cls))


def _slot_names(t: type) -> list[tuple[type, str]]:
    out = []
    for klass in t.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        for name in ((slots,) if isinstance(slots, str) else slots):
            if name in ("__dict__", "__weakref__"):
                continue
            if name.startswith("__") and not name.endswith("__"):
                name = f"_{klass.__name__.lstrip('_')}{name}"  # name-mangled private slot
            out.append((klass, name))
    return out


def _instance_dict(obj) -> dict | None:
    try:
        d = object.__getattribute__(obj, "__dict__")
    except (AttributeError, TypeError):
        return None
    return d if isinstance(d, dict) else None


def _slot_values(obj) -> list:
    out = []
    for klass, name in _slot_names(type(obj)):
        desc = klass.__dict__.get(name)
        try:
            out.append(desc.__get__(obj, type(obj)) if desc is not None else _MISSING)
        except AttributeError:  # an unset slot
            out.append(_MISSING)
    return out


def _sig_instance(obj) -> tuple:
    return id(type(obj)), id(_instance_dict(obj)), tuple(map(id, _slot_values(obj)))


def _sig_partial(p) -> tuple:
    return id(p.func), id(p.args), id(p.keywords)


def _sig_random(r) -> tuple:
    return r.getstate()


def _sig_repr(obj) -> str:
    return repr(obj)[:2000]


# ------------------------------------------------------------------ the walk (once per baseline)


class _Walk:
    def __init__(self, modules: list[types.ModuleType]) -> None:
        self.gen_names = {m.__name__ for m in modules}
        self.gen_globals = {id(vars(m)) for m in modules}
        self.package = modules[0].__name__.rpartition(".")[0] if modules else ""
        self.seen: set[int] = set()
        self.probes: ModuleStateWatch = []
        self.watched = 0
        self.array_bytes = 0

    def run(self, modules: list[types.ModuleType]) -> ModuleStateWatch:
        for mod in modules:
            self.seen.add(id(mod))
        for mod in modules:
            d = vars(mod)
            name = self._short(mod.__name__)
            self.seen.add(id(d))
            self.probe(name, d, _sig_mapping)
            for key, value in list(d.items()):
                if key not in _MODULE_MACHINERY:
                    self.visit(value, f"{name}.{key}", 1)
        return self.probes

    def _short(self, name: str) -> str:
        return name[len(self.package) + 1:] if self.package and name.startswith(self.package + ".") else name

    def probe(self, path: str, obj: Any, sig: Callable[[Any], Any]) -> None:
        p = Probe(path, obj, sig)
        sized = isinstance(obj, (dict, list, set, collections.deque, bytearray, array.array))
        self.watched += len(obj) + 1 if sized else 1
        if self.watched > MAX_WATCHED:
            raise ReloadFailed("stateless", f"{path}: module-level data too large to check for state (over "
                               f"{MAX_WATCHED} values in mutable containers): make it immutable (tuple, "
                               "frozenset, MappingProxyType) or build it inside evaluate")
        self.probes.append(p)

    def visit(self, obj: Any, path: str, depth: int) -> None:  # noqa: C901 - one branch per kind of value
        if isinstance(obj, _ATOMS) or id(obj) in self.seen:
            return
        self.seen.add(id(obj))
        if depth > MAX_DEPTH:
            raise ReloadFailed("stateless", f"{path}: module-level data nested deeper than {MAX_DEPTH} levels "
                               "cannot be checked for state")
        nxt = depth + 1
        if isinstance(obj, (types.ModuleType, *_DESCRIPTORS)):
            return  # the generation's modules are roots of their own; other modules are not the strategy's
        if isinstance(obj, types.FunctionType):
            if id(obj.__globals__) in self.gen_globals:
                self.function(obj, path, nxt)
            return
        if isinstance(obj, type):
            if obj.__module__ in self.gen_names:
                self.klass(obj, path, nxt)
            return
        if isinstance(obj, (staticmethod, classmethod)):
            self.visit(obj.__func__, path, nxt)
            return
        if isinstance(obj, property):
            for f in (obj.fget, obj.fset, obj.fdel):
                self.visit(f, path, nxt)
            return
        if isinstance(obj, (types.MethodType, types.BuiltinMethodType)):
            # a bound method keeps its object: ``push = _QUEUE.append`` is the queue
            self.visit(getattr(obj, "__self__", None), f"{path}.__self__", nxt)
            self.visit(getattr(obj, "__func__", None), path, nxt)
            return
        if isinstance(obj, functools.partial):
            self.probe(path, obj, _sig_partial)
            for i, part in enumerate((obj.func, obj.args, obj.keywords)):
                self.visit(part, f"{path}.{('func', 'args', 'keywords')[i]}", nxt)
            return
        t = type(obj)
        if t.__module__ in _CODE_MODULES and not isinstance(obj, (dict, list, set)):
            return  # typing aliases, compiled patterns, enum machinery: code, not state
        if hasattr(t, "__next__") or isinstance(obj, (types.GeneratorType, types.CoroutineType,
                                                       types.AsyncGeneratorType)):
            raise ReloadFailed("stateless", f"{path}: a module-level {t.__name__} is an iterator, and consuming "
                               "it between calls is state: build it inside evaluate")
        if isinstance(obj, random.Random):
            self.probe(path, obj, _sig_random)
            return
        if hasattr(obj, "__array_interface__") and hasattr(obj, "tobytes") and hasattr(obj, "dtype"):
            self.array_bytes += int(getattr(obj, "nbytes", 0))
            if self.array_bytes > MAX_ARRAY_BYTES:
                raise ReloadFailed("stateless", f"{path}: module-level arrays too large to check for state "
                                   f"(over {MAX_ARRAY_BYTES} bytes): build them inside evaluate")
            self.probe(path, obj, _sig_array)
            if getattr(obj, "dtype", None) is not None and obj.dtype.hasobject:
                for i, item in enumerate(obj.ravel().tolist()):
                    self.visit(item, f"{path}[{i}]", nxt)
            return
        self.container(obj, path, nxt)
        d = _instance_dict(obj)
        slots = _slot_names(t)
        if d is not None or slots:
            self.probe(path, obj, _sig_instance)
            if d is not None:
                self.seen.add(id(d))
                self.probe(f"{path}.__dict__", d, _sig_mapping)
                for k, v in list(d.items()):
                    self.visit(v, f"{path}.{k}", nxt)
            for value, (_, name) in zip(_slot_values(obj), slots):
                self.visit(value, f"{path}.{name}", nxt)
        elif not self._is_container(obj) and not callable(obj):
            self.probe(path, obj, _sig_repr)  # an opaque object: what it shows of itself

    @staticmethod
    def _is_container(obj: Any) -> bool:
        return isinstance(obj, (dict, list, set, frozenset, tuple, collections.deque, types.MappingProxyType,
                                bytearray, array.array, memoryview))

    def container(self, obj: Any, path: str, depth: int) -> None:
        if isinstance(obj, (dict, types.MappingProxyType)):
            if isinstance(obj, dict):
                self.probe(path, obj, _sig_mapping)
            if isinstance(obj, collections.defaultdict):
                self.visit(obj.default_factory, f"{path}.default_factory", depth)
            for k, v in list(obj.items()):
                self.visit(k, f"{path}[{k!r}]", depth)
                self.visit(v, f"{path}[{k!r}]", depth)
        elif isinstance(obj, (list, collections.deque, set)):
            self.probe(path, obj, _sig_set if isinstance(obj, set) else _sig_sequence)
            for i, v in enumerate(list(obj)):
                self.visit(v, f"{path}[{i}]", depth)
        elif isinstance(obj, (tuple, frozenset)):
            for i, v in enumerate(obj):
                self.visit(v, f"{path}[{i}]", depth)
        elif isinstance(obj, (bytearray, array.array)):
            self.probe(path, obj, _sig_bytes)
        elif isinstance(obj, memoryview):
            self.visit(obj.obj, f"{path}.obj", depth)

    def function(self, fn: types.FunctionType, path: str, depth: int) -> None:
        self.probe(f"{path}()", fn, _sig_function)
        for i, value in enumerate(fn.__defaults__ or ()):
            self.visit(value, f"{path}() default #{i + 1}", depth)
        if fn.__kwdefaults__ is not None:
            self.visit(fn.__kwdefaults__, f"{path}() keyword defaults", depth)
        for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
            self.probe(f"{path}() closure cell {name!r}", cell, _sig_cell)
            try:
                self.visit(cell.cell_contents, f"{path}() closure cell {name!r}", depth)
            except ValueError:
                pass
        self.seen.add(id(fn.__dict__))  # in the function's own signature
        for key, value in list(fn.__dict__.items()):
            self.visit(value, f"{path}.{key}", depth)

    def klass(self, cls: type, path: str, depth: int) -> None:
        self.probe(path, cls, _sig_class)
        for key, value in _class_items(cls):
            self.visit(value, f"{path}.{key}", depth)
        for base in cls.__mro__[1:]:
            if base.__module__ in self.gen_names:
                self.visit(base, f"{path} (base {base.__qualname__})", depth)


# ------------------------------------------------------------------ the API


def module_state_watch(modules: list[types.ModuleType]) -> ModuleStateWatch:
    """Every mutable place reachable from ``modules``, with its signature now. Raises
    ReloadFailed("stateless") for what cannot be watched (an iterator, data too large/deep)."""
    return _Walk(modules).run(modules)


def module_state_change(watch: ModuleStateWatch) -> str | None:
    """Where state changed since ``watch`` was taken (the first place found), or None."""
    for p in watch:
        try:
            if p.sig(p.obj) != p.snap:
                return p.path
        except Exception:  # noqa: BLE001 - e.g. a dict resized while read: it did change
            return p.path
    return None


def module_state_changed(watch: ModuleStateWatch) -> bool:
    """Did anything reachable change since ``watch`` was taken? (Runs after every cycle.)"""
    return module_state_change(watch) is not None


def module_state_fingerprint(modules: list[types.ModuleType]) -> str:
    """A digest of the signatures of everything the modules reach: equal before and after a
    smoke evaluation unless it changed some state. (Identities: compare within one process.)"""
    return watch_fingerprint(module_state_watch(modules))


def watch_fingerprint(watch: ModuleStateWatch) -> str:
    """The digest of a watch's signatures as they were taken."""
    h = hashlib.blake2b(digest_size=16)
    for p in watch:
        h.update(p.path.encode("utf-8", "replace"))
        h.update(repr(p.snap).encode("utf-8", "replace"))
    return h.hexdigest()


# ------------------------------------------------------------------ static: mutable defaults

_MUTABLE_NODES = (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp)
_MUTABLE_CALLS = frozenset({"list", "dict", "set", "bytearray", "deque", "defaultdict", "OrderedDict",
                            "Counter", "array", "SimpleNamespace"})


def _is_mutable_default(node: ast.AST | None) -> bool:
    if isinstance(node, _MUTABLE_NODES):
        return True
    if isinstance(node, ast.Call):
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        return name in _MUTABLE_CALLS
    return False


class _Defaults(ast.NodeVisitor):
    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.scope: list[str] = []

    def _check(self, node, name: str) -> None:
        args = node.args
        positional = args.posonlyargs + args.args
        pairs = list(zip(positional[len(positional) - len(args.defaults):], args.defaults))
        pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
        for arg, default in pairs:
            if _is_mutable_default(default):
                qual = ".".join([*self.scope, name])
                raise ReloadFailed("stateless", (
                    f"{self.filename}:{default.lineno}: {qual}() has a mutable default for argument "
                    f"{arg.arg!r} ({ast.unparse(default)[:40]}): a default is made once and keeps state "
                    "between calls; default to None or a tuple/frozenset"))

    def _scoped(self, node, name: str) -> None:
        self.scope.append(name)
        self.generic_visit(node)
        self.scope.pop()

    def visit_FunctionDef(self, node) -> None:
        self._check(node, node.name)
        self._scoped(node, node.name)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node) -> None:
        self._check(node, "<lambda>")
        self.generic_visit(node)

    def visit_ClassDef(self, node) -> None:
        self._scoped(node, node.name)


def check_static_state(tree: ast.AST, filename: str) -> None:
    """Refuse, before the module runs, a mutable default argument ([], {}, set(), ...) of any
    function or lambda in it, naming the function and the argument."""
    _Defaults(filename).visit(tree)
