"""Reads of releases (issue 11): a kernel's stored versions of a strategy, which slots run each
now, a diff between two of them, and what runs where across the fleet (drift).

The store is the kernel's (``DIR/versions/<sha256>/``): the console reads it read-only, only
through the kernel's own readers (kernel/release_store.py), and only on the kernel's host, as
it reads the kernel's ledger for results; it never writes there. What runs is the status
mirror (Kernel.status, the Slot rows). Re-exported by trading/selectors.py.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from kernel import release_store
from kernel.errors import ReloadFailed
from kernel.versions.generations import read_strategy_file

from .models import Kernel, Slot
from .release_status import release_active, strategy_state
from .services.errors import NotFound, ServiceError
from .services.routing import on_this_host

DIFF_CONTEXT = 3


def store_root(kernel: Kernel) -> Path:
    return Path(kernel.state_dir) / release_store.VERSIONS_DIR


def _store_error(kernel: Kernel) -> str:
    if not on_this_host(kernel):
        return f"the kernel's release store is on {kernel.host}: not readable from this console"
    return ""


def _sha_of(value: Any) -> str:
    return value.get("sha256") or "" if isinstance(value, dict) else ""


def strategy_versions(*, kernel: Kernel, strategy: str) -> dict[str, Any]:
    """The stored versions of ``strategy`` on ``kernel``, newest first, each with its manifest
    (number, sha256, first loaded at, by, command id, git commit, files), ``corrupt`` (the
    reason) if its files no longer hash to its name, and which slots run it now; beside them
    what status.json says of the strategy (current, previous, working tree, canary, shadow)."""
    state = strategy_state(kernel, strategy)
    store_error = _store_error(kernel)
    manifests: list[dict[str, Any]] = []
    if not store_error:
        try:
            manifests = [m for m in release_store.store_list(store_root(kernel), strategy, verify=True)
                         if m.get("strategy") == strategy]
        except OSError as exc:
            store_error = f"the kernel's release store could not be read: {exc}"
    slots_by_sha: dict[str, list[str]] = {}
    for slot_id, sha in (Slot.objects.filter(kernel=kernel, strategy=strategy)
                         .exclude(state="unknown").order_by("slot_id").values_list("slot_id", "strategy_sha256")):
        slots_by_sha.setdefault(sha or "", []).append(slot_id)
    current, previous = state.get("sha256") or "", _sha_of(state.get("previous"))
    canary = _sha_of(state.get("canary")) if release_active(state.get("canary")) else ""
    shadow = _sha_of(state.get("shadow")) if release_active(state.get("shadow")) else ""
    versions = []
    for m in sorted(manifests, key=lambda m: m.get("number") or 0, reverse=True):
        sha = m.get("sha256") or ""
        versions.append({
            "number": m.get("number"),
            "sha256": sha,
            "first_loaded_at": m.get("first_loaded_at"),
            "by": m.get("by") or "",
            "command_id": m.get("command_id") or "",
            "commit": m.get("commit") or "",
            "files": sorted((m.get("files") or {}).keys()),
            "corrupt": m.get("corrupt") or "",
            "slots": slots_by_sha.get(sha, []),
            "current": bool(sha) and sha == current,
            "previous": bool(sha) and sha == previous,
            "canary": bool(sha) and sha == canary,
            "shadow": bool(sha) and sha == shadow,
        })
    working_tree = state.get("working_tree") if isinstance(state.get("working_tree"), dict) else {}
    return {
        "kernel": kernel,
        "strategy": strategy,
        "state": state,
        "version": state.get("version"),
        "sha256": current,
        "working_tree": working_tree,
        "drift": bool(working_tree.get("differs")),
        "canary": state.get("canary") or None,  # ended ones too: their state says how
        "shadow": state.get("shadow") or None,
        "running": "canary" if canary else "shadow" if shadow else "",
        "versions": versions,
        "store_error": store_error,
        "slots_by_sha": slots_by_sha,
    }


def _resolve(kernel: Kernel, strategy: str, ref: Any) -> dict[str, Any]:
    try:
        return release_store.store_resolve(store_root(kernel), strategy, ref)
    except ReloadFailed as exc:
        raise NotFound(f"kernel {kernel.name}: {exc.message}") from None


def _texts(kernel: Kernel, manifest: dict[str, Any]) -> dict[str, list[str]]:
    root = store_root(kernel)
    try:
        release_store.entry_verify(root, manifest["sha256"])
        return {name: read_strategy_file(root / manifest["sha256"], name).decode("utf-8").splitlines(True)
                for name in manifest["files"]}
    except (ReloadFailed, UnicodeDecodeError) as exc:
        raise ServiceError(f"kernel {kernel.name}: v{manifest.get('number')} cannot be shown: "
                           f"{getattr(exc, 'message', exc)}") from None


def version_diff(*, kernel: Kernel, strategy: str, a: Any, b: Any) -> dict[str, Any]:
    """Per file, a unified diff (difflib) from stored version ``a`` to ``b`` (numbers, or
    sha256 or a prefix of 6+ hex digits), and its lines classified for a readable page."""
    store_error = _store_error(kernel)
    if store_error:
        raise ServiceError(store_error)
    ma, mb = _resolve(kernel, strategy, a), _resolve(kernel, strategy, b)
    ta, tb = _texts(kernel, ma), _texts(kernel, mb)
    files = []
    for name in sorted(set(ta) | set(tb)):
        old, new = ta.get(name), tb.get(name)
        status = "added" if old is None else "removed" if new is None else "same" if old == new else "changed"
        lines = list(difflib.unified_diff(old or [], new or [], fromfile=f"v{ma.get('number')}/{name}",
                                          tofile=f"v{mb.get('number')}/{name}", n=DIFF_CONTEXT))
        text = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
        files.append({"name": name, "status": status, "diff": text,
                      "lines": [{"kind": _kind(line), "text": line.rstrip("\n")} for line in lines]})
    return {
        "kernel": kernel,
        "strategy": strategy,
        "a": {"number": ma.get("number"), "sha256": ma.get("sha256")},
        "b": {"number": mb.get("number"), "sha256": mb.get("sha256")},
        "files": files,
        "changed": sum(f["status"] != "same" for f in files),
    }


def _kind(line: str) -> str:
    if line.startswith(("---", "+++")):
        return "file"
    if line.startswith("@@"):
        return "hunk"
    return {"+": "add", "-": "del"}.get(line[:1], "ctx")


def kernel_releases(kernel: Kernel) -> dict[str, dict[str, Any]]:
    """Per strategy the kernel reports: version, sha256, working tree drift, canary/shadow."""
    out = {}
    for name, st in sorted(((kernel.status or {}).get("strategies") or {}).items()):
        if not isinstance(st, dict):
            continue
        wt = st.get("working_tree") if isinstance(st.get("working_tree"), dict) else {}
        out[name] = {"version": st.get("version"), "sha256": st.get("sha256") or "",
                     "working_tree_differs": bool(wt.get("differs")), "working_tree_sha256": wt.get("sha256"),
                     "canary": release_active(st.get("canary")), "shadow": release_active(st.get("shadow"))}
    return out


def fleet_strategies(kernels: list[Kernel] | None = None) -> dict[str, dict[str, Any]]:
    """Per strategy, which sha256 runs on each kernel of the fleet, and the drift: kernels on
    different sha256, or a working tree that differs from what runs (each reason spelt out)."""
    kernels = list(Kernel.objects.all()) if kernels is None else kernels
    fleet: dict[str, dict[str, Any]] = {}
    for kernel in kernels:
        for name, rel in kernel_releases(kernel).items():
            entry = fleet.setdefault(name, {"strategy": name, "kernels": {}, "shas": set(), "reasons": []})
            entry["kernels"][kernel.name] = rel
            if rel["sha256"]:
                entry["shas"].add(rel["sha256"])
            if rel["working_tree_differs"]:
                entry["reasons"].append(f"{kernel.name}: working tree differs from running v{rel['version']}")
    for entry in fleet.values():
        if len(entry["shas"]) > 1:
            runs = ", ".join(f"{k} v{r['version']} {r['sha256'][:12]}" for k, r in sorted(entry["kernels"].items()))
            entry["reasons"].insert(0, f"kernels run different versions: {runs}")
        entry["shas"] = sorted(entry["shas"])
        entry["drift"] = bool(entry["reasons"])
    return dict(sorted(fleet.items()))
