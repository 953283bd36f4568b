"""sqlite:///path: a persistent file in WAL mode, safe for several processes, TTL purged."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from stream_mw import ConfigurationError, Settings, StoreUnavailableError
from stream_mw._store import SQLiteStore, open_store
from stream_mw._store.sqlite import sqlite_path
from tests.store.helpers import stored

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def rows(path: Path, table: str = "stream_mw_responses") -> int:
    with sqlite3.connect(path) as conn:
        count: int = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    return count


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:////var/lib/app/responses.db", "/var/lib/app/responses.db"),
        ("sqlite:///responses.db", "responses.db"),
        ("sqlite:///data/responses.db", "data/responses.db"),
        ("sqlite://", ":memory:"),
        ("sqlite:///:memory:", ":memory:"),
    ],
)
def test_sqlite_url_follows_the_sqlalchemy_convention(url: str, path: str) -> None:
    assert sqlite_path(url) == path


@pytest.mark.parametrize("url", ["sqlite://relative.db", "sqlite:///x.db?mode=ro"])
def test_malformed_sqlite_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match=r"sqlite:///relative\.db"):
        open_store(Settings(store_url=url))


async def test_responses_survive_closing_and_reopening_the_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    item = stored()
    first = open_store(Settings(store_url=url))
    assert isinstance(first, SQLiteStore)
    await first.put("t", item)
    await first.aclose()
    second = open_store(Settings(store_url=url))
    assert second is not None
    try:
        assert await second.get("t", item.id) == item
    finally:
        await second.aclose()


async def test_database_is_created_with_its_schema_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "new" / "r.db"
    path.parent.mkdir()
    store = SQLiteStore(str(path), ttl=60, max_response_bytes=1_000_000)
    try:
        await store.put("t", stored())
    finally:
        await store.aclose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert rows(path) == 1


async def test_expired_rows_are_invisible_then_purged_by_a_later_write(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    clock = Clock()
    store = SQLiteStore(str(path), ttl=10, max_response_bytes=1_000_000, clock=clock)
    try:
        old = [stored() for _ in range(20)]
        for item in old:
            await store.put("t", item)
        clock.now += 10
        assert await store.get("t", old[0].id) is None
        assert await store.get_items("t", old[0].item_ids()) == {}
        assert await store.delete("t", old[1].id) is False
        clock.now += 60  # past the purge interval
        fresh = stored()
        await store.put("t", fresh)
        assert rows(path) == 1
        assert rows(path, "stream_mw_items") == 2
        assert await store.get("t", fresh.id) == fresh
    finally:
        await store.aclose()


async def test_purge_expired_deletes_every_expired_row(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    clock = Clock()
    store = SQLiteStore(str(path), ttl=10, max_response_bytes=1_000_000, clock=clock)
    try:
        for _ in range(5):
            await store.put("t", stored())
        clock.now += 5
        live = stored()
        await store.put("t", live)
        clock.now += 6
        assert await store.purge_expired() == 5
        assert rows(path) == 1
        assert await store.get("t", live.id) == live
    finally:
        await store.aclose()


async def test_a_write_waiting_for_another_connections_lock_does_not_block_the_loop(
    tmp_path: Path,
) -> None:
    path = tmp_path / "r.db"
    store = SQLiteStore(str(path), ttl=60, max_response_bytes=1_000_000)
    await store.put("t", stored())  # creates the schema
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # hold the write lock, as another worker would
    item = stored()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.put, "t", item)
            await anyio.wait_all_tasks_blocked()
            # Only reachable while the put waits if the put is off the event loop.
            other.execute("COMMIT")
        assert await store.get("t", item.id) == item
    finally:
        other.close()
        await store.aclose()


async def test_lock_held_past_the_busy_timeout_is_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    store = SQLiteStore(str(path), ttl=60, max_response_bytes=1_000_000, busy_timeout=0.05)
    await store.put("t", stored())
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreUnavailableError, match="locked"):
            await store.put("t", stored())
    finally:
        other.execute("COMMIT")
        other.close()
        await store.aclose()


async def test_unopenable_file_is_store_unavailable(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "missing" / "r.db"), ttl=60, max_response_bytes=1000)
    try:
        with pytest.raises(StoreUnavailableError, match="SQLite"):
            await store.get("t", "resp_1")
    finally:
        await store.aclose()


async def test_closed_store_refuses_calls() -> None:
    store = SQLiteStore(":memory:", ttl=60, max_response_bytes=1000)
    await store.aclose()
    await store.aclose()
    with pytest.raises(StoreUnavailableError, match="closed"):
        await store.get("t", "resp_1")


def _worker(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.store.sqlite_worker", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return out


def test_two_processes_write_the_same_file_at_once_and_read_each_others_responses(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "shared.db")
    writers = [_worker("write", path, "tenant", name, "150") for name in ("a", "b")]
    assert [_finish(w).strip() for w in writers] == ["ok", "ok"]
    reader = _worker("read", path, "tenant", "a_0", "b_149", "a_149", "b_0", "c_0")
    assert _finish(reader).split("\n")[:5] == ["a 0", "b 149", "a 149", "b 0", "-"]
    assert rows(Path(path)) == 300
    foreign = _worker("read", path, "other-tenant", "a_0")
    assert _finish(foreign).strip() == "-"


async def test_two_stores_opening_one_new_file_at_once_both_set_it_up(tmp_path: Path) -> None:
    # Two workers starting on a fresh file: one of them used to fail its first request with
    # "database is locked" (about one start in twenty), since the switch to WAL does not
    # wait for busy_timeout. A hundred fresh files make a miss of that race unlikely.
    for round_ in range(100):
        path = str(tmp_path / f"fresh-{round_}.db")
        first = SQLiteStore(path, ttl=60, max_response_bytes=100_000)
        second = SQLiteStore(path, ttl=60, max_response_bytes=100_000)
        try:
            async with anyio.create_task_group() as both:
                both.start_soon(first.put, "t", stored(f"resp_a{round_}"))
                both.start_soon(second.put, "t", stored(f"resp_b{round_}"))
            assert await first.get("t", f"resp_b{round_}") is not None
        finally:
            await first.aclose()
            await second.aclose()
