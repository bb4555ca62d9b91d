"""What every command that talks to the API starts with: the connection, and what to work on.

A command works on a job (``--job DIR``) or on bare batch ids, never both. A job remembers the
server it was submitted to and talks to no other; the server is always the one the user's
configuration names (a job directory is data: it cannot send the key anywhere).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

from .. import commands
from ..errors import UsageError
from ..job import Job, check_server, open_job


@dataclass
class Connection:
    """How to reach the API: an explicit base URL (else the environment, .env, or Doubleword's)
    and whether plain http to another host is allowed; or the rehearsal sandbox (``sandbox``,
    ``rehearsal.py``)."""

    base_url: Optional[str] = None
    allow_insecure_http: bool = False
    sandbox: bool = False


def sandbox_config(conn: Connection) -> Any:
    """The configuration of the rehearsal sandbox (started now, stopped at the end of the run),
    never the user's key or .env."""
    from .. import config, output, rehearsal

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
    from ..config import load_config  # needs python-dotenv, and Client requests: imported only by
    from ..http import Client  # commands that talk to the API (a dry run needs neither)

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
    from ..http import check_id

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
