"""Ids (one per line) or items (one JSON object per line) from a file or standard input,
read as a stream and cut into request chunks: memory holds one chunk, never the file."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

import orjson

from worker import exactjson
from worker.client import Chunk

MAX_CHUNK_BYTES = 8 * 1024 * 1024  # items: well under the worker's 16 MiB per message

Kind = Literal["ids", "items"]


class InputError(ValueError):
    """A line that cannot be sent, named by its number."""


@dataclass(frozen=True, slots=True)
class Source:
    """Where the lines come from: a path, or standard input for None or ``-``."""

    path: str | None
    kind: Kind

    @property
    def name(self) -> str:
        return "standard input" if self.stdin else str(self.path)

    @property
    def stdin(self) -> bool:
        return self.path in (None, "-")

    def check(self) -> int | None:
        """For a regular file: read it once, check every line and return how many ids or
        items it holds (standard input cannot be read twice: None)."""
        if self.stdin or not os.path.isfile(str(self.path)):
            self._open_check()
            return None
        return sum(1 for _ in self._values())

    def chunks(self, size: int) -> Iterator[Chunk]:
        """Chunks of at most ``size`` ids or items (items also at most MAX_CHUNK_BYTES)."""
        batch: list[Any] = []
        weight = 0
        for value, length in self._values():
            if batch and (len(batch) >= size or weight + length > MAX_CHUNK_BYTES):
                yield self._chunk(batch)
                batch, weight = [], 0
            batch.append(value)
            weight += length
        if batch:
            yield self._chunk(batch)

    def _chunk(self, batch: list[Any]) -> Chunk:
        return Chunk(ids=batch) if self.kind == "ids" else Chunk(items=batch)

    def _values(self) -> Iterator[tuple[Any, int]]:
        with self._open() as stream:
            for number, raw in enumerate(stream, 1):
                value = self._parse(raw, number)
                if value is not None:
                    yield value, len(raw)

    def _parse(self, raw: bytes, number: int) -> Any:
        line = raw.strip()
        if not line:
            return None
        if self.kind == "ids":
            try:
                return line.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(f"{self.name}, line {number}: not UTF-8 text") from None
        try:
            item = exactjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise InputError(f"{self.name}, line {number}: not JSON ({exc})") from None
        if not isinstance(item, dict):
            raise InputError(f"{self.name}, line {number}: an item must be a JSON object")
        return item

    def _open_check(self) -> None:
        with self._open():
            pass

    @contextmanager
    def _open(self) -> Iterator[BinaryIO]:
        if self.stdin:
            # A reader of its own, not sys.stdin.buffer: a read still blocked in a daemon
            # thread at exit (Ctrl-C) would hold sys.stdin's lock, and Python aborts when
            # it flushes the standard streams at shutdown.
            with open(sys.stdin.fileno(), "rb", closefd=False) as stream:
                yield stream
            return
        try:
            stream = open(str(self.path), "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise InputError(f"cannot read {self.path}: {exc.strerror}") from None
        with stream:
            yield stream
