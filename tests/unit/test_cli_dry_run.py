"""``bulkops submit --dry-run``: the whole input validated as the worker would, the request
messages and the batching shown, nothing published. The broker URL points at a closed port in
every test: a dry run that tried to connect would fail with exit 2."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from worker.__main__ import main

NO_BROKER = "amqp://guest:guest@127.0.0.1:1/"


@pytest.fixture(autouse=True)
def no_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BULKOPS_AMQP_URL", NO_BROKER)
    monkeypatch.delenv("BULKOPS_TARGETS", raising=False)


def lines(path: Path, values: list[str]) -> str:
    path.write_text("".join(f"{v}\n" for v in values))
    return str(path)


def dry_run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["submit", *args, "--dry-run"])
    out, err = capsys.readouterr()
    return code, out, err


def test_all_sendable_exits_0_and_shows_requests_batches_and_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """2,500 ids in chunks of 1,000: three request messages, 13 DatoCMS bulk requests of at
    most 200 (each a job polled at least once: 26 API requests) at the default 60 per 3 s."""
    ids = lines(tmp_path / "ids.txt", [f"id-{n}" for n in range(2500)])
    code, out, err = dry_run(capsys, "datocms.items.destroy", "--target", "main", "--ids-file", ids)
    assert code == 0, err
    assert "nothing is published" in out
    assert "3 request messages to bulkops.requests with 2500 ids" in out
    assert "request 3: 500 ids, 500 would be sent" in out
    assert "2500 ids in 13 API requests of at most 200 ids" in out
    assert (
        "13 bulk + at least 13 job polls = 26 API requests at DatoCMS's default 60/3s: about 3 s"
        in out
    )
    assert "cannot know the worker's targets" in out
    assert "would be rejected" not in out


def test_bloomreach_time_follows_its_rate_per_catalog(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """60,000 ids: 6 requests of 10,000 at 5 per 10 s: two windows, about 20 s."""
    ids = lines(tmp_path / "ids.txt", [f"sku-{n}" for n in range(60_000)])
    code, out, _ = dry_run(
        capsys, "bloomreach.catalog_items.delete", "--target", "shop", "--catalog-id", "p",
        "--ids-file", ids, "--chunk", "10000",
    )  # fmt: skip
    assert code == 0
    assert "60000 ids in 6 API requests of at most 10000 ids" in out
    assert "6 API requests at Bloomreach's default 5/10s: about 20 s" in out


def test_an_invalid_id_exits_1_and_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = lines(tmp_path / "ids.txt", ["a", "b/c", "d"])
    code, out, _ = dry_run(
        capsys, "bloomreach.catalog_items.delete", "--target", "shop", "--catalog-id", "p",
        "--ids-file", ids,
    )  # fmt: skip
    assert code == 1
    assert "request 1: 3 ids, 2 would be sent" in out
    assert "1 ids would be rejected" in out
    assert "'b/c'" in out and "(invalid_id)" in out


def test_an_invalid_item_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    items = [orjson.dumps(i).decode() for i in ({"id": "p1", "properties": {"a": 1}}, {"id": "p2"})]
    path = lines(tmp_path / "items.jsonl", items)
    code, out, _ = dry_run(
        capsys, "bloomreach.catalog_items.upsert", "--target", "shop", "--catalog-id", "p",
        "--items-file", path,
    )  # fmt: skip
    assert code == 1
    assert "'p2'" in out and "(invalid_item)" in out
    assert "1 items in 1 API request of" in out


def test_invalid_params_exit_1_every_item_rejected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = lines(tmp_path / "ids.txt", ["i1", "i2"])
    code, out, _ = dry_run(
        capsys, "datocms.uploads.tag", "--target", "main", "--params", '{"tags": []}',
        "--ids-file", ids,
    )  # fmt: skip
    assert code == 1
    assert "2 ids would be rejected" in out
    assert "(invalid_params)" in out


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["datocms.items.explode", "--target", "main"], "unknown operation"),
        (["bloomreach.catalog_items.delete", "--target", "shop"], "needs a catalog_id"),
        (["datocms.items.publish", "--target", "main", "--catalog-id", "c"], "does not apply"),
        (["datocms.uploads.tag", "--target", "main", "--params", "{"], "--params is not JSON"),
    ],
)
def test_usage_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], problem: str
) -> None:
    ids = lines(tmp_path / "ids.txt", ["i1"])
    code, out, err = dry_run(capsys, *args, "--ids-file", ids)
    assert code == 2
    assert problem in err
    assert out == ""


def test_without_dry_run_the_same_command_needs_the_broker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The closed port is what these tests rely on: a real submit fails on it (exit 2)."""
    ids = lines(tmp_path / "ids.txt", ["i1"])
    code = main(["submit", "datocms.items.publish", "--target", "main", "--ids-file", ids])
    assert code == 2
    assert "127.0.0.1:1" in capsys.readouterr().err
