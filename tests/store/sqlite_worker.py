"""A separate process using the SQLite store: ``python -m tests.store.sqlite_worker``.

``write PATH TENANT PREFIX COUNT`` stores COUNT responses ``PREFIX_0..`` and reads each back;
``read PATH TENANT ID...`` prints the output text of each id (or ``-`` if absent), one a line.
"""

from __future__ import annotations

import asyncio
import sys

from stream_mw._store import SQLiteStore
from tests.store.helpers import stored


async def main(argv: list[str]) -> None:
    command, path, tenant, *rest = argv
    store = SQLiteStore(path, ttl=3600, max_response_bytes=1_000_000)
    try:
        if command == "write":
            prefix, count = rest[0], int(rest[1])
            for i in range(count):
                item = stored(f"{prefix}_{i}", text=f"{prefix} {i}")
                await store.put(tenant, item)
                assert await store.get(tenant, item.id) == item
            print("ok")
        else:
            for response_id in rest:
                got = await store.get(tenant, response_id)
                print("-" if got is None else got.response["output"][0]["content"][0]["text"])
    finally:
        await store.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
