#!/usr/bin/env python3
# /// script
# requires-python = ">=3.9"
# dependencies = [
#   "requests>=2.32.4,<3",
#   "python-dotenv>=1.2.2,<2; python_version >= '3.10'",
#   "python-dotenv>=1.0,<2; python_version < '3.10'",
# ]
# ///
"""List the account's batches, newest first, with their status and request counts.

--search matches metadata, file names and ids (e.g. a job id: batches created by submit.py
carry metadata dwb_job, dwb_chunk and dwb_intent). --all follows the server's pages
(after / has_more) to the end.

Finding a job from a later conversation: --jobs lists the job directories below the working
directory (from their job.json: input, job_id, status as last seen, answers of the last
fetch, the poll command; no key needed); --input FILE finds every job and batch of that batch
file (new jobs mark their batches with the file's sha256), with the job directories here that
hold it.

The answer store (no key needed): --answers [FOLDER] shows the store of the job directories in
FOLDER (default: here), .dwb-answers/, which holds the good answers of their finished batches
so that a new job sends only requests not answered yet; --answers-limit MB sets its size limit
(default 1000; the answers used least recently are dropped to meet it); --clear-answers
[FOLDER] drops every answer in it (the jobs so far are not read in again).

examples:
  python3 scripts/list_batches.py
  python3 scripts/list_batches.py --status in_progress
  python3 scripts/list_batches.py --search 3f2c9a10 --all
  python3 scripts/list_batches.py --jobs
  python3 scripts/list_batches.py --input requests.jsonl
  python3 scripts/list_batches.py --answers"""

from __future__ import annotations

from typing import Optional, Sequence

from _dwbatches.core import output
from _dwbatches.workflow import cli
from _dwbatches.workflow.listing import STATUSES, answer_store, jobs_of_input, list_batches, list_jobs


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = output.make_parser(__doc__, network=True, script=__file__)
    parser.add_argument(
        "--limit", type=int, default=None, metavar="N", help="batches per page (1-100; default 20, or 100 with --all)"
    )
    parser.add_argument(
        "--status",
        choices=STATUSES,
        help="only batches with this status; expired: past their deadline, whatever their status (no batch is "
        "ever reported with a status expired)",
    )
    parser.add_argument("--search", metavar="TEXT", help="match metadata, file names or ids")
    parser.add_argument("--after", metavar="BATCH_ID", help="start after this batch (a previous last_id)")
    parser.add_argument("--all", action="store_true", help="follow pages until there are no more")
    find = parser.add_argument_group("finding jobs (instead of the account's batches)")
    one = find.add_mutually_exclusive_group()
    one.add_argument(
        "--jobs",
        action="store_true",
        help="the job directories below the working directory, as they record themselves (no key, nothing sent)",
    )
    one.add_argument("--input", metavar="FILE", help="the jobs and batches of this batch file (by its contents)")
    one.add_argument(
        "--answers",
        nargs="?",
        const=".",
        metavar="FOLDER",
        help="the answer store of the job directories in FOLDER (default: here): size, jobs (nothing sent)",
    )
    one.add_argument("--clear-answers", nargs="?", const=".", metavar="FOLDER", help="drop every answer of that store")
    find.add_argument(
        "--answers-limit", type=float, metavar="MB", help="with --answers: the store's size limit in MB (default 1000)"
    )
    args = output.parse_args(parser, argv)
    if args.answers_limit is not None and args.answers is None:
        args.answers = "."  # (the limit is the store's: set it and show the store)
    if args.answers is not None or args.clear_answers is not None:
        folder = args.clear_answers if args.clear_answers is not None else args.answers
        return output.run(
            lambda: output.finish(answer_store(folder, args.clear_answers is not None, args.answers_limit))
        )
    if args.jobs:
        return output.run(lambda: output.finish(list_jobs()))
    if args.input:
        return output.run(lambda: output.finish(jobs_of_input(cli.connection(args), args.input)))
    return output.run(
        lambda: output.finish(
            list_batches(
                cli.connection(args),
                limit=args.limit,
                status=args.status,
                search=args.search,
                after_id=args.after,
                follow=args.all,
            )
        )
    )


if __name__ == "__main__":
    raise SystemExit(main())
