"""The worker's end of the control channel (CONTRACT "Control", issue 23).

One ``ControlLink`` per process: its ``ControlReader`` keeps the process's ``ControlState``
from the control stream across broker sessions, and is caught up (``start``) before any
request consumer starts. Each broker session attaches its ``Session`` while it runs; a
record read live acts on it (a cancel withdraws the unsent items it covers), and a
``status`` reply describes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

from worker.addresses import Addresses
from worker.broker.session import Session
from worker.control.messages import Control
from worker.control.reader import ControlReader
from worker.control.state import ControlState
from worker.control.transport import ScopeCounts, WorkerSnapshot
from worker.metrics import Metrics
from worker.pipeline import control
from worker.settings import Settings

log = logging.getLogger("bulkops.control")

START_TIMEOUT = 30.0


class ControlLink:
    """The process's control state, its reader, and the session it acts on."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.state = ControlState(settings.cancel_ttl_seconds)
        self.session: Session | None = None  # the running broker session
        self.partitions: Callable[[], tuple[int, ...]] | None = None  # partitioned: owned
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        addresses = Addresses.parse(settings.amqp_url.get_secret_value())
        self.reader = ControlReader(
            addresses,
            self.state,
            exchange=settings.control_exchange,
            targets={name: t.kind for name, t in settings.targets.items()},
            metrics=metrics,
            on_record=self.on_record,
            snapshot=self.snapshot,
        )

    async def start(self, stopping: asyncio.Event) -> bool:
        """Catch up with the control stream (retrying while the broker cannot be reached);
        False when told to stop first."""
        delay = 0.5
        while not stopping.is_set():
            began = time.monotonic()
            try:
                await self.reader.start(timeout=START_TIMEOUT)
            except Exception as exc:
                self.reader.addresses.failed()
                log.error(
                    "control stream %s not read (%s: %s); retrying in %.1fs",
                    self.settings.control_exchange, type(exc).__name__, str(exc)[:300], delay,
                )  # fmt: skip
            else:
                log.info(
                    "control stream read to its end in %.2fs: %d cancels and %d pauses in force",
                    time.monotonic() - began,
                    len(self.state.cancels(time.time())),
                    len(self.state.pauses()),
                )
                return True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stopping.wait()
            delay = min(delay * 2, 30.0)
        return False

    def attach(self, session: Session, owned: Mapping[int, float] | None = None) -> None:
        """The session now running (and, partitioned, the partitions it owns)."""
        self.session = session
        self.partitions = None if owned is None else lambda: tuple(sorted(owned))

    def detach(self, session: Session) -> None:
        if self.session is session:
            self.session = None
            self.partitions = None

    async def close(self) -> None:
        await self.reader.close()

    # -- acting on the running session --------------------------------------------------------

    async def on_record(self, record: Control, changed: bool) -> None:
        session = self.session
        if record.command in ("pause", "resume") and changed:
            log.info(
                "%s of %s %s (by %s: %s)", record.command, record.target, record.scope,
                record.user_id or record.app_id, record.reason,
            )  # fmt: skip
            self.sample()
            key = (record.target or "", record.scope)
            if session is not None and record.command == "resume":
                session.engine.dispatcher.wake_all()  # its waiting items may go now
                if session.holds is not None:
                    await session.holds.resume(key)
            if session is not None and record.command == "pause" and session.holds is not None:
                # Decided now, before the next record is read; the moves run in the
                # background (a continuation may wait minutes for its sent items' answers,
                # and a status, resume or cancel after it must not).
                session.holds.pause(key)
        if session is None or record.command != "cancel" or not changed:
            return
        await withdraw(session)

    def sample(self) -> None:
        """The pause metrics, per target: scopes paused, the oldest pause's start, and the
        unsent items this worker holds in paused scopes."""
        metrics = self.metrics
        paused: dict[str, list[float]] = {name: [] for name in self.settings.targets}
        for pause in self.state.pauses():
            paused.setdefault(pause.target, []).append(pause.at)
        held: dict[str, int] = dict.fromkeys(paused, 0)
        session = self.session
        if session is not None and session.holds is not None:
            for (target, _), count in session.holds.held.items():
                held[target] = held.get(target, 0) + count
        if session is not None and self.state.any_paused:
            for (target, scope), (pending, _) in control.holdings(session.engine.coalescer).items():
                if self.state.paused(target, scope) is not None:
                    held[target] = held.get(target, 0) + pending
        for target, starts in paused.items():
            metrics.paused_scopes.labels(target).set(len(starts))
            metrics.pause_oldest.labels(target).set(min(starts, default=0.0))
            metrics.held_items.labels(target).set(held.get(target, 0))

    async def sampling(self, every: float = 5.0) -> None:
        """Sample the pause metrics every ``every`` seconds (the held items change as work
        comes in)."""
        while True:
            self.sample()
            await asyncio.sleep(every)

    def snapshot(self) -> WorkerSnapshot:
        session = self.session
        scopes: list[ScopeCounts] = []
        if session is not None:
            held = control.holdings(session.engine.coalescer)
            for (target, scope), (pending, in_flight) in sorted(held.items(), key=str):
                paused = self.state.paused(target, scope) is not None
                in_hold = 0 if session.holds is None else session.holds.held.get((target, scope), 0)
                scopes.append(ScopeCounts(target, scope, pending, in_flight, paused, in_hold))
            if session.holds is not None:  # scopes held away entirely
                for (target, scope), count in session.holds.held.items():
                    if count and (target, scope) not in held:
                        paused = self.state.paused(target, scope) is not None
                        scopes.append(ScopeCounts(target, scope, 0, 0, paused, count))
        owned = None if self.partitions is None else self.partitions()
        return WorkerSnapshot(self.worker, tuple(scopes), owned)


async def withdraw(session: Session) -> int:
    """Withdraw from the session's pipeline every unsent item a cancel in force covers, and
    answer them (through the settlement); how many answers."""
    engine = session.engine
    if session.control is None:
        return 0
    answers = control.withdraw(
        engine.coalescer, session.control, session.metrics, time.monotonic(), time.time()
    )
    if answers:
        log.info("cancel: %d items withdrawn before they were sent", len(answers))
        engine.dispatcher.wake_all()
        await engine.settlement.answer(answers)
    return len(answers)
