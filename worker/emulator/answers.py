"""Canned answers that do not depend on API state: rate-limit refusals and scripted statuses."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from worker.emulator.bloomreach_http import error_json
from worker.emulator.config import EmulatorConfig
from worker.emulator.faults import Fault
from worker.emulator.jsonapi import default_error_body, error_response, json_response
from worker.emulator.log import ApiName
from worker.emulator.ratelimit import RateDecision


def too_many(api: ApiName, decision: RateDecision, config: EmulatorConfig) -> web.Response:
    reset = str(max(1, decision.reset_seconds))
    if api == "datocms":
        response = error_response(429, "RATE_LIMIT_EXCEEDED", {}, transient=True)
        response.headers["X-RateLimit-Reset"] = reset
        return response
    headers = {"Retry-After": reset} if config.bloomreach_retry_after else None
    return error_json(429, "Rate limit exceeded", headers)


def fault_status(api: ApiName, fault: Fault, config: EmulatorConfig) -> web.Response:
    response = _fault_body(api, fault)
    if fault.status == 429 and api == "datocms":
        response.headers["X-RateLimit-Reset"] = "1"
    if fault.status == 429 and api == "bloomreach" and config.bloomreach_retry_after:
        response.headers["Retry-After"] = "1"
    response.headers.update(fault.headers or {})
    return response


def _fault_body(api: ApiName, fault: Fault) -> web.Response:
    body: Any = fault.body
    if isinstance(body, str | bytes):
        return web.Response(status=fault.status, body=body, content_type="application/json")
    if api == "datocms":
        return json_response(
            fault.status, body if body is not None else default_error_body(fault.status)
        )
    if body is None:
        return error_json(fault.status, f"Emulated error {fault.status}")
    return web.Response(
        status=fault.status, body=orjson.dumps(body), content_type="application/json"
    )


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def not_found(api: ApiName) -> web.Response:
    if api == "datocms":
        return error_response(404, "NOT_FOUND")
    return error_json(404, "Not found")


def method_not_allowed(api: ApiName) -> web.Response:
    if api == "datocms":
        return error_response(405, "METHOD_NOT_ALLOWED")
    return error_json(405, "Method not allowed")
