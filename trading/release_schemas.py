"""Request (In) and response (Out) schemas of the releases API (trading/api_releases.py)."""
from __future__ import annotations

import re
from typing import Any, Optional

from ninja import Field, Schema
from pydantic import ConfigDict, model_validator

from kernel.protocol import SLOT_ID_PATTERN

SHA256_PATTERN = r"^[0-9a-f]{64}$"
REASON = Field(..., min_length=1, max_length=500, description="why: goes into the audit log (required)")


class ReasonIn(Schema):
    model_config = ConfigDict(extra="forbid")

    reason: str = REASON


class RollbackToIn(Schema):
    """Back to a stored version: its ``version`` number or its ``sha256``; neither: the previous one."""

    model_config = ConfigDict(extra="forbid")

    reason: str = REASON
    version: Optional[int] = Field(None, ge=1, le=10**9)
    sha256: Optional[str] = Field(None, pattern=SHA256_PATTERN)

    @model_validator(mode="after")
    def _one_of(self):
        if self.version is not None and self.sha256 is not None:
            raise ValueError("give a version or a sha256, not both")
        return self


class BudgetIn(Schema):
    model_config = ConfigDict(extra="forbid")

    cycles: Optional[int] = Field(None, ge=1, le=100_000, description="cycles on the canary slots (kernel default 20)")
    faults: Optional[int] = Field(None, ge=0, le=100_000, description="faults allowed before it goes back (default 1)")


class CanaryIn(Schema):
    model_config = ConfigDict(extra="forbid")

    reason: str = REASON
    slots: list[str] = Field(..., min_length=1, max_length=1000, description="the slots that run the new version")
    budget: Optional[BudgetIn] = None

    @model_validator(mode="after")
    def _slot_ids(self):
        bad = [s for s in self.slots if not re.match(SLOT_ID_PATTERN, s)]
        if bad:
            raise ValueError(f"not a slot id: {bad[0]!r}")
        return self


class ShadowIn(Schema):
    model_config = ConfigDict(extra="forbid")

    reason: str = REASON
    cycles: Optional[int] = Field(None, ge=1, le=100_000, description="shadow evaluations per slot (kernel default 50)")


class FleetReloadIn(Schema):
    model_config = ConfigDict(extra="forbid")

    reason: str = REASON
    kernels: Optional[list[str]] = Field(None, max_length=1000,
                                         description="these kernels only; every kernel that runs it when absent")
    sha256: Optional[str] = Field(None, pattern=SHA256_PATTERN, description="the sha256 every kernel should reach")


class VersionOut(Schema):
    number: Optional[int] = None
    sha256: str
    first_loaded_at: Optional[str] = None
    by: str = ""
    command_id: str = ""
    commit: str = Field("", description="the strategies folder's git commit, or \"uncommitted\"")
    files: list[str] = []
    corrupt: str = Field("", description="why its files no longer hash to its name (never loaded)")
    slots: list[str] = Field([], description="slots that run it now")
    current: bool = False
    previous: bool = False
    canary: bool = False
    shadow: bool = False


class VersionsOut(Schema):
    kernel: str
    strategy: str
    version: Optional[int] = Field(None, description="the version that runs")
    sha256: str = ""
    working_tree: dict[str, Any] = Field({}, description="{sha256, differs}: the strategies folder against what runs")
    drift: bool = False
    canary: Optional[dict[str, Any]] = None
    shadow: Optional[dict[str, Any]] = None
    versions: list[VersionOut]
    store_error: str = ""


class DiffFileOut(Schema):
    name: str
    status: str = Field(..., description="added, removed, changed or same")
    diff: str = Field(..., description="unified diff")


class DiffOut(Schema):
    kernel: str
    strategy: str
    a: dict[str, Any]
    b: dict[str, Any]
    changed: int
    files: list[DiffFileOut]


class FleetStrategyOut(Schema):
    strategy: str
    kernels: dict[str, dict[str, Any]] = Field(..., description="kernel → {version, sha256, working tree, canary, shadow}")
    shas: list[str]
    drift: bool
    reasons: list[str]


class FleetKernelOut(Schema):
    kernel: str
    command_id: str = ""
    status: str
    error: str = ""
    version: Optional[int] = None
    sha256: str = ""
    converged: bool


class FleetReloadOut(Schema):
    strategy: str
    sha256: str = Field(..., description="the one sha256 the fleet should run (\"\" when no one sha256 leads)")
    converged: bool
    kernels: list[FleetKernelOut]
