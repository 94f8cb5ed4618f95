"""``bulkops submit`` interrupted (SIGINT, CONTRACT "Control"): the first Ctrl-C stops
publishing, cancels the requests published and not yet answered, waits (bounded) for their
replies and reports what was withdrawn, what was done and how many ids were never published
(exit 130); a second Ctrl-C leaves at once with the ``bulkops cancel`` command that would
finish the job."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import sys
from collections.abc import Coroutine, Iterator
from typing import Any, BinaryIO

from worker.cli.common import ClientSettings, say
from worker.client import Client

EXIT_INTERRUPTED = 130
WAIT_SECONDS = 30.0
REASON = "bulkops submit interrupted"


class Interrupt:
    """The interrupt handling of one ``bulkops submit``."""

    def __init__(self, client: Client, settings: ClientSettings) -> None:
        self.client = client
        self.settings = settings
        self.stop = asyncio.Event()
        self.unanswered: dict[str, list[str]] = {}  # request id -> ids (kept by the client)
        self.cancelled: list[str] = []
        self.cancel_error: str | None = None
        self._withdraw: asyncio.Task[None] | None = None
        self.wait_seconds = WAIT_SECONDS
        self.output: BinaryIO | None = None  # the results written so far: kept on exit

    @contextlib.contextmanager
    def handling(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGINT, self._signal)
        except (NotImplementedError, RuntimeError):  # not the main thread: Ctrl-C as before
            yield
            return
        try:
            yield
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    def _signal(self) -> None:
        if self.stop.is_set():  # the second one: leave now
            say("interrupted again: leaving without waiting")
            if self.unanswered:
                say("to withdraw what is left: " + self.command())
            self._flush()
            os._exit(EXIT_INTERRUPTED)
        self.stop.set()
        self._withdraw = asyncio.ensure_future(self._cancel())

    def _flush(self) -> None:
        """What ``os._exit`` would lose: the results received (buffered) and the lines said."""
        for stream in (self.output, sys.stdout, sys.stderr):
            if stream is None:
                continue
            with contextlib.suppress(Exception):
                stream.flush()
        if self.output is not None:
            with contextlib.suppress(Exception):  # a pipe or a terminal cannot be synced
                os.fsync(self.output.fileno())

    def command(self) -> str:
        ids = " ".join(shlex.quote(i) for i in sorted(self.unanswered))
        return f"bulkops cancel {ids} --reason {shlex.quote(REASON)}"

    async def _cancel(self) -> None:
        self.cancelled = sorted(self.unanswered)
        if not self.cancelled:
            say("interrupted: nothing more is published")
            return
        say(
            f"interrupted: nothing more is published; cancelling the {len(self.cancelled)} "
            f"requests not yet answered and waiting up to {self.wait_seconds:.0f}s for their "
            "replies (Ctrl-C again to leave now)"
        )
        control = self.client.control(
            exchange=self.settings.control_exchange,
            cancel_ttl_seconds=self.settings.cancel_ttl_seconds,
            app_id="bulkops-cli",
        )
        try:
            for start in range(0, len(self.cancelled), 10_000):
                await control.cancel(self.cancelled[start : start + 10_000], reason=REASON)
        except Exception as exc:  # reported; the replies are still waited for
            self.cancel_error = f"{type(exc).__name__}: {exc}"
            say(f"the cancel was not sent ({self.cancel_error})")

    async def run(self, consume: Coroutine[Any, Any, None]) -> None:
        """Consume the answers; once interrupted, for at most ``wait_seconds`` more."""
        task = asyncio.ensure_future(consume)
        stopped = asyncio.ensure_future(self.stop.wait())
        try:
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                await self._answered(task)
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            else:
                task.result()  # raises what the consumer raised
        finally:
            stopped.cancel()
            if self._withdraw is not None:
                with contextlib.suppress(Exception):
                    await self._withdraw

    async def _answered(self, task: asyncio.Future[None]) -> None:
        """Wait (at most ``wait_seconds``) until the consumer ends or every request published
        is answered. The second matters when publishing is stuck reading a chunk (standard
        input not written to): the answers would never end by themselves. Once the
        published ones are answered they are written too: the client drops a request from
        ``unanswered`` as it hands its answer to the consumer, which writes it at once."""
        deadline = asyncio.get_running_loop().time() + self.wait_seconds
        while not task.done() and self.unanswered:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            await asyncio.wait({task}, timeout=min(0.05, left))

    def report(self, tally: Any, total: int | None, kind: str) -> int:
        """What the interrupted job came to (``tally``: the command's ``Tally``); the exit
        code (130)."""
        withdrawn = tally.codes[("rejected", "cancelled")]
        done = tally.items - withdrawn
        left = sum(len(ids) for ids in self.unanswered.values())
        say(f"interrupted: {done} {kind} were done (answered), {withdrawn} withdrawn (cancelled)")
        for line in tally.summary():
            say(line)
        if left:
            say(f"{left} {kind} published have no answer yet: " + self.command())
        if total is not None:
            never = max(0, total - tally.items - left)
            say(f"{never} {kind} were never published")
        return EXIT_INTERRUPTED
