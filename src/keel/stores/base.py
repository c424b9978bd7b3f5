"""The interface every tool-call store implements, and the records it hands back.

A store is a table of dedup keys with a tiny state machine per key::

    (absent) --claim--> claimed --complete--> done | error
        ^                  |   \\--renew--> claimed (lease pushed back)
        |                  |
        +----release-------+          (release also deletes done/error rows: "forget")

Every mutating call after `claim` names the claim's `owner` token and only acts if the row still
belongs to that owner. That is the fencing that keeps a process whose claim expired and was taken over
from later overwriting (or deleting) the new owner's work.

Time is the store's clock (`expires_at` is absolute), so one machine's view of a lease is the view of
everyone sharing that store. Shared backends (Redis, PostgreSQL) must make `claim` one atomic
decision, exactly as the SQLite store does with `BEGIN IMMEDIATE`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

Status = Literal["claimed", "done", "error"]


@dataclass(frozen=True, slots=True)
class ToolCallRecord:
    """One row of the store. Holds no tool input (only its hash, inside `key`) and never a credential."""

    key: str
    tool: str
    status: Status
    owner: str
    """The claim token of whoever claimed (and, for done/error rows, completed) the call."""
    attempt: int
    """1 for the first claim, +1 for every takeover of an expired claim."""
    result_json: str | None
    claimed_at: float
    expires_at: float
    """End of the lease (unix seconds) while `status == "claimed"`; meaningless afterwards."""
    completed_at: float | None

    def expired(self, now: float) -> bool:
        """A claim whose owner stopped renewing it: crashed, hung, or cut off from the store."""
        return self.status == "claimed" and self.expires_at <= now


@dataclass(frozen=True, slots=True)
class Claim:
    """The answer to `claim`: either the caller now owns the key, or here is who does / what happened."""

    acquired: bool
    record: ToolCallRecord
    """The row after the decision: the caller's own claim if `acquired`, else the existing row."""
    previous: ToolCallRecord | None = None
    """When an expired claim was taken over: the row as it was before (the crashed attempt)."""
    expired: bool = False
    """Not acquired, and the existing row is a claim whose lease ran out (judged by the store's clock)."""

    @property
    def took_over(self) -> bool:
        return self.acquired and self.previous is not None


@runtime_checkable
class ToolCallStore(Protocol):
    """Where at-most-once tool calls keep their claims and results. Implementations must be safe to call
    from many threads; shared backends also from many processes and machines."""

    def claim(self, key: str, *, tool: str, owner: str, lease: float, takeover: bool = False) -> Claim:
        """Atomically: insert a `claimed` row owned by `owner` with `expires_at = now + lease` if `key` is
        absent, or, when `takeover` is true and the existing row is an expired claim, hand it to `owner`
        (attempt + 1). Otherwise change nothing and return the existing row with `acquired=False`."""
        ...

    def complete(self, key: str, *, owner: str, result_json: str, status: Status = "done") -> bool:
        """Record the outcome (`done` or `error`) if `owner` still holds the claim. False: it does not."""
        ...

    def release(self, key: str, *, owner: str) -> bool:
        """Delete the row if it belongs to `owner` (any status). False: it does not (or it is gone)."""
        ...

    def renew(self, key: str, *, owner: str, lease: float) -> bool:
        """Push a held claim's lease to `now + lease`. False: the claim is no longer `owner`'s."""
        ...

    def get(self, key: str) -> ToolCallRecord | None: ...
