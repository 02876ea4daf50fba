"""Open a database under conditions root would override: ``file_conditions.py PATH...``.

Run without the capabilities that let root ignore file permissions. For each
path it tries a read-write open with one write, then a read-only open with one
read, and prints one JSON object: {path: {"write": outcome, "read": outcome}},
an outcome being "ok" or "<ErrorClass>: <message>".
"""

import asyncio
import json
import os
import sys

from daemon_db import DB, Run


async def outcome(path: str, readonly: bool) -> str:
    try:
        async with DB.open(path, readonly=readonly) as db:
            if readonly:
                await db.list_runs()
            else:
                await db.create_run(
                    Run(
                        feature_branch="feature/probe",
                        repo_path="/probe",
                        target_branch="main",
                        tasks_dir="t",
                        parallelism=1,
                        status="completed",
                    )
                )
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "ok"


async def main(paths: list[str]) -> None:
    # Make sure permissions bind this process; otherwise the test proves nothing.
    enforced = not os.access(paths[0], os.W_OK) or not os.access(os.path.dirname(paths[0]), os.W_OK)
    results: dict[str, object] = {"enforced": enforced}
    for path in paths:
        results[path] = {"write": await outcome(path, False), "read": await outcome(path, True)}
    print(json.dumps(results))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
