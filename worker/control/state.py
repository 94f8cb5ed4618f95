"""The control state: the cancels and pauses in force, from control records in stream order.

Pure and synchronous: ``ControlState.apply(control)`` for each valid record as the stream
gives it; questions take ``now`` (epoch seconds) so expiry is exact and testable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from worker.control.messages import Control, ScopeSel


@dataclass(frozen=True, slots=True)
class Cancel:
    """A cancel in force: of ``request_ids``, or of a target's scope (``target`` set)."""

    at: float  # when it was sent (AMQP timestamp, else arrival)
    expires: float
    reason: str | None
    user_id: str | None
    app_id: str | None
    request_ids: tuple[str, ...] = ()
    target: str | None = None
    scope: ScopeSel | None = None  # with target: None is the whole target

    def describe(self) -> dict[str, Any]:
        return {
            "request_ids": list(self.request_ids) or None,
            "target": self.target,
            "scope": _scope_json(self.scope),
            "reason": self.reason,
            "user_id": self.user_id,
            "app_id": self.app_id,
            "since": self.at,
            "expires": self.expires,
        }


@dataclass(frozen=True, slots=True)
class Pause:
    """A pause in force of ``target``'s ``scope`` (None: the whole target)."""

    target: str
    scope: ScopeSel | None
    origin: str | None  # the message id of the pause as first sent (its rewrites name it)
    at: float  # when it was first sent (a rewrite keeps it)
    reason: str | None
    user_id: str | None
    app_id: str | None

    def describe(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "scope": _scope_json(self.scope),
            "reason": self.reason,
            "user_id": self.user_id,
            "app_id": self.app_id,
            "since": self.at,
        }


def _scope_json(scope: ScopeSel | None) -> dict[str, str | None] | None:
    return None if scope is None else {scope[0]: scope[1]}


PauseKey = tuple[str, ScopeSel | None]


class ControlState:
    """Cancels (each in force for ``cancel_ttl`` seconds from when it was sent) and pauses
    (until the matching resume). Applying the same records again, in order, gives the same
    state, and a rewrite of a pause in force changes nothing (``apply`` says so)."""

    def __init__(self, cancel_ttl: float) -> None:
        self.cancel_ttl = cancel_ttl
        self._by_request: dict[str, Cancel] = {}
        self._by_scope: dict[PauseKey, Cancel] = {}
        self._pauses: dict[PauseKey, Pause] = {}
        self._resumed: set[str] = set()  # origins of pauses resumed: their rewrites are late
        self.resumed: set[PauseKey] = set()  # scopes resumed and not paused again (hold queues)

    def apply(self, control: Control, now: float | None = None) -> bool:
        """Apply one valid record; True when it changed what is in force (a cancel already
        expired at ``now``, a rewrite of a pause in force and a resume of nothing do not)."""
        if control.command == "cancel":
            return self._cancel(control, now)
        if control.command in ("pause", "resume"):
            assert control.target is not None
            key = (control.target, control.scope)
            if control.command == "resume":
                gone = self._pauses.pop(key, None)
                if gone is not None and gone.origin is not None:
                    self._resumed.add(gone.origin)
                if gone is not None:
                    self.resumed.add(key)
                return gone is not None
            origin = control.rewrite_of or control.message_id
            if key in self._pauses or (control.rewrite_of and origin in self._resumed):
                return False  # a rewrite, a second pause, or a rewrite that crossed a resume
            self.resumed.discard(key)
            self._pauses[key] = Pause(
                control.target,
                control.scope,
                origin,
                control.at,
                control.reason,
                control.user_id,
                control.app_id,
            )
            return True
        return False  # status changes nothing

    def _cancel(self, control: Control, now: float | None) -> bool:
        expires = control.at + self.cancel_ttl
        if now is not None and expires <= now:
            return False
        cancel = Cancel(
            control.at,
            expires,
            control.reason,
            control.user_id,
            control.app_id,
            control.request_ids,
            control.target,
            control.scope,
        )
        if control.target is not None:
            key = (control.target, control.scope)
            old = self._by_scope.get(key)
            if old is not None and old.at >= cancel.at:
                return False
            self._by_scope[key] = cancel  # the later one: it withdraws more, for longer
            return True
        changed = False
        for request_id in control.request_ids:
            old = self._by_request.get(request_id)
            if old is None or old.expires < expires:
                self._by_request[request_id] = cancel
                changed = True
        return changed

    # -- questions -------------------------------------------------------------------------

    def cancelled(self, request_id: str, now: float) -> Cancel | None:
        """The cancel in force of this request, if any."""
        cancel = self._by_request.get(request_id)
        if cancel is not None and cancel.expires <= now:
            del self._by_request[request_id]
            return None
        return cancel

    def scope_cancelled(
        self, target: str, scope: ScopeSel | None, published_at: float, now: float
    ) -> Cancel | None:
        """The scope cancel (of this scope, or of the whole target) that withdraws an item of
        a message published at ``published_at`` (its AMQP timestamp; without one, the time
        the worker first consumed it): one sent at or after that time, still in force."""
        keys: list[PauseKey] = [(target, None)]
        if scope is not None:
            keys.insert(0, (target, scope))
        for key in keys:
            cancel = self._by_scope.get(key)
            if cancel is None:
                continue
            if cancel.expires <= now:
                del self._by_scope[key]
                continue
            if published_at <= cancel.at:
                return cancel
        return None

    def paused(self, target: str, scope: ScopeSel | None) -> Pause | None:
        """The pause that holds this scope: its own, else its target's whole-target pause."""
        own = self._pauses.get((target, scope)) if scope is not None else None
        return own or self._pauses.get((target, None))

    def pause_of(self, target: str, scope: ScopeSel | None) -> Pause | None:
        """The pause of exactly this key (``scope`` None: the whole-target pause)."""
        return self._pauses.get((target, scope))

    @property
    def any_paused(self) -> bool:
        return bool(self._pauses)

    def pauses(self) -> list[Pause]:
        """The pauses in force, oldest first."""
        return sorted(self._pauses.values(), key=lambda p: p.at)

    def cancels(self, now: float) -> list[Cancel]:
        """The cancels in force at ``now``, oldest first (each once)."""
        self.expire(now)
        seen: dict[int, Cancel] = {}
        for cancel in [*self._by_request.values(), *self._by_scope.values()]:
            seen.setdefault(id(cancel), cancel)
        return sorted(seen.values(), key=lambda c: c.at)

    def expire(self, now: float) -> int:
        """Forget the cancels expired at ``now``; how many entries were dropped."""
        before = len(self._by_request) + len(self._by_scope)
        self._by_request = {k: c for k, c in self._by_request.items() if c.expires > now}
        self._by_scope = {k: c for k, c in self._by_scope.items() if c.expires > now}
        return before - len(self._by_request) - len(self._by_scope)
