"""Render the Grafana dashboard (helm/bulkops/dashboards/bulkops.json) once, from real data.

Starts a throwaway Prometheus (Debian's /usr/bin/prometheus, 1 s scrapes) that scrapes the
worker and, when its plugin is enabled, the local RabbitMQ; starts the bundled API emulator
and the worker as subprocesses; publishes ~90 s of mixed traffic (single-id DatoCMS
publishes at a few hundred per second, some unpublish/destroy, Bloomreach bulk deletes of
100-1000 ids on two catalogs, a few locked items, injected 429s and 503s, a few rejected and
unparseable messages); then runs every panel's PromQL through Prometheus's
/api/v1/query_range and draws the panels, laid out by their gridPos, to docs/dashboard.png.

    uv run --with matplotlib==3.11.2 python docs/render_dashboard.py [--seconds 90] [--out PNG]

Needs the local RabbitMQ (scripts/bootstrap.sh). Everything it starts is stopped, and the
queues and exchange it declared are deleted, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import io
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import httpx

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "helm" / "bulkops" / "dashboards" / "bulkops.json"
AMQP_URL = os.environ.get("BULKOPS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
RABBIT_METRICS = "127.0.0.1:15692"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
SCRAPE_JOB = "bulkops"
RATE_INTERVAL = "15s"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """Linux: SIGKILL the child if this script dies without cleaning up (e.g. kill -9)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class Procs:
    tmp: Path
    cwd: Path = REPO  # where ``python -m worker`` finds the package
    started: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(
        self, name: str, args: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        out = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(  # noqa: S603 - our own fixed argv
            args,
            cwd=self.cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        self.started.append((name, proc))
        return proc

    def cpu_seconds(self, name: str) -> float:
        """User + system CPU time so far of a running process (Linux /proc)."""
        for proc_name, proc in self.started:
            if proc_name == name and proc.poll() is None:
                with contextlib.suppress(OSError), open(f"/proc/{proc.pid}/stat") as f:
                    fields = f.read().rpartition(")")[2].split()
                    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return math.nan

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.tmp / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def check(self) -> None:
        for name, proc in self.started:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")

    def stop(self, name: str, timeout: float = 15.0) -> None:
        for proc_name, proc in self.started:
            if proc_name == name and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    log(f"{name} did not stop in {timeout:.0f}s; killing it")
                    proc.kill()
                    proc.wait()

    def stop_all(self) -> None:
        for name, _ in reversed(self.started):
            self.stop(name)


async def wait_http(url: str, what: str, procs: Procs, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            procs.check()
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} not ready at {url} after {timeout:.0f}s")
            await asyncio.sleep(0.2)


# --------------------------------------------------------------------------- Prometheus


def rabbit_plugin_up() -> bool:
    try:
        return httpx.get(f"http://{RABBIT_METRICS}/metrics", timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


def prometheus_config(worker_port: int, rabbit: bool) -> dict[str, Any]:
    jobs: list[dict[str, Any]] = [
        {"job_name": SCRAPE_JOB, "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}]},
    ]
    if rabbit:
        jobs += [
            {"job_name": "rabbitmq", "static_configs": [{"targets": [RABBIT_METRICS]}]},
            {
                # What helm/bulkops/values.yaml documents (queue_coarse_metrics), plus
                # queue_consumer_count: rabbitmq_detailed_queue_consumers lives in that family.
                "job_name": "rabbitmq-detailed",
                "metrics_path": "/metrics/detailed",
                "params": {"family": ["queue_coarse_metrics", "queue_consumer_count"]},
                "static_configs": [{"targets": [RABBIT_METRICS]}],
            },
        ]
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": jobs,
    }


async def start_prometheus(procs: Procs, worker_port: int, rabbit: bool) -> str:
    port = free_port()
    config = procs.tmp / "prometheus.yml"
    config.write_text(json.dumps(prometheus_config(worker_port, rabbit), indent=1))  # JSON is YAML
    procs.start(
        "prometheus",
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={procs.tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1d",
            "--log.level=warn",
        ],
    )
    url = f"http://127.0.0.1:{port}"
    await wait_http(f"{url}/-/ready", "prometheus", procs)
    return url


# --------------------------------------------------------------------------- emulator + worker


@dataclass
class Names:
    request: str
    dlq: str
    results: str

    @classmethod
    def fresh(cls) -> Names:
        base = f"dash.{uuid.uuid4().hex[:8]}"
        return cls(f"{base}.requests", f"{base}.requests.dlq", f"{base}.results")


LOCKED = [f"pub-locked-{i:03d}" for i in range(40)]  # DatoCMS answers ITEM_LOCKED for these


async def start_emulator(procs: Procs) -> str:
    port = free_port()
    procs.start("emulator", [sys.executable, "-m", "worker", "emulator", "--port", str(port)])
    url = f"http://127.0.0.1:{port}"
    await wait_http(f"{url}/_emulator/config", "emulator", procs)
    async with httpx.AsyncClient(timeout=10) as client:
        config = {
            "datocms_job_seconds": 0.5,
            "datocms_rate": [60, 3.0],
            "bloomreach_rate": [5, 10.0],
        }
        (await client.post(f"{url}/_emulator/config", json=config)).raise_for_status()
        failures = {"ids": LOCKED, "action": "publish", "code": "ITEM_LOCKED"}
        (await client.post(f"{url}/_emulator/datocms/failures", json=failures)).raise_for_status()
    return url


async def inject(emulator: str, fault: dict[str, Any]) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        (await client.post(f"{emulator}/_emulator/faults", json=fault)).raise_for_status()


async def start_worker(procs: Procs, emulator: str, names: Names, port: int) -> None:
    targets = {
        "main": {"kind": "datocms", "base_url": emulator, "api_token": "dato-token"},
        "shop": {
            "kind": "bloomreach",
            "base_url": emulator,
            "api_key_id": "bloom-key",
            "api_secret": "bloom-secret",
            "project_id": "proj-1",
        },
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULKOPS_")}
    env |= {
        "BULKOPS_AMQP_URL": AMQP_URL,
        "BULKOPS_TARGETS": json.dumps(targets),
        "BULKOPS_REQUEST_QUEUE": names.request,
        "BULKOPS_DEAD_LETTER_QUEUE": names.dlq,
        "BULKOPS_RESULTS_EXCHANGE": names.results,
        "BULKOPS_HTTP_PORT": str(port),
    }
    procs.start("worker", [sys.executable, "-m", "worker", "run"], env=env)
    await wait_http(f"http://127.0.0.1:{port}/readyz", "worker", procs)


# --------------------------------------------------------------------------- traffic


@dataclass
class Tally:
    published: Counter[str] = field(default_factory=Counter)
    ids_sent: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    faults: list[str] = field(default_factory=list)


async def consume_results(
    channel: aio_pika.abc.AbstractChannel, names: Names, tally: Tally
) -> None:
    exchange = await channel.declare_exchange(
        names.results, aio_pika.ExchangeType.TOPIC, durable=True
    )
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(exchange, "#")

    async def on_outcome(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        with contextlib.suppress(Exception):
            body = json.loads(message.body)
            tally.outcomes[body["status"]] += 1
            if body.get("error"):
                tally.codes[body["error"]["code"]] += 1

    await queue.consume(on_outcome, no_ack=True)  # auto-ack: outcomes only counted here


def rate_at(t: float, seconds: float) -> float:
    """DatoCMS single-id messages per second: a ramp, a burst above capacity, a calmer tail."""
    f = t / seconds
    if f < 0.3:
        return 60 + 400 * f
    if f < 0.6:
        return 200
    return 100


class Publisher:
    def __init__(self, channel: aio_pika.abc.AbstractChannel, names: Names, tally: Tally) -> None:
        self.exchange = channel.default_exchange
        self.names = names
        self.tally = tally
        self.seq = 0

    async def send(self, body: dict[str, Any] | bytes, lane: str = "") -> None:
        """Publish to the request queue, or (``lane=".priority"``) to its priority lane."""
        self.seq += 1
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        message = aio_pika.Message(
            raw,
            content_type="application/json",
            message_id=f"dash-{self.seq}",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            timestamp=datetime.now(UTC),
        )
        await self.exchange.publish(message, routing_key=self.names.request + lane)
        if isinstance(body, dict):
            self.tally.published[str(body.get("operation"))] += 1
            self.tally.ids_sent[str(body.get("operation"))] += len(body.get("ids", []))
        else:
            self.tally.published["unparseable"] += 1


def dato(op: str, ids: list[str]) -> dict[str, Any]:
    return {
        "operation": f"datocms.items.{op}",
        "target": "main",
        "environment": "sandbox-1",
        "ids": ids,
    }


async def urgent(pub: Publisher, t: float, due: float, n: int) -> float:
    """An editor's urgent unpublish on the priority lane, every ~2 s; the next time due."""
    if t < due:
        return due
    await pub.send(dato("unpublish", [f"urgent-{n:07d}"]), lane=".priority")
    return due + 2.0


async def traffic(
    pub: Publisher, emulator: str, seconds: float, procs: Procs, tally: Tally
) -> None:
    rng = random.Random(7)
    # At this fraction of the run -> fault. Each kind comes twice: a labelled counter only
    # exists from its first increment on, so rate() cannot see the first burst of each.
    faults = {
        0.15: {"kind": "status", "count": 3, "api": "datocms", "status": 429},
        0.25: {"kind": "status", "count": 4, "api": "datocms", "status": 503},
        0.35: {"kind": "status", "count": 2, "api": "bloomreach", "status": 429},
        0.50: {"kind": "status", "count": 3, "api": "datocms", "status": 429},
        0.60: {"kind": "status", "count": 4, "api": "datocms", "status": 503},
        0.70: {"kind": "status", "count": 2, "api": "bloomreach", "status": 429},
    }
    tick, n, start = 0.1, 0, time.monotonic()
    next_bloom, next_bad, next_urgent = 1.0, 5.0, 2.0
    while (t := time.monotonic() - start) < seconds:
        procs.check()
        for at in [at for at in faults if t >= at * seconds]:
            fault = faults.pop(at)
            await inject(emulator, fault)
            tally.faults.append(f"t={t:.0f}s {fault['api']} {fault['status']} x{fault['count']}")
        batch = []
        for _ in range(max(1, round(rate_at(t, seconds) * tick))):
            n += 1
            roll = rng.random()
            if roll < 0.80:
                item = rng.choice(LOCKED) if rng.random() < 0.01 else f"pub-{n:07d}"
                batch.append(dato("publish", [item]))
            elif roll < 0.92:
                batch.append(dato("unpublish", [f"unp-{n:07d}"]))
            else:
                batch.append(dato("destroy", [f"del-{n:07d}"]))
        if t >= next_bloom:  # one bulk delete per catalog every ~6 s
            next_bloom += 6.0
            for catalog in ("catalog-a", "catalog-b"):
                size = rng.randint(100, 1000)
                ids = [f"{catalog}-{n}-{i}" for i in range(size)]
                if rng.random() < 0.3:
                    ids[0] = "bad/id"  # Bloomreach cannot take '/': rejected
                batch.append(
                    {
                        "operation": "bloomreach.catalog_items.delete",
                        "target": "shop",
                        "catalog_id": catalog,
                        "ids": ids,
                    }
                )
        if t >= next_bad:  # now and then: an unknown target (rejected) and a dead letter
            next_bad += 9.0
            batch.append({**dato("publish", [f"x-{n}"]), "target": "nope"})
            batch.append(
                b"{not json" if rng.random() < 0.5 else {"operation": "datocms.items.publish"}
            )
        next_urgent = await urgent(pub, t, next_urgent, n)
        await asyncio.gather(*(pub.send(body) for body in batch))
        await asyncio.sleep(max(0.0, start + t + tick - time.monotonic()))


async def wait_drained(tally: Tally, limit: float) -> None:
    """Until every id sent has its outcome (or ``limit`` seconds pass), then a few idle scrapes.

    (Not bulkops_pending_items == 0: that gauge does not return to 0 when an id was coalesced
    into an item that was still pending; see docs/dashboard.md.)
    """
    deadline = time.monotonic() + limit
    expected = sum(tally.ids_sent.values())
    while time.monotonic() < deadline and sum(tally.outcomes.values()) < expected:
        await asyncio.sleep(0.5)
    await asyncio.sleep(5)


# --------------------------------------------------------------------------- queries


def panels_of(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows keep their panels inside
    return out


def substitute(expr: str, names: Names) -> str:
    values = {
        "__rate_interval": RATE_INTERVAL,
        "__interval": "1s",
        "namespace": ".*",  # "All"
        "job": SCRAPE_JOB,
        "queue": names.request,
        "dlq": names.dlq,
    }

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return values.get(name, m.group(0))

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", repl, expr)


@dataclass
class Series:
    label: str
    t: list[float]
    v: list[float]


async def query_range(
    client: httpx.AsyncClient, prom: str, expr: str, start: float, end: float
) -> list[dict[str, Any]]:
    r = await client.get(
        f"{prom}/api/v1/query_range",
        params={"query": expr, "start": start, "end": end, "step": "1s"},
    )
    body = r.json()
    if body.get("status") != "success":
        raise RuntimeError(f"query failed: {expr}: {body.get('error')}")
    return list(body["data"]["result"])


SHORT = {"datocms.items.": "datocms ", "bloomreach.catalog_items.": "bloomreach "}


def legend(fmt: str | None, metric: dict[str, str]) -> str:
    """Grafana's legendFormat, with operation names shortened to fit the small panels."""
    if fmt:
        text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt).strip()
        for long, short in SHORT.items():
            text = text.replace(long, short)
        return text
    labels = {k: v for k, v in metric.items() if k != "__name__"}
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "value"


async def fetch_panels(
    prom: str, dashboard: dict[str, Any], names: Names, start: float, end: float
) -> dict[int, list[Series]]:
    data: dict[int, list[Series]] = {}
    async with httpx.AsyncClient(timeout=30) as client:
        for panel in panels_of(dashboard):
            if panel.get("type") == "row":
                continue
            series = []
            for target in panel.get("targets", []):
                expr = substitute(target["expr"], names)
                for result in await query_range(client, prom, expr, start, end):
                    t = [float(ts) - start for ts, _ in result["values"]]
                    v = [float(val) for _, val in result["values"]]  # "NaN" -> nan: a gap
                    if any(not math.isnan(x) for x in v):
                        series.append(
                            Series(legend(target.get("legendFormat"), result["metric"]), t, v)
                        )
            data[panel["id"]] = series
    return data


async def metric_names(prom: str) -> set[str]:
    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.get(f"{prom}/api/v1/label/__name__/values")
        return set(r.json()["data"])


def missing_metrics(panel: dict[str, Any], known: set[str]) -> list[str]:
    found = set()
    for target in panel.get("targets", []):
        found |= set(re.findall(r"\b((?:bulkops|rabbitmq)_\w+)", target["expr"]))
    return sorted(name for name in found if name not in known)


# --------------------------------------------------------------------------- drawing


def fmt_value(value: float, unit: str | None) -> str:
    if math.isnan(value):
        return "-"
    if unit == "percentunit":
        return f"{value * 100:.1f}%"
    if unit == "s":
        return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"
    suffix = {"ops": " /s", "reqps": " req/s"}.get(unit or "", "")
    if abs(value) >= 1000:
        return f"{value / 1000:.1f}k{suffix}"
    return (
        f"{value:.0f}{suffix}"
        if value == int(value) or abs(value) >= 100
        else f"{value:.2f}{suffix}"
    )


def axis_formatter(unit: str | None):  # type: ignore[no-untyped-def]
    from matplotlib.ticker import FuncFormatter

    if unit == "percentunit":
        return FuncFormatter(lambda v, _: f"{v * 100:.0f}%")
    if unit == "s":
        return FuncFormatter(lambda v, _: f"{v * 1000:.0f}ms" if 0 < v < 1 else f"{v:g}s")
    return FuncFormatter(lambda v, _: f"{v / 1000:g}k" if abs(v) >= 1000 else f"{v:g}")


UNIT_H, TOP, WIDTH = 34, 74, 1600  # px per gridPos row, header, figure width
GREEN, GREY = "#2e7d32", "#9e9e9e"


def draw(
    dashboard: dict[str, Any],
    data: dict[int, list[Series]],
    out: Path,
    header: str,
    span: float,
    traffic_end: float,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = panels_of(dashboard)
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    height = TOP + rows * UNIT_H + 10
    fig = plt.figure(figsize=(WIDTH / 100, height / 100), dpi=100, facecolor="white")
    fig.text(0.01, 1 - 14 / height, dashboard["title"], fontsize=16, weight="bold", va="top")
    fig.text(
        0.01,
        1 - 36 / height,
        "\n".join(textwrap.wrap(header, 250)),
        fontsize=9,
        color="#444",
        va="top",
        linespacing=1.4,
    )

    def box(p: dict[str, Any], pad: float = 4) -> tuple[float, float, float, float]:
        g = p["gridPos"]
        x0, w = g["x"] * WIDTH / 24 + pad, g["w"] * WIDTH / 24 - 2 * pad
        y0, h = TOP + g["y"] * UNIT_H + pad, g["h"] * UNIT_H - 2 * pad
        return x0, y0, w, h  # px, from the top left

    def axes(x0: float, y0: float, w: float, h: float) -> Any:
        return fig.add_axes((x0 / WIDTH, 1 - (y0 + h) / height, w / WIDTH, h / height))

    for p in panels:
        x0, y0, w, h = box(p)
        if p["type"] == "row":
            fig.text(
                x0 / WIDTH,
                1 - (y0 + h / 2) / height,
                p["title"],
                fontsize=12,
                weight="bold",
                va="center",
                color="#1a3d6d",
            )
            continue
        frame = axes(x0, y0, w, h)
        frame.set_xticks([]), frame.set_yticks([])
        frame.set_facecolor("#fafafa")
        for spine in frame.spines.values():
            spine.set_color("#d0d0d0")
        frame.text(
            0.5 if p["type"] == "stat" else 0.01,
            1 - 11 / h,
            p["title"],
            transform=frame.transAxes,
            fontsize=9.5,
            weight="bold",
            va="center",
            ha="center" if p["type"] == "stat" else "left",
        )
        series = data.get(p["id"], [])
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit")
        if not series:
            frame.text(
                0.5,
                0.45,
                "No data",
                transform=frame.transAxes,
                ha="center",
                va="center",
                fontsize=11,
                color=GREY,
            )
            continue
        if p["type"] == "stat":
            draw_stat(fig, axes, series, unit, x0, y0, w, h)
        else:
            draw_timeseries(axes, series, unit, x0, y0, w, h, span, traffic_end)
    fig.savefig(out, dpi=100, facecolor="white")
    plt.close(fig)


def draw_stat(
    fig: Any,
    axes: Any,
    series: list[Series],
    unit: str | None,
    x0: float,
    y0: float,
    w: float,
    h: float,
) -> None:
    s = series[0]
    last = next((v for v in reversed(s.v) if not math.isnan(v)), math.nan)
    spark = axes(x0 + 2, y0 + h * 0.55, w - 4, h * 0.45 - 2)
    spark.fill_between(s.t, [0 if math.isnan(v) else v for v in s.v], color=GREEN, alpha=0.18, lw=0)
    spark.plot(s.t, s.v, color=GREEN, lw=1)
    spark.set_axis_off()
    peak = max((v for v in s.v if not math.isnan(v)), default=math.nan)
    if peak > 0:
        spark.set_ylim(0, peak * 1.45)  # room for the "max" line above the curve
    spark.text(
        0.5,
        1.25,
        fmt_value(last, unit),
        transform=spark.transAxes,
        ha="center",
        va="center",
        fontsize=20,
        weight="bold",
        color=GREEN,
    )
    spark.text(
        0.5,
        0.88,
        f"max {fmt_value(peak, unit)} in the run",
        transform=spark.transAxes,
        ha="center",
        fontsize=7.5,
        color="#555",
    )


def draw_timeseries(
    axes: Any,
    series: list[Series],
    unit: str | None,
    x0: float,
    y0: float,
    w: float,
    h: float,
    span: float,
    traffic_end: float,
) -> None:
    ncol = 2 if w < 700 else 3
    legend_rows = math.ceil(len(series) / ncol)
    legend_h = 12 * legend_rows + 4
    ax = axes(x0 + 46, y0 + 24, w - 56, h - 24 - 18 - legend_h)
    colors = [f"C{i}" for i in range(10)]
    for i, s in enumerate(series):
        style = (
            "--"
            if s.label.startswith(("allowed", "in-flight", "DLQ", "retries", "timeouts"))
            else "-"
        )
        ax.plot(s.t, s.v, lw=1.3, ls=style, color=colors[i % 10], label=s.label)
    ax.axvline(traffic_end, color="#888", lw=0.8, ls=":")  # traffic stops here
    ax.set_xlim(0, span)
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(axis_formatter(unit))
    ax.xaxis.set_major_formatter(axis_formatter(None))
    ax.tick_params(labelsize=7.5, length=2, pad=1)
    ax.grid(True, color="#e4e4e4", lw=0.6)
    for spine in ("top", "right"):
        ax.spines[spine].set_visible(False)
    ax.legend(
        loc="upper left",
        bbox_to_anchor=(-0.02, -0.11),
        ncol=ncol,
        fontsize=7.5,
        frameon=False,
        handlelength=1.6,
        columnspacing=1.2,
        borderaxespad=0,
        labelspacing=0.25,
    )


# --------------------------------------------------------------------------- main


def worker_source(ref: str | None, procs: Procs) -> str:
    """Point ``procs`` at the worker package to run; returns how to name that version."""

    def git(*args: str) -> bytes:
        argv = [shutil.which("git") or "git", "-C", str(REPO), *args]
        return subprocess.run(argv, capture_output=True, check=True).stdout  # noqa: S603

    if ref is None:
        return "working tree " + git("describe", "--always", "--dirty").decode().strip()
    sha = git("rev-parse", "--short", f"{ref}^{{commit}}").decode().strip()
    src = procs.tmp / "src"
    src.mkdir()
    with tarfile.open(fileobj=io.BytesIO(git("archive", sha, "worker"))) as tar:
        tar.extractall(src, filter="data")
    procs.cwd = src
    return f"commit {sha}"


async def cleanup_amqp(names: Names) -> None:
    with contextlib.suppress(Exception):
        connection = await aio_pika.connect(AMQP_URL, timeout=10)
        async with connection:
            channel = await connection.channel()
            for queue in (names.request, names.dlq):
                with contextlib.suppress(Exception):
                    await channel.queue_delete(queue)
            with contextlib.suppress(Exception):
                await channel.exchange_delete(names.results)


async def run(args: argparse.Namespace) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    names, tally = Names.fresh(), Tally()
    tmp = Path(tempfile.mkdtemp(prefix="bulkops-dash-"))
    procs = Procs(tmp)
    version = worker_source(args.ref, procs)
    connection = None
    try:
        rabbit = rabbit_plugin_up()
        if not rabbit:
            log(
                f"no rabbitmq_prometheus plugin on {RABBIT_METRICS}: the RabbitMQ panels stay empty"
            )
        worker_port = free_port()
        prom = await start_prometheus(procs, worker_port, rabbit)
        log(f"prometheus on {prom}")
        emulator = await start_emulator(procs)
        log(f"emulator on {emulator}")
        connection = await aio_pika.connect(AMQP_URL, timeout=20)
        results_channel = await connection.channel()
        await consume_results(results_channel, names, tally)
        await start_worker(procs, emulator, names, worker_port)
        log(
            f"worker ready (queue {names.request}, :{worker_port}); traffic for {args.seconds:.0f}s"
        )
        pub = Publisher(await connection.channel(publisher_confirms=False), names, tally)
        start, cpu0 = time.time(), procs.cpu_seconds("worker")
        await traffic(pub, emulator, args.seconds, procs, tally)
        traffic_end = time.time()
        log(f"traffic done: {dict(tally.published)}; waiting for the worker to drain")
        await wait_drained(tally, args.drain)
        end = time.time()
        cpu = procs.cpu_seconds("worker") - cpu0
        log(f"worker CPU: {cpu:.0f} s in {end - start:.0f} s ({cpu / (end - start):.0%} of a core)")
        log(f"outcomes received: {dict(tally.outcomes)}; querying Prometheus")
        data = await fetch_panels(prom, dashboard, names, start - 5, end)
        known = await metric_names(prom)
        procs.check()
        items = sum(tally.ids_sent.values())
        header = (
            f"Rendered {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by docs/render_dashboard.py "
            f"(worker: {version}) "
            f"from a local Prometheus (1 s scrapes, $__rate_interval={RATE_INTERVAL}); "
            "x axis: seconds since traffic start, dotted line: traffic stops. "
            f"{sum(tally.published.values())} messages / {items} ids in {args.seconds:.0f} s "
            f"against the bundled emulator; faults: {'; '.join(tally.faults)}."
        )
        draw(dashboard, data, args.out, header, end - start, traffic_end - start)
        log(f"wrote {args.out}")
        report(dashboard, data, known, tally, names)
    finally:
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()
        procs.stop_all()
        await cleanup_amqp(names)
        shutil.rmtree(tmp, ignore_errors=True)


def summary(s: Series) -> str:
    values = [v for v in s.v if not math.isnan(v)]
    return f"mean {sum(values) / len(values):.3g} max {max(values):.3g} last {values[-1]:.3g}"


def report(
    dashboard: dict[str, Any],
    data: dict[int, list[Series]],
    known: set[str],
    tally: Tally,
    names: Names,
) -> None:
    print("\n== panels ==")
    for p in panels_of(dashboard):
        if p["type"] == "row":
            continue
        series = data.get(p["id"], [])
        if series:
            peaks = "; ".join(f"{s.label or '-'}: {summary(s)}" for s in series)
            print(f"[{p['id']:>2}] {p['title']}: {len(series)} series ({peaks})")
        else:
            gone = missing_metrics(p, known)
            why = (
                f"metrics never scraped: {', '.join(gone)}"
                if gone
                else "metrics exist, query returned nothing"
            )
            print(f"[{p['id']:>2}] {p['title']}: NO DATA ({why})")
    print("\n== run ==")
    print(f"published: {dict(tally.published)}")
    print(f"ids sent: {dict(tally.ids_sent)}")
    print(f"outcomes: {dict(tally.outcomes)}; error codes: {dict(tally.codes)}")
    print(f"faults: {tally.faults}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=90.0, help="traffic duration")
    parser.add_argument(
        "--drain", type=float, default=25.0, help="max wait for the worker to drain"
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "dashboard.png")
    parser.add_argument(
        "--ref",
        help="run the worker and emulator of this git revision (e.g. HEAD), not the working tree",
    )
    args = parser.parse_args()

    async def guarded() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, task.cancel)
        await run(args)

    try:
        asyncio.run(guarded())
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit(130)


if __name__ == "__main__":
    main()
