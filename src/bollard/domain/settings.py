"""Cluster settings: a typed registry with defaults, stored in the database by key.

Every number setting has its range in its definition (``minimum`` and ``maximum``); a value
is accepted only when it is a finite number of the setting's type inside that range, and a
refusal names the setting, the value given and the range, on one line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bollard.domain.errors import InvalidInput, NotFound

_SHOWN = 40  # characters of a refused value repeated in the error


def _shown(raw: Any) -> str:
    """The value given, as the refusal repeats it (short, one line)."""
    text = raw if isinstance(raw, str) else repr(raw)
    text = " ".join(text.split()) or repr(raw)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _num(value: float) -> str:
    """A bound as an operator reads it: 3600, 0.1, 2592000."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass(frozen=True)
class Setting:
    key: str
    type: type
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.type in (int, float) and (self.minimum is None or self.maximum is None):
            raise ValueError(f"setting {self.key}: a number setting needs its range")
        if self.minimum is not None and self.maximum is not None:
            if not (math.isfinite(self.minimum) and math.isfinite(self.maximum)):
                raise ValueError(f"setting {self.key}: its range must be finite")
            if not self.minimum <= self.default <= self.maximum:
                raise ValueError(f"setting {self.key}: its default is outside its range")

    @property
    def allowed(self) -> str:
        """What the setting accepts, as an operator reads it: "a number from 1 to 600"."""
        if self.choices is not None:
            return "one of " + ", ".join(self.choices)
        if self.type is bool:
            return "true or false"
        if self.type in (int, float):
            kind = "a whole number" if self.type is int else "a number"
            return f"{kind} from {_num(self.minimum or 0)} to {_num(self.maximum or 0)}"
        return "text"

    def _refuse(self, raw: Any) -> InvalidInput:
        return InvalidInput(f"{self.key}: {_shown(raw)} is not allowed; give {self.allowed}")

    def parse(self, raw: Any) -> Any:
        """Turn a stored string or a JSON value into the setting's type, checking its range
        (NaN and infinities are refused: a number setting is always finite)."""
        try:
            if self.type is bool:
                value: Any = _parse_bool(raw)
            elif self.type is int:
                if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                    raise ValueError(raw)
                value = int(raw.strip() if isinstance(raw, str) else raw)
            elif self.type is float:
                if isinstance(raw, bool):
                    raise ValueError(raw)
                value = float(raw) + 0.0  # (-0 reads as 0)
                if not math.isfinite(value):
                    raise ValueError(raw)
            else:
                if not isinstance(raw, str):
                    raise ValueError(raw)
                value = raw
        except (TypeError, ValueError, OverflowError):
            raise self._refuse(raw) from None
        if self.choices is not None and value not in self.choices:
            raise self._refuse(raw)
        if self.minimum is not None and value < self.minimum:
            raise self._refuse(raw)
        if self.maximum is not None and value > self.maximum:
            raise self._refuse(raw)
        return value

    def dump(self, value: Any) -> str:
        return str(value).lower() if self.type is bool else str(value)

    def stored(self, raw: str | None) -> tuple[Any, str | None]:
        """The value of a stored string: (value, None), or (the default, why) when the
        stored string is not a valid value (any more): a bad row never breaks a reader."""
        if raw is None:
            return self.default, None
        try:
            return self.parse(raw), None
        except InvalidInput as exc:
            return self.default, exc.message


def _parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if not isinstance(raw, str | int) or (isinstance(raw, int) and raw not in (0, 1)):
        raise ValueError(raw)
    text = str(raw).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError(raw)


_AUTO_HELP = {
    "stale": "VMs in the database that their host does not have (fix: delete the record "
    "through the delete operation)",
    "orphan": "VMs on a host that the database does not have there (fix: destroy them on the host)",
    "power": "power state differing from the desired one with no task running (fix: HA VMs "
    "get their desired state back, within reconcile.restart_budget; for others the record "
    "follows the host)",
    "spec": "vCPUs or memory on the host differing from the record (fix: the record follows "
    "the host)",
    "pending": "task_state left by a task that ended, or a task no server drives (fix: "
    "release the VM, or resume the task)",
    "lost": "VMs whose owner is fenced or gone and which run nowhere (fix: restart them on "
    "another node, as HA does)",
    "resize": "resizes in VERIFY_RESIZE whose old copy is gone from the source (fix: confirm "
    "them: a revert is no longer possible), and resize records no task drives and no resized "
    "VM waits on (fix: the record ends in error, the source's hold is released)",
    "volume-missing": "volumes at rest whose file their pool does not have on the host that "
    "must have it (fix: the volume goes to error, with the reason)",
    "volume-orphan": "files in a pool that no volume record owns and no running task writes "
    "(fix: delete the file, only if named as Bollard names volume files; a copy's unfinished "
    "target is cancelled or deleted)",
    "volume-stuck": "volumes left in a transitional state, or held, by a task that ended or "
    "does not exist (fix: back at rest if the file is there, else error, or removed if it "
    "was being created or deleted)",
    "volume-size": "volumes whose file has another size on its host than the record says "
    "(fix: the record follows the host)",
    "vf-unrecorded": "SR-IOV VFs that a host says a VM uses and the record gives nobody (fix: "
    "recorded as held by that VM's NIC on the VF's physical network that holds no VF there, "
    "for a VM living on that node)",
    "vf-conflict": "SR-IOV VFs that the record gives one VM while the host says another uses "
    "them (no fix: move or restart one of the VMs)",
    "vf-mismatch": "VMs holding one SR-IOV VF while their host's definition uses another, "
    "free one (fix: the claim moves to the VF the host uses)",
    "vf-leaked": "SR-IOV VFs held by a VM that neither lives on that node nor uses them there "
    "(fix: release the VF)",
}
_AUTO_DEFAULT = {
    "power": "fix",
    "pending": "fix",
    "resize": "fix",
    "volume-orphan": "partial",
    "volume-stuck": "fix",
    "volume-size": "fix",
}
# volume-orphan has a third policy, its default: `partial` fixes by itself only the unfinished
# targets of copies no task drives any more (nothing else writes such a file) and reports
# the other files, which an operator looks at before they are deleted.
# vf-conflict has no fix (two VMs, one VF: which one is right is an operator's call).
_AUTO_CHOICES = {"volume-orphan": ("report", "partial", "fix"), "vf-conflict": ("report",)}
_PARTIAL_HELP = (
    "partial (the default: fix only the unfinished targets of copies no task drives; report "
    "the other files), "
)

_STATE_SETTINGS = [
    *(
        Setting(
            f"reconcile.auto.{cls}",
            str,
            _AUTO_DEFAULT.get(cls, "report"),
            f"What the state reconciler does by itself about {text}: "
            + (
                "report only."
                if cls == "vf-conflict"
                else "report, " + (_PARTIAL_HELP if cls == "volume-orphan" else "") + "or fix."
            ),
            choices=_AUTO_CHOICES.get(cls, ("report", "fix")),
        )
        for cls, text in _AUTO_HELP.items()
    ),
    Setting(
        "reconcile.storage.interval",
        float,
        30.0,
        "Seconds between two looks of the state reconciler at the pools' files (every host "
        "is asked for them; its passes in between look at the VMs only). `bollard "
        "reconcile` always looks now.",
        minimum=1.0,
        maximum=300.0,
    ),
    Setting(
        "reconcile.state.interval",
        float,
        5.0,
        "Seconds between two full passes of the state reconciler (it also runs as soon as "
        "a host reports a change).",
        minimum=0.1,
        maximum=3600,
    ),
    Setting(
        "reconcile.restart_budget",
        int,
        3,
        "Restarts of a crashed HA VM the state reconciler makes within "
        "reconcile.restart_window; past it the VM stays off, with a fault.",
        minimum=0,
        maximum=1000,
    ),
    Setting(
        "reconcile.restart_window",
        float,
        3600.0,
        "Seconds over which reconcile.restart_budget counts restarts.",
        minimum=1,
        maximum=30 * 86_400,
    ),
]

# HA policies (issue 21, domain/ha.py).
_HA_SETTINGS = [
    Setting(
        "fencing.idle_nodes",
        bool,
        False,
        "Fence a dead node that owns no HA VM and holds no volume lock (off: such a node is "
        "only marked dead).",
    ),
    Setting(
        "fencing.fast",
        bool,
        True,
        "When an agent's connection drops, ask its node's power driver at once: a host that "
        "reads off is fenced and its HA VMs recovered without waiting for health.dead_after.",
    ),
    Setting(
        "ha.max_restart",
        int,
        1,
        "Starts of an HA VM retried on its node after a start fails, before it is relocated "
        "(a VM's own --max-restart wins).",
        minimum=0,
        maximum=100,
    ),
    Setting(
        "ha.max_relocate",
        int,
        1,
        "Moves of an HA VM to another node after its restarts failed, before it is put in "
        "the HA error state (a VM's own --max-relocate wins).",
        minimum=0,
        maximum=100,
    ),
    Setting(
        "ha.shutdown_policy",
        str,
        "conditional",
        "What a host's clean shutdown means (a node's own policy wins): freeze (VMs stay, no "
        "fence, no recovery), failover (recover once the host reads off), migrate (drain it "
        "first), conditional (freeze on a reboot, failover on a power-off).",
        choices=("freeze", "failover", "migrate", "conditional"),
    ),
    Setting(
        "ha.failback_interval",
        float,
        10.0,
        "Seconds between two looks for HA VMs whose group has a better node available again "
        "(failback); 0: never.",
        minimum=0,
        maximum=3600,
    ),
]

# Settings of an API server in front of cells (kept in its own database; a cell ignores them).
CROSS_CELL_ROLES = ("nobody", "admin", "operator", "reader")
CELL_SETTINGS = [
    Setting(
        "policy.vm_resize_cross_cell",
        str,
        "nobody",
        "API server in front of cells: the lowest role that may resize a VM into another "
        "cell (vm:resize:cross_cell): nobody (the default), admin, operator or reader.",
        choices=CROSS_CELL_ROLES,
    ),
    Setting(
        "policy.vm_migrate_cross_cell",
        str,
        "nobody",
        "API server in front of cells: the lowest role that may migrate a VM (by shutdown) "
        "into another cell (vm:migrate:cross_cell): nobody (the default), admin, operator or "
        "reader.",
        choices=CROSS_CELL_ROLES,
    ),
    Setting(
        "scheduler.cross_cell_weight_multiplier",
        float,
        1_000_000.0,
        "API server in front of cells: how much a VM moving between cells prefers the nodes "
        "of its own cell (each cell may override it: `bollard cell set --weight`); negative "
        "drains a cell.",
        minimum=-1e9,
        maximum=1e9,
    ),
]
# Which of them the API server keeps (the others are its cells').
API_SERVER_KEYS = frozenset(s.key for s in CELL_SETTINGS)

REGISTRY: dict[str, Setting] = {
    s.key: s
    for s in [
        Setting(
            "reconcile.commands.enabled",
            bool,
            True,
            "Run the command reconciler (recovers interrupted and timed-out commands).",
        ),
        Setting(
            "reconcile.commands.interval",
            float,
            10.0,
            "Seconds between two passes of the command reconciler.",
            minimum=0.1,
            maximum=3600,
        ),
        Setting(
            "reconcile.commands.max.attempts",
            int,
            30,
            "Queries to an agent about one command before giving up (RECONCILE_FAILED).",
            minimum=1,
            maximum=10_000,
        ),
        Setting(
            "scheduler.selector",
            str,
            "mem",
            "How a target node is picked when none is named: mem (most free memory), memprov "
            "(least provisioned memory), vcpus (most free vCPUs), load (lowest load), vms "
            "(fewest VMs), static (lowest vCPU + memory fraction of every VM placed, running "
            "or not). A VM's own selector wins.",
            choices=("mem", "memprov", "vcpus", "load", "vms", "static"),
        ),
        Setting(
            "scheduler.vcpu_allocation_ratio",
            float,
            1.0,
            "vCPUs that may be allocated per physical vCPU of a node (memory is never "
            "overcommitted).",
            minimum=0.1,
            maximum=64,
        ),
        Setting(
            "migration.timeout",
            float,
            600.0,
            "Seconds a migration may take on its host before its outcome is looked for "
            "(the task then asks both hosts where the VM runs).",
            minimum=1,
            maximum=86_400,
        ),
        Setting(
            "resize.allow_same_node",
            bool,
            False,
            "Whether a resize may keep the VM on its own node (the node then holds the old "
            "and the new size until the resize is confirmed or reverted).",
        ),
        Setting(
            "resize.confirm_window",
            float,
            0.0,
            "Seconds a resize may wait in VERIFY_RESIZE before it is confirmed by itself "
            "(VMs busy or in error are skipped); 0: never.",
            minimum=0,
            maximum=365 * 86_400,
        ),
        Setting(
            "health.dead_after",
            int,
            3,
            "Heartbeats a node may miss before it is declared dead (and fenced).",
            minimum=1,
            maximum=1000,
        ),
        Setting(
            "health.startup_grace",
            float,
            10.0,
            "Seconds after a server starts during which the health monitor takes no action "
            "(agents need time to reconnect).",
            minimum=0,
            maximum=3600,
        ),
        Setting(
            "fencing.enabled",
            bool,
            True,
            "Fence dead nodes (power off, confirmed) and restart their HA VMs elsewhere.",
        ),
        Setting(
            "fencing.timeout",
            float,
            30.0,
            "Seconds each power operation of a fence may take.",
            minimum=1,
            maximum=600,
        ),
        Setting(
            "cluster.maintenance",
            bool,
            False,
            "Maintenance mode: no fencing and no recovery while it is on.",
        ),
        Setting(
            "reconcile.commands.workers",
            int,
            16,
            "Commands reconciled at the same time, at most.",
            minimum=1,
            maximum=1024,
        ),
        *_STATE_SETTINGS,
        *_HA_SETTINGS,
        *CELL_SETTINGS,
    ]
}


def lookup(key: str) -> Setting:
    try:
        return REGISTRY[key]
    except KeyError:
        raise NotFound(
            f"no setting {key!r}; known settings: {', '.join(sorted(REGISTRY))}"
        ) from None
