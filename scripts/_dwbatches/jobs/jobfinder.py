"""Finding jobs from a later conversation: the job directories of a project, as their job.json
records them (no network), and the jobs of one input file (by its sha256, which every new job
marks its batches with: ``lookup.INPUT_KEY``).
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterator, List, Optional

from ..core import commands
from ..core.errors import DWError
from . import jobstatus
from .job import STATE_FILE, Job

# How deep below the project folder job directories are looked for, and how many at most.
DEPTH = 3
MOST = 200

# Folders never looked into (version control, environments, caches, node modules).
SKIP = frozenset({".git", ".hg", ".svn", ".venv", "venv", "node_modules", "__pycache__", ".cache", ".tox"})


def job_dirs(root: str = ".", depth: int = DEPTH) -> Iterator[str]:
    """The job directories below ``root`` (a folder holding a job.json), at most ``depth`` deep."""
    root = os.path.abspath(root)
    base = root.count(os.sep)
    found = 0
    for folder, subdirs, names in os.walk(root):
        if STATE_FILE in names and folder != root:
            yield folder
            found += 1
            if found >= MOST:
                return
            subdirs[:] = []  # nothing of interest inside a job directory
            continue
        subdirs[:] = sorted(d for d in subdirs if d not in SKIP and not os.path.islink(os.path.join(folder, d)))
        if folder.count(os.sep) - base >= depth:
            subdirs[:] = []


def summary(job_dir: str) -> Optional[Dict[str, Any]]:
    """What a job directory records: its input, id, status as last seen, counts, answers, and
    the command that checks it now; None when it cannot be read."""
    job = Job(job_dir)
    try:
        rec = job.load()
    except (DWError, OSError):
        return None
    targets = jobstatus.job_targets(rec)
    chunks = {c.batch_id: c for c in rec.chunks() if c.batch_id}
    summaries = []
    for t in targets:
        ch = chunks.get(t["batch_id"])
        if ch is None:
            continue
        known = {"id": ch.batch_id, "status": ch.status, "request_counts": ch.request_counts or {"total": ch.requests}}
        summaries.append(jobstatus.summarize_batch(known, t["round"], t["chunk"]))
    status = jobstatus.job_status(summaries, rec)
    checked = rec.answers if rec.answers and rec.answers.get("complete") else None
    jd = commands.display_path(job.dir)
    return {
        "job": job.dir,
        "job_id": rec.job_id,
        "input": rec.input.path,
        "input_sha256": rec.input.sha256,
        "requests": rec.input.requests,
        "rounds": len(rec.rounds),
        "status": status["status"],  # as last seen by a command on this job
        "updated_at": rec.updated_at,
        "answers": checked["counts"] if checked else None,
        "cancelled": rec.cancel is not None,
        "next": commands.command("poll.py", "--job", jd),
    }


def project_jobs(root: str = ".") -> List[Dict[str, Any]]:
    """Every job directory below ``root`` that can be read, newest first."""
    found = [s for s in (summary(d) for d in job_dirs(root)) if s is not None]
    found.sort(key=lambda s: -(s["updated_at"] or 0))
    return found


__all__ = ["DEPTH", "job_dirs", "project_jobs", "summary"]
