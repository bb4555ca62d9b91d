"""What every command that talks to the API starts with: the connection, and what to work on.

A command works on a job (``--job DIR``) or on bare batch ids, never both. A job remembers the
server it was submitted to and talks to no other; the server is always the one the user's
configuration names (a job directory is data: it cannot send the key anywhere).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple, TypeVar

from ..core import commands
from ..core.errors import LOCK_WAIT, JobError, UsageError
from ..core.optiongroups import Connection
from ..jobs.job import Job, check_server, open_job

T = TypeVar("T")


def sandbox_config(conn: Connection) -> Any:
    """The configuration of the rehearsal sandbox (started now, stopped at the end of the run),
    never the user's key or .env."""
    from ..core import config, output, rehearsal

    fresh = rehearsal.current() is None
    found = rehearsal.attach()
    if fresh:
        output.on_exit(lambda: rehearsal.detach(found))
    return config.Config(
        api_key=found.api_key,
        base_url=found.base_url,
        key_source="the rehearsal sandbox (its throwaway key; yours is not read)",
        base_url_source="--sandbox",
    )


def client_for(conn: Connection, job_dir: Optional[str] = None) -> Any:
    """An API client for the server the user's configuration names (a job's own record never
    chooses the server: ``check_server`` refuses a job submitted elsewhere), or for the
    rehearsal sandbox."""
    from ..core.config import load_config  # needs python-dotenv, and Client requests: imported only by
    from ..core.http import Client  # commands that talk to the API (a dry run needs neither)

    cfg = sandbox_config(conn) if conn.sandbox else load_config(conn.base_url, conn.allow_insecure_http)
    return Client(cfg)


def check_target(script: str, job_dir: Optional[str], batch_ids: Sequence[str]) -> None:
    """A command works on a job or on batch ids: exactly one of them."""
    if bool(job_dir) == bool(batch_ids):
        raise UsageError("pass either batch ids or --job DIR", hint=commands.target_hint(script))


def open_target(
    script: str, conn: Connection, job_dir: Optional[str], batch_ids: Sequence[str]
) -> Tuple[Any, Optional[Job], List[str]]:
    """(client, job or None, batch ids) for a command given a job or batch ids."""
    check_target(script, job_dir, batch_ids)
    from ..core.http import check_id

    client = client_for(conn, job_dir)
    if job_dir:
        job = open_job(job_dir)
        check_server(job, client.base_url)
        return client, job, []
    return client, None, list(dict.fromkeys(check_id(b, "batch") for b in batch_ids))


def open_job_for(conn: Connection, job_dir: str) -> Tuple[Any, Job]:
    """(client, job) for a command that works on a job only."""
    client = client_for(conn, job_dir)
    job = open_job(job_dir)
    check_server(job, client.base_url)
    return client, job


# -- the job lock: taken here only; the layers below work on a locked job (Job.require_lock) --


@contextlib.contextmanager
def holding(job: Job, wait: float = LOCK_WAIT) -> Iterator[Job]:
    """The job locked (waiting up to ``wait`` for another command, else a JobError) and loaded
    afresh for the block; unlocked after it, whatever happens."""
    job.lock(wait=wait)
    try:
        job.load()
        yield job
    finally:
        job.unlock()


def when_free(job: Job, action: Callable[[], T], wait: float = 0.0) -> Optional[T]:
    """``action()`` on the locked, freshly loaded job, or None without running it when another
    command holds the job (the work is left to that command or to the next check)."""
    try:
        job.lock(wait=wait)
    except JobError:
        return None
    try:
        job.load()
        return action()
    finally:
        job.unlock()
