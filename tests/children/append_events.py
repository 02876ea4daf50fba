"""A separate process appending events to one run: ``append_events.py PATH RUN_ID COUNT TASKS``."""

import asyncio
import os
import sys

from daemon_db import DB


async def main(path: str, run_id: str, count: int, tasks: int) -> None:
    async with DB.open(path) as db:

        async def append(n: int) -> None:
            for i in range(n):
                await db.append_event(run_id, "child", payload={"pid": os.getpid(), "i": i})

        await asyncio.gather(*(append(count // tasks) for _ in range(tasks)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
