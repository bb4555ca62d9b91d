"""The engine: moves batches validating -> in_progress -> finalizing -> completed (or failed),
runs their requests on worker threads (claim, execute, finish) and makes the state changes the
API asks for (populate, cancel, requeue for a retry)."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
import traceback

from .backends import BuiltinModel, UpstreamBackend
from .config import Config
from .faults import Faults
from .store import Store, request_counts
from .wire import compact, error_line, failure_reason, http_failure, output_line

# Back to pending: the failed or cancelled requests of a batch (a retry).
REQUEUE_SQL = (
    "UPDATE requests SET state = 'pending', error = NULL, failed_at = NULL, canceled_at = NULL, "
    "done_seq = NULL, out_bytes = 0 WHERE batch_id = ? AND state IN ('failed', 'canceled')"
)


class Engine:
    """Moves batches validating -> in_progress -> finalizing -> completed and runs requests."""

    def __init__(self, cfg: Config, store: Store, faults: Faults) -> None:
        self.cfg = cfg
        self.store = store
        self.faults = faults
        self._stop = threading.Event()
        self._work = threading.Condition()
        self._tick = threading.Event()
        self._threads: list = []
        self.builtin = BuiltinModel(cfg.reasoning_tokens)
        self.upstream = None
        if self.cfg.upstream:
            self.upstream = UpstreamBackend(
                self.cfg.upstream,
                self.cfg.upstream_api_key,
                self.cfg.upstream_timeout,
                self.cfg.upstream_retries,
                self.cfg.upstream_model,
                self._stop,
            )

    # lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        with self.store.write() as conn:
            conn.execute("UPDATE requests SET state = 'pending' WHERE state = 'in_progress'")
        t = threading.Thread(target=self._housekeeper, name="sandbox-housekeeper", daemon=True)
        t.start()
        self._threads.append(t)
        for i in range(max(1, self.cfg.concurrency)):
            t = threading.Thread(target=self._worker, name=f"sandbox-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.wake()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def wake(self) -> None:
        self._tick.set()
        with self._work:
            self._work.notify_all()

    # housekeeping ------------------------------------------------------------------
    def _housekeeper(self) -> None:
        while not self._stop.is_set():
            try:
                self._housekeep_once()
            except Exception:
                traceback.print_exc()
            self._tick.wait(0.02)
            self._tick.clear()

    def _housekeep_once(self) -> None:
        now = time.time()
        with self.store.read() as conn:
            rows = conn.execute(
                "SELECT id, created_ts, populated, finalizing_ts FROM batches "
                "WHERE completed_at IS NULL AND failed_at IS NULL AND cancelling_at IS NULL"
            ).fetchall()
        for row in rows:
            if not row["populated"]:
                if now >= row["created_ts"] + self.cfg.validating_delay:
                    self.populate(row["id"])
                continue
            self._maybe_finalize(row["id"])

    def populate(self, batch_id: str, canceled: bool = False) -> None:
        """Create the request rows of a batch from its input file templates."""
        with self.store.write() as conn:
            self.populate_in(conn, batch_id, canceled)
        self.wake()

    def populate_in(self, conn: sqlite3.Connection, batch_id: str, canceled: bool = False) -> None:
        """``populate`` inside the caller's write transaction."""
        row = conn.execute(
            "SELECT input_file_id, populated, cancelling_at FROM batches WHERE id = ?", (batch_id,)
        ).fetchone()
        if row is None or row["populated"]:
            return
        now = time.time()
        cancel = canceled or row["cancelling_at"] is not None
        state = "canceled" if cancel else "pending"
        conn.execute(
            "INSERT INTO requests (id, batch_id, line_number, custom_id, method, url, body, model, body_bytes, "
            "state, canceled_at) SELECT uuid4(), ?, line_number, custom_id, method, url, body, model, body_bytes, "
            "?, ? FROM templates WHERE file_id = ? ORDER BY line_number",
            (batch_id, state, now if cancel else None, row["input_file_id"]),
        )
        if cancel:
            conn.execute("UPDATE batches SET populated = 1 WHERE id = ?", (batch_id,))
        else:
            conn.execute("UPDATE batches SET populated = 1, in_progress_at = ? WHERE id = ?", (int(now), batch_id))

    def cancel_in(self, conn: sqlite3.Connection, batch_id: str, now: float) -> dict | None:
        """Cancel a batch inside the caller's write transaction. Returns the request that still
        completes late (fault ``late_line_after_cancel``; run it with ``complete_late``) or None."""
        row = conn.execute("SELECT populated FROM batches WHERE id = ?", (batch_id,)).fetchone()
        if row is not None and not row["populated"]:
            self.populate_in(conn, batch_id, canceled=True)
        late = None
        if self.faults.get("late_line_after_cancel"):
            late = conn.execute(
                "SELECT seq, id, batch_id, custom_id, url, body, model, attempts FROM requests WHERE batch_id = ? "
                "AND state IN ('in_progress', 'pending') ORDER BY state = 'pending', seq LIMIT 1",
                (batch_id,),
            ).fetchone()
        conn.execute(
            "UPDATE requests SET state = 'canceled', canceled_at = ? WHERE batch_id = ? AND state IN ('pending', 'in_progress')",
            (now, batch_id),
        )
        conn.execute(
            "UPDATE batches SET cancelling_at = ?, cancelled_at = ? WHERE id = ?", (int(now), int(now), batch_id)
        )
        return dict(late) if late is not None else None

    def requeue_in(self, conn: sqlite3.Connection, batch_id: str, request_ids: list | None = None) -> int:
        """Put the failed or cancelled requests of a batch (all, or those named) back to pending,
        inside the caller's write transaction; returns how many."""
        if request_ids is None:
            return conn.execute(REQUEUE_SQL, (batch_id,)).rowcount
        return sum(conn.execute(REQUEUE_SQL + " AND id = ?", (batch_id, rid)).rowcount for rid in request_ids)

    def reopen_in(self, conn: sqlite3.Connection, batch_id: str) -> None:
        """After a requeue: the batch is in progress again (no cancel, no end)."""
        conn.execute(
            "UPDATE batches SET cancelling_at = NULL, cancelled_at = NULL, finalizing_at = NULL, "
            "finalizing_ts = NULL, completed_at = NULL, failed_at = NULL, "
            "in_progress_at = COALESCE(in_progress_at, ?) WHERE id = ?",
            (int(time.time()), batch_id),
        )

    def _maybe_finalize(self, batch_id: str) -> None:
        with self.store.read() as conn:
            open_row = conn.execute(
                "SELECT 1 FROM requests WHERE batch_id = ? AND state IN ('pending', 'in_progress') LIMIT 1", (batch_id,)
            ).fetchone()
        if open_row is not None:
            return
        with self.store.write() as conn:
            row = conn.execute("SELECT * FROM batches WHERE id = ?", (batch_id,)).fetchone()
            if (
                row is None
                or not row["populated"]
                or row["cancelling_at"] is not None
                or row["completed_at"] is not None
                or row["failed_at"] is not None
            ):
                return
            counts = request_counts(conn, batch_id)
            if counts["pending"] or counts["in_progress"]:
                return
            now = time.time()
            if counts["failed"] >= row["total"]:
                conn.execute("UPDATE batches SET failed_at = ? WHERE id = ?", (int(now), batch_id))
                return
            if row["finalizing_ts"] is None:
                conn.execute(
                    "UPDATE batches SET finalizing_at = ?, finalizing_ts = ? WHERE id = ?", (int(now), now, batch_id)
                )
                return
            if now < row["finalizing_ts"] + self.cfg.finalizing_delay:
                return
            conn.execute("UPDATE batches SET completed_at = ? WHERE id = ?", (int(now), batch_id))

    # workers -----------------------------------------------------------------------
    def _chunk_size(self) -> int:
        if self.upstream is not None or self.cfg.latency > 0 or self.cfg.latency_jitter > 0:
            return 1
        return 256

    def _claim(self, limit: int) -> list:
        with self.store.write() as conn:
            rows = conn.execute(
                "SELECT seq, id, batch_id, custom_id, url, body, model, attempts FROM requests "
                "WHERE state = 'pending' ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
            if rows:
                conn.executemany(
                    "UPDATE requests SET state = 'in_progress', attempts = attempts + 1 WHERE seq = ?",
                    [(r["seq"],) for r in rows],
                )
        return [dict(r, attempts=r["attempts"] + 1) for r in rows]

    def _worker(self) -> None:
        chunk = self._chunk_size()
        while not self._stop.is_set():
            if self.faults.requests_paused():  # (fault pause_requests: nothing starts meanwhile)
                self._stop.wait(0.05)
                continue
            try:
                rows = self._claim(chunk)
            except sqlite3.Error:
                traceback.print_exc()
                self._stop.wait(0.2)
                continue
            if not rows:
                with self._work:
                    self._work.wait(0.25)
                continue
            results = []
            for row in rows:
                if self._stop.is_set():
                    break
                result = self.execute(row)
                if result is not None:
                    results.append(result)
            if results:
                try:
                    self.finish(results)
                except sqlite3.Error:
                    traceback.print_exc()
            self._tick.set()

    def _latency_for(self, request_id: str) -> float:
        lat = self.cfg.latency
        if self.cfg.latency_jitter > 0:
            draw = int(hashlib.sha256(("jitter:" + request_id).encode()).hexdigest()[:8], 16) / float(1 << 32)
            lat += self.cfg.latency_jitter * draw
        return lat

    def execute(self, row: dict, apply_latency: bool = True, inject: bool = True) -> dict | None:
        started = time.time()
        if apply_latency:
            lat = self._latency_for(row["id"])
            if lat > 0 and self._stop.wait(lat):
                return None
        base = {"seq": row["seq"], "attempts": row["attempts"], "id": row["id"], "custom_id": row["custom_id"]}
        fail_status = self.faults.request_failure(row["id"], row["custom_id"]) if inject else None
        if fail_status is not None:
            body = compact(
                {
                    "error": {
                        "message": f"Simulated upstream error (HTTP {fail_status})",
                        "type": "server_error" if fail_status >= 500 else "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                }
            )
            return dict(base, state="failed", error=http_failure(fail_status, body))
        if self.upstream is not None:
            status, text, pt, ct, rt, failure = self.upstream(row["url"], row["body"], row["model"])
            if failure is not None:
                return dict(base, state="failed", error=failure)
        else:
            bad = self.faults.take_bad_answer(row["custom_id"]) if inject else None
            status, text, pt, ct, rt = self.builtin(row["url"], row["body"], row["model"], bad)
            if status >= 400:
                return dict(
                    base,
                    state="failed",
                    error=failure_reason("NonRetriableHttpStatus", {"status": status, "body": text}),
                )
        return dict(
            base,
            state="completed",
            status_code=status,
            response=text,
            prompt_tokens=pt,
            completion_tokens=ct,
            reasoning_tokens=rt,
            duration_ms=(time.time() - started) * 1000.0,
        )

    def finish(self, results: list, from_state: str = "in_progress") -> int:
        done = []
        failed = []
        with self.store.write() as conn:
            for r in results:
                seq, ts = self.store.next_done()
                if r["state"] == "completed":
                    size = len(output_line(r["id"], r["custom_id"], r["status_code"], r["response"]).encode()) + 1
                    done.append(
                        (
                            r["status_code"],
                            r["response"],
                            r["prompt_tokens"],
                            r["completion_tokens"],
                            r["reasoning_tokens"],
                            r["duration_ms"],
                            ts,
                            seq,
                            size,
                            r["seq"],
                            from_state,
                            r["attempts"],
                        )
                    )
                else:
                    size = len(error_line(r["id"], r["custom_id"], r["error"]).encode()) + 1
                    failed.append((r["error"], ts, seq, size, r["seq"], from_state, r["attempts"]))
            cur = conn.executemany(
                "UPDATE requests SET state = 'completed', status_code = ?, response = ?, prompt_tokens = ?, "
                "completion_tokens = ?, reasoning_tokens = ?, duration_ms = ?, completed_at = ?, done_seq = ?, out_bytes = ? "
                "WHERE seq = ? AND state = ? AND attempts = ?",
                done,
            )
            changed = cur.rowcount if done else 0
            cur = conn.executemany(
                "UPDATE requests SET state = 'failed', error = ?, failed_at = ?, done_seq = ?, out_bytes = ? "
                "WHERE seq = ? AND state = ? AND attempts = ?",
                failed,
            )
            changed += cur.rowcount if failed else 0
        return changed

    def complete_late(self, row: dict, delay: float) -> None:
        """Finish one request after its batch was cancelled (a late completion)."""

        def run() -> None:
            if self._stop.wait(delay):
                return
            result = self.execute(row, apply_latency=False, inject=False)
            if result is None:
                return
            try:
                self.finish([result], from_state="canceled")
            except sqlite3.Error:
                traceback.print_exc()

        threading.Thread(target=run, name="sandbox-late-completion", daemon=True).start()
