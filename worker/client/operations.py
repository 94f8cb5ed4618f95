"""The operations of the wire contract, as a client sees them: which API, which scope field,
whether messages carry ``ids`` or ``items``, and what ``params`` they take.

The client checks a job against this table before anything is published. It is the
contract's table (``CONTRACT.md``, "Request message"), read from the worker's registry
(each API area lists its operations there, those the worker does not carry out yet too): a
worker answers an operation it does not carry out ``rejected`` (``unknown_operation``).
"""

from __future__ import annotations

from worker.apis.base import Operation as OperationSpec
from worker.messages import scope_problem
from worker.registry import CONTRACT_OPERATIONS

__all__ = ["CONTRACT_OPERATIONS", "OperationSpec", "scope_problem"]
