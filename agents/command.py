"""The command a pauser runs for a decision, in a process group of its own.

``CMD`` runs under ``sh -c``; killing only the shell on a timeout would leave the real command
alive, able to act after the pauser recorded a failure and retried. So the command gets its own
session, and a timeout or a cancellation ends the whole group: SIGTERM, then SIGKILL after a
grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

import orjson


async def end_group(process: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM to the command's process group, SIGKILL to whatever is left after ``grace``."""
    group = process.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if process.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 0.05)
        elif not group_alive(group):
            return
        else:
            await asyncio.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    await process.wait()
    for _ in range(20):  # SIGKILL is not instant; zombies nobody reaps keep the group "alive"
        if not group_alive(group):
            return
        await asyncio.sleep(0.05)


def group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def run_command(
    command: str,
    decision: dict,
    action: str,
    timeout: float,
    extra_env: dict[str, str] | None = None,
    *,
    kill_grace: float = 2.0,
) -> int:
    """The exit code; -1 after a timeout. ``decision`` has passed ``validate``."""
    env = dict(
        os.environ,
        KPI_DECISION_ID=decision["decision_id"],
        KPI_CAMPAIGN=decision["campaign_id"],
        KPI_ACTION=action,
        **(extra_env or {}),
    )
    process = await asyncio.create_subprocess_shell(
        command, env=env, stdin=asyncio.subprocess.PIPE, start_new_session=True
    )
    try:
        await asyncio.wait_for(process.communicate(orjson.dumps(decision)), timeout)
    except TimeoutError:
        await end_group(process, kill_grace)
        return -1
    except asyncio.CancelledError:
        await end_group(process, kill_grace)
        raise
    return process.returncode if process.returncode is not None else -1
