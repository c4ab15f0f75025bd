"""Console models: kernels, slots and their configs, control commands, the append-only
audit log, API tokens, and mirrors of what each kernel reports (status, fills, equity).

All writes go through trading/services/; these classes only describe the data.
"""
from __future__ import annotations

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import models
from django.utils import timezone


class Kernel(models.Model):
    """A running (or not) ``runkernel`` process, known by its state dir on its host."""

    name = models.SlugField(max_length=64, unique=True)
    state_dir = models.CharField(max_length=500, help_text="the kernel's state dir on its host")
    host = models.CharField(max_length=200, blank=True, default="",
                            help_text="host the kernel runs on; empty = this machine")
    queue = models.CharField(max_length=100, blank=True, default="",
                             help_text="Celery queue of that host's worker; empty = deliver locally")
    created_at = models.DateTimeField(default=timezone.now)

    # What the kernel last reported in status.json (mirrored by status_sync).
    state = models.CharField(max_length=16, blank=True, default="unknown")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    pid = models.IntegerField(null=True, blank=True)
    tick = models.BigIntegerField(default=0)
    halt_engaged = models.BooleanField(default=False)
    halt_since = models.DateTimeField(null=True, blank=True)
    halt_reason = models.TextField(blank=True, default="")
    halt_requested_at = models.DateTimeField(
        null=True, blank=True, help_text="a halt was sent and the kernel has not confirmed it yet"
    )
    control_error = models.TextField(blank=True, default="")
    status = models.JSONField(default=dict, blank=True, help_text="the last status.json, whole")
    status_synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        permissions = [
            ("operate_kernel", "Can start, stop, pause, resume, reload and use slot controls"),
            ("engage_halt", "Can engage the emergency halt"),
            ("release_halt", "Can release a halt"),
            ("rollback_strategy", "Can roll a strategy back to its previous version"),
            ("promote_strategy", "Can promote a canary or shadow version to every slot of a strategy"),
            ("deploy_fleet", "Can reload a strategy on every kernel of the fleet at once"),
        ]

    def __str__(self) -> str:
        return self.name


class Slot(models.Model):
    """One strategy trading one symbol on one timeframe, as the console wants it configured.
    ``running_config`` is what the kernel reports it runs; the admin shows where they differ."""

    kernel = models.ForeignKey(Kernel, on_delete=models.PROTECT, related_name="slots")
    slot_id = models.SlugField(max_length=64)
    symbol = models.CharField(max_length=41)
    timeframe = models.CharField(max_length=8)
    strategy = models.CharField(max_length=64)
    params = models.JSONField(default=dict, blank=True)
    order_notional = models.FloatField(default=100.0)
    max_position = models.FloatField(null=True, blank=True)
    max_notional = models.FloatField(default=1000.0)
    max_orders_per_minute = models.PositiveIntegerField(default=6)
    enabled = models.BooleanField(default=True)

    # Mirror of the kernel's report.
    state = models.CharField(max_length=16, blank=True, default="unknown")
    fault = models.TextField(blank=True, default="")
    strategy_version = models.IntegerField(null=True, blank=True)
    strategy_sha256 = models.CharField(max_length=64, blank=True, default="")
    position_qty = models.FloatField(default=0.0)
    entry_price = models.FloatField(null=True, blank=True)
    last_price = models.FloatField(null=True, blank=True)
    realized_pnl = models.FloatField(default=0.0)
    unrealized_pnl = models.FloatField(null=True, blank=True)
    last_cycle_at = models.DateTimeField(null=True, blank=True)
    next_cycle_at = models.DateTimeField(null=True, blank=True)
    cycles = models.BigIntegerField(default=0)
    missed_cycles = models.BigIntegerField(default=0)
    running_config = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["kernel__name", "slot_id"]
        constraints = [
            models.UniqueConstraint(fields=["kernel", "slot_id"], name="slot_unique_per_kernel"),
        ]
        permissions = [("configure_slot", "Can change a slot's configuration")]

    def __str__(self) -> str:
        return f"{self.kernel.name}/{self.slot_id}"

    CONFIG_FIELDS = (
        "symbol", "timeframe", "strategy", "params", "order_notional", "max_position",
        "max_notional", "max_orders_per_minute", "enabled",
    )

    def config(self) -> dict:
        """The configuration in the kernel's protocol shape (kernel.protocol.SlotConfig)."""
        return {"id": self.slot_id, **{f: getattr(self, f) for f in self.CONFIG_FIELDS}}

    def config_drift(self) -> dict[str, tuple]:
        """field -> (in the database, what the kernel runs) where they differ."""
        if not self.running_config:
            return {}
        mine = self.config()
        return {
            f: (mine.get(f), self.running_config.get(f))
            for f in self.CONFIG_FIELDS
            if mine.get(f) != self.running_config.get(f)
        }


class ControlCommand(models.Model):
    """A command an operator issued, and its life: pending → delivered → applied/rejected,
    or failed/expired."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        APPLIED = "applied"
        REJECTED = "rejected"
        FAILED = "failed"
        EXPIRED = "expired"

    class Source(models.TextChoices):
        ADMIN = "admin"
        API = "api"
        CLI = "cli"
        SYSTEM = "system"

    FINAL = (Status.APPLIED, Status.REJECTED, Status.FAILED, Status.EXPIRED)

    command_id = models.CharField(max_length=128, unique=True)
    kernel = models.ForeignKey(Kernel, on_delete=models.PROTECT, related_name="commands")
    action = models.CharField(max_length=32)
    slot_id = models.CharField(max_length=64, blank=True, default="")
    args = models.JSONField(default=dict, blank=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                             on_delete=models.SET_NULL, related_name="+")
    actor = models.CharField(max_length=200, help_text="who: a username, or user@host for the CLI")
    source = models.CharField(max_length=8, choices=Source.choices)
    ip = models.GenericIPAddressField(null=True, blank=True)
    issued_at = models.DateTimeField(default=timezone.now, db_index=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    delivery_attempts = models.PositiveIntegerField(default=0)
    resolved_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    detail = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-issued_at", "-id"]

    def __str__(self) -> str:
        return f"{self.command_id} {self.action}{' ' + self.slot_id if self.slot_id else ''} [{self.status}]"

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise PermissionDenied("audit events are append-only")

    def delete(self):
        raise PermissionDenied("audit events are append-only")

    # bulk_update goes through update(); bulk_create is an append and allowed.


class AuditEvent(models.Model):
    """One operator action or kernel outcome. Append-only: the ORM refuses to change or
    delete one, and database triggers (migrations 0002 and 0005) refuse it below the ORM too,
    as they refuse an insert that reuses an id or a dedupe key. Tamper-evident: each event
    carries a hash chained to the one before it (services/audit_chain.py, ``verifyaudit``)."""

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.CharField(max_length=200, db_index=True, help_text="username, user@host, or kernel:<name>")
    user_id = models.IntegerField(null=True, blank=True)  # no FK: deleting a user must not touch the log
    source = models.CharField(max_length=8, db_index=True)  # admin | api | cli | kernel | system
    ip = models.GenericIPAddressField(null=True, blank=True)
    action = models.CharField(max_length=64, db_index=True)  # command.issued, command.applied, halt.engaged...
    kernel_name = models.CharField(max_length=64, blank=True, default="", db_index=True)
    slot_id = models.CharField(max_length=64, blank=True, default="", db_index=True)
    command_id = models.CharField(max_length=128, blank=True, default="", db_index=True)
    outcome = models.CharField(max_length=32, blank=True, default="")  # ok | applied | rejected | failed ...
    payload = models.JSONField(default=dict, blank=True)
    dedupe_key = models.CharField(
        max_length=200, null=True, blank=True, unique=True,
        help_text="set for kernel outcomes so each is recorded exactly once",
    )
    prev_hash = models.CharField(max_length=64, blank=True, default="", editable=False,
                                 help_text="the hash of the event before this one")
    hash = models.CharField(max_length=64, blank=True, default="", editable=False,
                            help_text="sha256 of prev_hash and this event's content")

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action}"

    def save(self, *args, **kwargs):
        if self.pk is not None and not kwargs.get("force_insert"):
            raise PermissionDenied("audit events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionDenied("audit events are append-only")


class ApiToken(models.Model):
    """A per-user API token. Only a hash is stored; the token is shown once at creation."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, db_index=True)
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Every token ends: FORESIGHT_TOKEN_DEFAULT_DAYS unless asked, never past FORESIGHT_TOKEN_MAX_DAYS.
    expires_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…){' revoked' if self.revoked_at else ''}"

    def is_expired(self, now=None) -> bool:
        return self.expires_at <= (now or timezone.now())


class AuthFailure(models.Model):
    """Failed authentications, counted: one row per (kind, source, window) however many
    attempts, so a flood of wrong passwords or tokens cannot grow a table without bound
    (services/auth_failures.py). ``source`` is the client's address."""

    KIND_LOGIN = "login"  # a wrong admin password (user_login_failed)
    KIND_TOKEN = "token"  # a bad, revoked or expired bearer token
    KIND_LOCKOUT = "lockout"  # django-axes locked a source out (audited once per row)
    KINDS = [(KIND_LOGIN, "wrong password"), (KIND_TOKEN, "bad API token"), (KIND_LOCKOUT, "locked out")]

    kind = models.CharField(max_length=16, choices=KINDS)
    source = models.CharField(max_length=64)
    window_start = models.DateTimeField(db_index=True)
    count = models.PositiveIntegerField(default=0)
    last_at = models.DateTimeField()
    last_detail = models.CharField(max_length=150, blank=True, default="",
                                   help_text="the last username tried, or the token's prefix")

    class Meta:
        ordering = ["-window_start", "kind", "source"]
        constraints = [
            models.UniqueConstraint(fields=["kind", "source", "window_start"], name="auth_failure_one_row_per_window"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} from {self.source}: {self.count} since {self.window_start:%Y-%m-%d %H:%M:%S}"


class Fill(models.Model):
    """A fill the kernel reported (status.json ``fills``), kept for trade statistics."""

    kernel = models.ForeignKey(Kernel, on_delete=models.PROTECT, related_name="fills")
    fill_id = models.CharField(max_length=128)
    client_order_id = models.CharField(max_length=64)
    slot_id = models.CharField(max_length=64, db_index=True)
    side = models.CharField(max_length=4)
    qty = models.FloatField()
    price = models.FloatField()
    fee = models.FloatField()
    pnl = models.FloatField(null=True, blank=True)
    at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-at"]
        constraints = [
            models.UniqueConstraint(fields=["kernel", "fill_id"], name="fill_unique_per_kernel"),
        ]


class EquitySample(models.Model):
    """Equity of a kernel's book over time, sampled by status_sync (for the chart)."""

    kernel = models.ForeignKey(Kernel, on_delete=models.PROTECT, related_name="equity")
    at = models.DateTimeField(db_index=True)
    equity = models.FloatField()
    cash = models.FloatField(null=True, blank=True)
    realized_pnl = models.FloatField(default=0.0)
    unrealized_pnl = models.FloatField(default=0.0)

    class Meta:
        ordering = ["at"]


class NotificationDelivery(models.Model):
    """One audit event told on one channel's target (a webhook URL, a chat, the mail): its
    message, tries and outcome (services/notifications.py). At most one per (event, channel,
    target): the same halt seen by ten syncs is one audit event, hence one message."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        FAILED = "failed"  # given up after the last try

    event_key = models.CharField(max_length=200)  # the audit event's dedupe key, else "audit:<id>"
    audit_event_id = models.BigIntegerField(db_index=True)  # no FK: the audit log is append-only
    action = models.CharField(max_length=64)
    kernel_name = models.CharField(max_length=64, blank=True, default="")
    channel = models.CharField(max_length=16)  # webhook | email | telegram
    target = models.CharField(max_length=64)  # a hash of the URL or chat: never the secret itself
    text = models.TextField()
    fields = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.IntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now, db_index=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["event_key", "channel", "target"], name="notification_once_per_target"),
        ]

    def __str__(self) -> str:
        return f"{self.action} → {self.channel} ({self.status})"
