"""Progress of items answered: a tqdm bar on a terminal, else a plain line per 10% (or per
10,000 items when the total is not known, as with standard input)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol, TextIO

from tqdm import tqdm

UNKNOWN_TOTAL_STEP = 10_000
QUIET_SECONDS = 30.0


class Progress(Protocol):
    def advance(self, items: int) -> None: ...

    def close(self) -> None: ...


class Bar:
    """A tqdm bar of items answered."""

    def __init__(self, total: int | None, stream: TextIO) -> None:
        self._bar = tqdm(total=total, unit="item", desc="answered", file=stream, smoothing=0.1)

    def advance(self, items: int) -> None:
        self._bar.update(items)

    def close(self) -> None:
        self._bar.close()


class Lines:
    """A line each time another tenth of the items is answered."""

    def __init__(self, total: int | None, stream: TextIO) -> None:
        self.total = total
        self.stream = stream
        self.done = 0
        self._reported = 0  # tenths (or steps) reported so far

    def advance(self, items: int) -> None:
        self.done += items
        mark = self._mark()
        if mark > self._reported:
            self._reported = mark
            print(self._text(), file=self.stream, flush=True)

    def close(self) -> None:
        pass

    def _mark(self) -> int:
        if self.total:
            return self.done * 10 // self.total
        return self.done // UNKNOWN_TOTAL_STEP

    def _text(self) -> str:
        if self.total:
            return f"answered {self.done} of {self.total} items ({self._reported * 10}%)"
        return f"answered {self.done} items"


def progress(total: int | None, stream: TextIO) -> Progress:
    if stream.isatty():
        return Bar(total, stream)
    return Lines(total, stream)


class Quiet:
    """Says once, after ``seconds`` without a reply, what the command is waiting for (a
    worker that does not consume, or one that does not answer ``reply_to``); again after
    each later reply and a new silence as long."""

    def __init__(
        self, say: Callable[[str], None], text: str, seconds: float = QUIET_SECONDS
    ) -> None:
        self.say = say
        self.text = text
        self.seconds = seconds
        self.last = time.monotonic()
        self.told = False

    def touch(self) -> None:
        self.last = time.monotonic()
        self.told = False

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(self.seconds / 4)
            silent = time.monotonic() - self.last
            if silent >= self.seconds and not self.told:
                self.told = True
                self.say(f"no reply for {silent:.0f} s: {self.text}")
