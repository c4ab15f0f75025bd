"""Strategy versions: load beside the old one, check, swap under the reload lock.

Each load is a *generation*: a synthetic package ``_fsgen<N>`` whose ``__path__`` is the
strategies folder, so ``from .indicators import ema`` in a strategy resolves to a fresh
``_fsgen<N>.indicators`` too. Nothing is ever ``importlib.reload``-ed: a cycle holding
an old version keeps old module objects, whole. Sources are read once, hashed, and
compiled from that very text (never from cached bytecode, whose (mtime, size) key can
be stale for a file rewritten within a second).
"""
from __future__ import annotations

import ast
import hashlib
import json
import importlib
import importlib.abc
import importlib.machinery
import itertools
import sys
import threading
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import ReloadFailed, StrategyFault
from .protocol import STRATEGY_RE, utcnow_iso
from .strategy_api import Context, Decision, StrategyParams

GEN_PREFIX = "_fsgen"
RELOAD_LOCK_TIMEOUT_S = 3.0
_ALLOWED_KERNEL_IMPORTS = {"kernel.strategy_api"}
_gen_counter = itertools.count(1)


class _Generation:
    def __init__(self, package: str, folder: Path) -> None:
        self.package = package
        self.folder = folder
        self.files: dict[str, str] = {}  # file name -> sha256 of the text compiled
        self.modules: list[types.ModuleType] = []


class _GenerationFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``_fsgenN.<module>`` in that generation's folder and compiles it from the
    source text it hashes."""

    def __init__(self) -> None:
        self.generations: dict[str, _Generation] = {}
        self._lock = threading.Lock()

    def find_spec(self, fullname, path=None, target=None):
        head, _, rest = fullname.partition(".")
        gen = self.generations.get(head)
        if gen is None or not rest:
            return None
        if "." in rest:
            return None  # sub-packages are not part of the strategy API
        file = gen.folder / f"{rest}.py"
        if not file.is_file():
            return None
        return importlib.machinery.ModuleSpec(fullname, self, origin=str(file))

    def create_module(self, spec):
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        fullname = module.__name__
        gen = self.generations[fullname.partition(".")[0]]
        file = Path(module.__spec__.origin)
        raw = file.read_bytes()
        gen.files[file.name] = hashlib.sha256(raw).hexdigest()
        source = raw.decode("utf-8")
        tree = ast.parse(source, filename=str(file))
        _check_imports(tree, file.name)
        module.__file__ = str(file)
        gen.modules.append(module)
        code = compile(tree, str(file), "exec", dont_inherit=True)
        exec(code, module.__dict__)


def _check_imports(tree: ast.AST, filename: str) -> None:
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
                raise ImportError(
                    f"{filename}:{node.lineno}: absolute import of {name!r}: import sibling "
                    "modules relatively (from .indicators import ema)"
                )
            if top in ("kernel", "trading", "foresight_site", "django") and name not in _ALLOWED_KERNEL_IMPORTS:
                raise ImportError(
                    f"{filename}:{node.lineno}: a strategy may import only kernel.strategy_api, "
                    f"not {name!r}"
                )


_finder = _GenerationFinder()
sys.meta_path.insert(0, _finder)


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


@dataclass
class StrategyVersion:
    name: str
    number: int
    sha256: str
    files: dict[str, str]
    loaded_at: str
    package: str
    module: types.ModuleType
    modules: list[types.ModuleType]
    params_model: type[StrategyParams]
    evaluate: Callable[[Context], Decision]
    warmup_fn: Callable[[StrategyParams], int] | None
    state_schema: int
    migrate_state: Callable[[dict, int], dict] | None
    baseline: str = ""  # module state fingerprint after the checks
    _watch: list | None = None  # (module, number of globals, {name: repr}) taken with baseline
    tainted: str | None = None  # set once a cycle saw its module state change

    def set_baseline(self) -> None:
        """Take the module state that every later cycle is compared with."""
        self.baseline = module_state_fingerprint(self.modules)
        self._watch = [(m, len(vars(m)), _watched(m)) for m in self.modules]

    def state_changed(self) -> bool:
        """Did module-level state change since the baseline? Cheaper than a fingerprint (it
        runs after every evaluate): a new global changes the count, a mutated value its repr."""
        if self._watch is None:
            return False
        for mod, count, values in self._watch:
            if len(vars(mod)) != count:
                return True
            for name, text in values.items():
                try:
                    if repr(vars(mod).get(name)) != text:
                        return True
                except Exception:  # noqa: BLE001 - an unrepresentable value was so at baseline too
                    continue
        return False

    def warmup(self, params: StrategyParams) -> int:
        if self.warmup_fn is None:
            return 100
        return max(1, min(int(self.warmup_fn(params)), 5000))

    def params(self, raw: dict[str, Any]) -> StrategyParams:
        return self.params_model.model_validate(raw)

    def describe(self) -> dict[str, Any]:
        return {"version": self.number, "sha256": self.sha256}

    def unload(self) -> None:
        """Drop the generation from sys.modules; cycles still holding it keep working."""
        for key in [k for k in sys.modules if k == self.package or k.startswith(self.package + ".")]:
            sys.modules.pop(key, None)
        _finder.generations.pop(self.package, None)


def version_sha(files: dict[str, str]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(f"{name}\0{files[name]}\n".encode())
    return h.hexdigest()


class StrategyLoader:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder).resolve()

    def exists(self, name: str) -> bool:
        return bool(STRATEGY_RE.match(name)) and (self.folder / f"{name}.py").is_file()

    def available(self) -> list[str]:
        """Modules of the folder that define ``evaluate`` (helpers such as indicators do not)."""
        out = []
        for p in self.folder.glob("*.py"):
            if not STRATEGY_RE.match(p.stem):
                continue
            try:
                tree = ast.parse(p.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, OSError):
                out.append(p.stem)  # broken, but meant as a strategy: reloading it reports why
                continue
            if any(isinstance(n, ast.FunctionDef) and n.name == "evaluate" for n in tree.body):
                out.append(p.stem)
        return sorted(out)

    def load(self, name: str, number: int) -> StrategyVersion:
        """Import ``name`` as a fresh generation and check its interface. Raises
        ReloadFailed (with .stage) and leaves nothing behind on failure."""
        if not STRATEGY_RE.match(name):
            raise ReloadFailed("name", f"{name!r} is not a strategy name (a-z, 0-9, _)")
        if not (self.folder / f"{name}.py").is_file():
            raise ReloadFailed("name", f"no strategy {name!r} in {self.folder}")
        package = f"{GEN_PREFIX}{next(_gen_counter)}"
        gen = _Generation(package, self.folder)
        pkg = types.ModuleType(package)
        pkg.__path__ = [str(self.folder)]  # type: ignore[attr-defined]
        pkg.__package__ = package
        pkg.__spec__ = importlib.machinery.ModuleSpec(package, None, is_package=True)
        _finder.generations[package] = gen
        sys.modules[package] = pkg
        try:
            try:
                module = importlib.import_module(f"{package}.{name}")
            except SyntaxError as exc:
                raise ReloadFailed("import", f"syntax error in {Path(exc.filename or '').name}:{exc.lineno}: {exc.msg}") from exc
            except ImportError as exc:
                raise ReloadFailed("import", f"import failed: {exc}") from exc
            except BaseException as exc:  # noqa: BLE001 - any exception at import time
                raise ReloadFailed("import", f"exception at import: {type(exc).__name__}: {exc}") from exc
            version = self._interface(name, number, package, module, gen)
        except BaseException:
            for key in [k for k in sys.modules if k == package or k.startswith(package + ".")]:
                sys.modules.pop(key, None)
            _finder.generations.pop(package, None)
            raise
        return version

    @staticmethod
    def _interface(name, number, package, module, gen: _Generation) -> StrategyVersion:
        evaluate = getattr(module, "evaluate", None)
        if not callable(evaluate):
            raise ReloadFailed("interface", f"{name} has no evaluate(ctx) function")
        params_model = getattr(module, "Params", None)
        if not (isinstance(params_model, type) and issubclass(params_model, StrategyParams)):
            raise ReloadFailed("interface", f"{name}.Params must be a subclass of kernel.strategy_api.StrategyParams")
        warmup = getattr(module, "warmup", None)
        if warmup is not None and not callable(warmup):
            raise ReloadFailed("interface", f"{name}.warmup must be a function")
        schema = getattr(module, "STATE_SCHEMA", 1)
        if not isinstance(schema, int) or isinstance(schema, bool):
            raise ReloadFailed("interface", f"{name}.STATE_SCHEMA must be an int")
        migrate = getattr(module, "migrate_state", None)
        if migrate is not None and not callable(migrate):
            raise ReloadFailed("interface", f"{name}.migrate_state must be a function")
        files = dict(gen.files)
        return StrategyVersion(
            name=name,
            number=number,
            sha256=version_sha(files),
            files=files,
            loaded_at=utcnow_iso(),
            package=package,
            module=module,
            modules=list(gen.modules),
            params_model=params_model,
            evaluate=evaluate,
            warmup_fn=warmup,
            state_schema=schema,
            migrate_state=migrate,
        )


@dataclass
class SmokeSample:
    """One recent situation a new version must handle before it goes live."""

    slot: str
    symbol: str
    timeframe: str
    params: dict[str, Any]
    candles: tuple
    position: float
    entry_price: float | None
    state: dict[str, Any] = field(default_factory=dict)
    state_schema: int | None = None


def run_evaluate(version: StrategyVersion, ctx: Context) -> Decision:
    """strategy_safe_wrapper: whatever the strategy does, the kernel gets a Decision or a
    StrategyFault, never a stray exception."""
    try:
        decision = version.evaluate(ctx)
    except Exception as exc:  # noqa: BLE001
        raise StrategyFault(f"evaluate raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(decision, Decision):
        raise StrategyFault(f"evaluate returned {type(decision).__name__}, not a Decision")
    return decision


def migrate(version: StrategyVersion, state: dict, from_schema: int | None) -> dict:
    if from_schema is None or from_schema == version.state_schema:
        return state
    if version.migrate_state is None:
        return {}  # an incompatible old state is dropped rather than misread
    try:
        out = version.migrate_state(dict(state), from_schema)
    except Exception as exc:  # noqa: BLE001
        raise StrategyFault(f"migrate_state raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(out, dict):
        raise StrategyFault("migrate_state must return a dict")
    return out


def check_version(version: StrategyVersion, samples: list[SmokeSample], budget_s: float) -> None:
    """The checks a version passes before it is published: params of every slot valid,
    a smoke evaluation on recent candles within the time budget, and no module state
    changed by it. Raises ReloadFailed."""
    contexts = []
    for s in samples:
        try:
            params = version.params(s.params)
        except Exception as exc:  # noqa: BLE001 - pydantic's message names the field
            raise ReloadFailed("params", f"params of slot {s.slot} no longer valid: {exc}") from exc
        try:
            state = migrate(version, s.state, s.state_schema)
        except StrategyFault as exc:
            raise ReloadFailed("migrate", f"slot {s.slot}: {exc}") from exc
        contexts.append(
            Context(
                slot=s.slot, symbol=s.symbol, timeframe=s.timeframe,
                now_ms=(s.candles[-1].ts if s.candles else 0), candles=s.candles,
                position=s.position, entry_price=s.entry_price, params=params,
                state=types.MappingProxyType(state), entries_allowed=True,
            )
        )
    baseline = module_state_fingerprint(version.modules)
    outcome: dict[str, Any] = {}

    def smoke() -> None:
        try:
            for ctx in contexts:
                d = run_evaluate(version, ctx)
                if d.state is not None:
                    json.dumps(d.state)
            outcome["ok"] = True
        except BaseException as exc:  # noqa: BLE001
            outcome["error"] = exc

    t = threading.Thread(target=smoke, name=f"smoke-{version.name}", daemon=True)
    t.start()
    t.join(budget_s)
    if t.is_alive():
        raise ReloadFailed("budget", f"smoke evaluation did not finish within its budget of {budget_s * 1000:.0f} ms")
    if "error" in outcome:
        exc = outcome["error"]
        if isinstance(exc, TypeError) and "JSON" in str(exc):
            raise ReloadFailed("smoke", f"state is not JSON-serialisable: {exc}")
        raise ReloadFailed("smoke", f"smoke evaluation failed: {exc}")
    after = module_state_fingerprint(version.modules)
    if after != baseline:
        raise ReloadFailed("stateless", "evaluate changed module-level state: strategies must be stateless "
            "(return what you want kept in Decision.state)")
    version.set_baseline()


class StrategyRegistry:
    """Which version of each strategy is current, and the previous one for rollback.

    ``pin`` (every new cycle) and ``swap`` (every reload) share one lock; the swap holds
    it only for the reference change.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.current: dict[str, StrategyVersion] = {}
        self.previous: dict[str, StrategyVersion] = {}
        self.numbers: dict[str, int] = {}

    def next_number(self, name: str) -> int:
        return self.numbers.get(name, 0) + 1

    def pin(self, name: str) -> tuple[StrategyVersion | None, int]:
        """The version a cycle will run, and how long it waited for the lock (ns)."""
        if self.lock.acquire(blocking=False):  # uncontended: no wait to speak of
            try:
                return self.current.get(name), 0
            finally:
                self.lock.release()
        t0 = time.perf_counter_ns()
        with self.lock:
            waited = time.perf_counter_ns() - t0
            return self.current.get(name), waited

    def get(self, name: str) -> StrategyVersion | None:
        return self.current.get(name)

    def swap(self, version: StrategyVersion, timeout_s: float = RELOAD_LOCK_TIMEOUT_S) -> float:
        """Publish ``version``; returns the lock wait in ms. Raises ReloadFailed (stage
        "lock") when the lock cannot be had in time: the reload is abandoned, not the
        cycles."""
        t0 = time.perf_counter_ns()
        if not self.lock.acquire(timeout=timeout_s):
            raise ReloadFailed(
                "lock", f"reload lock not acquired within {timeout_s:.1f} s; reload abandoned"
            )
        try:
            waited_ms = (time.perf_counter_ns() - t0) / 1e6
            old = self.current.get(version.name)
            self.current[version.name] = version
        finally:
            self.lock.release()
        self.numbers[version.name] = max(self.numbers.get(version.name, 0), version.number)
        if old is not None:
            dropped = self.previous.get(version.name)
            self.previous[version.name] = old
            if dropped is not None and dropped is not version:
                dropped.unload()
        return waited_ms

    def rollback(self, name: str, timeout_s: float = RELOAD_LOCK_TIMEOUT_S) -> tuple[StrategyVersion, StrategyVersion, float]:
        """Swap back to the previous version; returns (now current, now previous, wait ms)."""
        prev = self.previous.get(name)
        if prev is None:
            raise ReloadFailed("rollback", f"no previous version of {name} to roll back to")
        t0 = time.perf_counter_ns()
        if not self.lock.acquire(timeout=timeout_s):
            raise ReloadFailed("lock", f"reload lock not acquired within {timeout_s:.1f} s; rollback abandoned")
        try:
            waited_ms = (time.perf_counter_ns() - t0) / 1e6
            cur = self.current[name]
            self.current[name] = prev
            self.previous[name] = cur
        finally:
            self.lock.release()
        return prev, cur, waited_ms
