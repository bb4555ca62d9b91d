#!/usr/bin/env python3
# /// script
# requires-python = ">=3.9"
# dependencies = ["requests>=2.28,<3", "python-dotenv>=1.0,<2"]
# ///
"""List the account's batches, newest first, with their status and request counts.

--search matches metadata, file names and ids (e.g. a job id: batches created by submit.py
carry metadata dwb_job, dwb_chunk and dwb_intent). --all follows the server's pages
(after / has_more) to the end.

examples:
  python3 scripts/list_batches.py
  python3 scripts/list_batches.py --status in_progress
  python3 scripts/list_batches.py --search 3f2c9a10 --all

output (stdout, JSON): batches (batch_id, status, created_at, completion_window, endpoint,
request_counts, input_file_id, output_file_id, error_file_id, expires_at, expired_at when
present, metadata), count, has_more, last_id (pass as --after for the next page), next."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from _dwbatches import commands, jobstatus, output
from _dwbatches.config import load_config
from _dwbatches.errors import EXIT_OK, UsageError
from _dwbatches.http import Client, check_id

STATUSES = ("in_progress", "completed", "failed", "cancelled", "expired")
PAGE_MAX = 100


def brief(b: Dict[str, Any]) -> Dict[str, Any]:
    doc = jobstatus.summarize_batch(b)
    doc = {"batch_id": doc.pop("batch_id"), "status": doc.pop("status"), "created_at": b.get("created_at"),
           "completion_window": b.get("completion_window"), "endpoint": b.get("endpoint"),
           "input_file_id": b.get("input_file_id"), **doc}
    meta = b.get("metadata")
    if isinstance(meta, dict) and meta:
        doc["metadata"] = meta
    return doc


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = output.make_parser(__doc__, network=True)
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="batches per page (1-100; default 20, or 100 with --all)")
    parser.add_argument("--status", choices=STATUSES, help="only batches with this status")
    parser.add_argument("--search", metavar="TEXT", help="match metadata, file names or ids")
    parser.add_argument("--after", metavar="BATCH_ID", help="start after this batch (a previous last_id)")
    parser.add_argument("--all", action="store_true", help="follow pages until there are no more")
    args = output.parse_args(parser, argv)

    def body() -> int:
        if args.limit is None:
            args.limit = PAGE_MAX if args.all else 20
        if not 1 <= args.limit <= PAGE_MAX:
            raise UsageError(f"--limit must be between 1 and {PAGE_MAX}")
        after = check_id(args.after, "batch") if args.after else None
        client = Client(load_config(args.base_url, args.allow_insecure_http))
        found: List[Dict[str, Any]] = []
        seen = set()
        has_more = False
        last_id = None
        while True:
            page = client.list_batches(limit=args.limit, after=after, status=args.status, search=args.search)
            data = [b for b in page.get("data") or [] if isinstance(b, dict)]
            fresh = [b for b in data if b.get("id") not in seen]
            for b in fresh:
                seen.add(b.get("id"))
                found.append(brief(b))
            has_more = bool(page.get("has_more"))
            last_id = page.get("last_id") or (data[-1].get("id") if data else None)
            if not args.all or not has_more or not fresh or not last_id or last_id == after:
                break
            after = last_id
            output.narrate(f"{len(found)} batches so far…")
        doc: Dict[str, Any] = {"batches": found, "count": len(found), "has_more": has_more, "last_id": last_id}
        if has_more and last_id:
            extra = ["--after", last_id, "--limit", str(args.limit)]
            if args.status:
                extra += ["--status", args.status]
            if args.search:
                extra += ["--search", args.search]
            doc["next"] = commands.command("list_batches.py", *extra)
        else:
            doc["next"] = None
        counts: Dict[str, int] = {}
        for b in found:
            counts[b["status"]] = counts.get(b["status"], 0) + 1
        output.narrate(f"{len(found)} batch(es)" + (": " + ", ".join(f"{n} {s}" for s, n in counts.items())
                                                    if counts else "") + (" (more: see next)" if has_more else ""))
        output.emit(doc)
        return EXIT_OK

    return output.run(body)


if __name__ == "__main__":
    raise SystemExit(main())
