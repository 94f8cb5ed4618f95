"""A local stand-in for the DatoCMS CMA and Bloomreach catalog APIs, over real HTTP."""

from worker.emulator.config import EmulatorConfig
from worker.emulator.faults import Fault
from worker.emulator.log import LogEntry
from worker.emulator.server import Emulator, serve

__all__ = ["Emulator", "EmulatorConfig", "Fault", "LogEntry", "serve"]
