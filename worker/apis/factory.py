"""Builds adapters: the one place that imports an API's adapter module, named by its area in
the catalog (``ApiSpec.adapter_module``). Only the pipeline's execution uses it; everything
else reads the catalog (``worker.registry``), which imports no adapter and no I/O.
"""

from __future__ import annotations

import importlib
from typing import cast

from worker.apis.adapters import Adapter, Tuning
from worker.apis.base import TargetBase
from worker.registry import APIS


def make_adapter(target: TargetBase, tuning: Tuning) -> Adapter:
    """The adapter for one configured target (any of the APIs' target models)."""
    module = importlib.import_module(APIS[target.kind].adapter_module)
    return cast(Adapter, module.make_adapter(target, tuning))
