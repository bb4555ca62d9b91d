"""Helper processes for the validator: each is ``python -I -S`` running ``_worker_main``,
fed (task number, task) frames on stdin by a thread of this process, and answering with
(task number, result) frames on stdout. Tasks are pieces to check (``piececheck``) or groups
of duplicate candidates to confirm (``dupconfirm``). A helper that cannot start, or fails,
leaves its tasks to this process. Standard library only.
"""

from __future__ import annotations

import os
import pickle
import sys
import threading
from typing import Any, Callable, List, Optional

from .. import SCRIPTS_DIR
from .dupconfirm import confirm_groups
from .piececheck import check_piece


def cpus() -> int:
    count = getattr(os, "process_cpu_count", None)  # Python 3.13
    if count is not None:
        return count() or 1
    try:
        return len(os.sched_getaffinity(0))  # (not on macOS)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _write_frame(fh: Any, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    fh.write(len(data).to_bytes(8, "little"))
    fh.write(data)
    fh.flush()


def _read_frame(fh: Any) -> Any:
    head = fh.read(8)
    if len(head) < 8:
        raise EOFError
    size = int.from_bytes(head, "little")
    data = fh.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)


def _do(path: str, task: tuple) -> Any:
    """Run a task: ("piece", arguments of check_piece after path) or ("confirm", arguments of
    confirm_groups after path)."""
    if task[0] == "piece":
        return check_piece(path, *task[1:])
    return confirm_groups(path, *task[1:])


def _worker_main() -> None:
    """A helper process: the file's path, then (task number, task) frames on stdin; a (task
    number, result) frame on stdout for each; until stdin ends."""
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    try:
        path = _read_frame(inp)
        while True:
            try:
                number, task = _read_frame(inp)
            except EOFError:
                return
            _write_frame(out, (number, _do(path, task)))
    except (KeyboardInterrupt, BrokenPipeError):
        pass


_BOOT = "import sys; sys.path.insert(0, sys.argv[1]); from _dwbatches.validation.workerpool import _worker_main; _worker_main()"


class Helper:
    """One helper process, fed tasks by a thread of this process."""

    def __init__(self, path: str):
        import subprocess

        self.dead = False
        # -I: no environment variables, user site or current directory on the path; -S: no site
        # packages (the validator needs the standard library only)
        cmd = [sys.executable, "-I", "-S"] + (["-B"] if sys.flags.dont_write_bytecode else [])
        self.proc = subprocess.Popen(
            cmd + ["-c", _BOOT, SCRIPTS_DIR], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        try:
            _write_frame(self.proc.stdin, path)
        except (OSError, ValueError):
            self.stop(kill=True)
            raise

    def serve(self, tasks: List[tuple], queue: _Queue, depth: int) -> None:
        """Send tasks (up to depth at a time) and hand back the results, until none is left.
        If the process fails, its tasks go back to the queue (this process takes them) and it
        is used no more."""
        outstanding: List[int] = []
        if self.dead:
            return
        try:
            while True:
                while len(outstanding) < depth:
                    i = queue.take()
                    if i is None:
                        break
                    outstanding.append(i)
                    _write_frame(self.proc.stdin, (i, tasks[i]))
                if not outstanding:
                    return
                number, res = _read_frame(self.proc.stdout)
                if number != outstanding[0]:
                    raise EOFError
                outstanding.pop(0)
                queue.done(number, res)
        except BaseException:  # noqa: B036 - any failure: the tasks are done here instead
            self.dead = True
            queue.give_back(outstanding)
            self.stop(kill=True)

    def stop(self, kill: bool = False) -> None:
        proc = self.proc
        for stream in (proc.stdin, proc.stdout):
            if stream is None:
                continue
            try:
                stream.close()
            except OSError:
                pass
        try:
            if kill:
                proc.kill()
            proc.wait(timeout=5)
        except Exception:  # noqa: BLE001 - a helper that will not end is left to the system
            pass


class _Queue:
    """The tasks still to run and the results, shared by this process and the helper threads."""

    def __init__(self, count: int):

        self.cond = threading.Condition()
        self.pending = list(range(count - 1, -1, -1))  # popped from the end: in file order
        self.results: List[Any] = [None] * count

    def take(self) -> Optional[int]:
        with self.cond:
            return self.pending.pop() if self.pending else None

    def done(self, i: int, res: Any) -> None:
        with self.cond:
            self.results[i] = res
            self.cond.notify_all()

    def give_back(self, numbers: List[int]) -> None:
        with self.cond:
            self.pending.extend(reversed(numbers))
            self.cond.notify_all()

    def wait_for(self, i: int) -> None:
        with self.cond:
            while self.results[i] is None and not self.pending:
                self.cond.wait(0.5)


def run_tasks(
    path: str,
    tasks: List[Any],
    helpers: List[Helper],
    deliver: Callable[[int, Any], None],
    depth: int,
    keep: bool = True,
) -> List[Any]:
    """Run ``tasks`` (see _do) here and in the helpers; call deliver(i, result) in task order;
    return the results (without ``keep``, each task and result is let go once delivered)."""

    queue = _Queue(len(tasks))
    threads = [threading.Thread(target=h.serve, args=(tasks, queue, depth), daemon=True) for h in helpers]
    for t in threads:
        t.start()
    results = queue.results
    given = 0
    while given < len(tasks):
        while given < len(tasks) and results[given] is not None:
            deliver(given, results[given])
            if not keep:
                results[given] = tasks[given] = False  # (not None: delivered)
            given += 1
        if given == len(tasks):
            break
        i = queue.take()
        if i is not None:
            queue.done(i, _do(path, tasks[i]))
        else:
            queue.wait_for(given)
    for t in threads:
        t.join()
    return results


def start_helpers(path: str, count: int) -> List[Helper]:
    if count < 1 or getattr(sys, "frozen", False) or not sys.executable:
        return []
    helpers = []
    for _ in range(count):
        try:
            helpers.append(Helper(path))
        except (OSError, ValueError):
            break  # no processes here: check with what there is
    return helpers
