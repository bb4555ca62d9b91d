"""Paying twice by racing the server or another submit, driven through the scripts over real sockets.

- A create the server is still working on (``hold_create``: the batch is stored only when
  the hold ends) when the submit is killed: the rerun looks for it as long as the server may
  still be working on it (``lookup.create_in_progress()``, with back-off) and creates nothing.
- A create that outlasts even that look (the rerun created the batch again): the second
  batch for the same intent is found by the next poll, recorded on the chunk in job.json
  (``duplicates``) and cancelled while it runs; one that already finished is left alone.
- Two submits of one file into two job directories at the same moment: exactly one job
  creates batches, the other is refused (exit 2, nothing sent, naming the first job
  directory); a claim left by a submit killed with SIGKILL blocks nobody. Run on POSIX
  (flock) and under the Windows simulation (the exclusive lock file, taken over when its
  holder's pid is gone).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
from helpers import is_error, job_chunks, job_state, run, shim_env, wait_until, write_input
from sandbox_helper import SCRIPTS

SLOW = pytest.mark.slow  # real holds and kills of a few seconds each: in make test, not the inner loop
HOLD = 3.0  # seconds the server works on the first create before the batch exists


def posts(sb, what="batches"):
    return sb.stats()["requests"].get(f"POST /v1/{what}", 0)


def start(cmd_args, cwd, env):
    cmd = [sys.executable, str(SCRIPTS / cmd_args[0]), *map(str, cmd_args[1:])]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_when(proc, pred, timeout=30.0):
    assert wait_until(lambda: pred() or proc.poll() is not None, timeout), "the moment to kill never came"
    assert proc.poll() is None, proc.communicate()
    proc.kill()  # SIGKILL on POSIX
    proc.communicate()


def scaled(env, scale):
    return dict(env, DOUBLEWORD_BATCHES_TIME_SCALE=str(scale))


def held(sb) -> bool:
    """The server has read the create whole and holds it (the fault's count is used up)."""
    return sb.faults()["_remaining"]["hold_create_times"] == 0


# -- a create slower than the look-up -----------------------------------------------------------


@SLOW
def test_killed_while_the_server_still_works_on_the_create_the_rerun_waits_for_it(sandbox_factory, tmp_path):
    sb = sandbox_factory("--faults", json.dumps({"hold_create": {"seconds": HOLD, "times": 1}}))
    write_input(tmp_path / "in.jsonl", 6)
    first = start(["submit.py", "in.jsonl"], tmp_path, sb.env())
    kill_when(first, lambda: held(sb))  # the create has reached the server, which works on it
    assert sb.stats()["batches"] == 0  # nothing to be found yet

    started = time.monotonic()
    rerun = run("submit.py", "in.jsonl", env=scaled(sb.env(), 0.2), cwd=tmp_path)
    took = time.monotonic() - started
    assert rerun.returncode == 0, rerun.stderr
    doc = json.loads(rerun.stdout)
    assert "no batch yet; the create sent" in rerun.stderr and "may still be in progress" in rerun.stderr
    assert "chunk 1/1: found the batch created by an earlier run" in rerun.stderr
    assert took < HOLD + 15  # it waited for the create, not for the whole bound (160 s scaled: 32 s)
    assert doc["this_run"] == {"uploaded": 0, "created": 0, "found": 1}
    assert posts(sb) == 1 and sb.stats()["batches"] == 1  # (the held create is the one found)
    (chunk,) = job_chunks(job_state(tmp_path / "in.dwjob"))
    assert chunk["batch_id"] == doc["batches"][0]["batch_id"] and chunk["create_posts"] == 1
    assert "duplicates" not in chunk and "watch_duplicates_until" not in chunk


@SLOW
@pytest.mark.parametrize("when", ["running", "finished"])
def test_a_second_batch_made_by_a_create_that_outlasted_the_look_up_is_recorded_and_cancelled(
    sandbox_factory, tmp_path, when
):
    # one request at a time, 0.5 s each: a second batch found at once is still running
    latency = "0.5" if when == "running" else "0"
    sb = sandbox_factory(
        "--latency",
        latency,
        "--concurrency",
        "1",
        "--faults",
        json.dumps({"hold_create": {"seconds": HOLD, "times": 1}}),
    )
    write_input(tmp_path / "in.jsonl", 4)
    first = start(["submit.py", "in.jsonl"], tmp_path, sb.env())
    kill_when(first, lambda: held(sb))
    # a look-up far shorter than the hold (the bound scaled down to 0.8 s): the rerun creates again
    rerun = run("submit.py", "in.jsonl", env=scaled(sb.env(), 0.005), cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert "may still be in progress" in rerun.stderr and "created batch" in rerun.stderr
    ours = json.loads(rerun.stdout)["batches"][0]["batch_id"]
    (chunk,) = job_chunks(job_state(tmp_path / "in.dwjob"))
    assert chunk["create_posts"] == 2 and chunk["watch_duplicates_until"] > time.time()

    assert wait_until(lambda: sb.stats()["batches"] == 2, timeout=HOLD + 5)  # the first create took effect
    (late,) = [b["id"] for b in sb.get_json("batches")["data"] if b["id"] != ours]
    if when == "finished":
        sb.wait_batch(late)
    else:
        sb.set_faults({"pause_requests": True})  # still running when the poll finds it
    polled = run("poll.py", "--job", "in.dwjob", env=sb.env(), cwd=tmp_path)
    assert polled.returncode == 0, polled.stderr
    report = json.loads(polled.stdout)
    assert report["duplicates"] == [{"batch_id": late, "duplicate_of": ours, "round": 1, "chunk": 1}]
    assert f"batch {late} is a second batch for the requests of batch {ours}" in polled.stderr
    (chunk,) = job_chunks(job_state(tmp_path / "in.dwjob"))
    assert chunk["batch_id"] == ours and chunk["duplicates"] == [late]
    if when == "running":
        assert "; cancelling it" in polled.stderr and f"batch {late}: cancelled" in polled.stderr
        assert sb.batch(late)["status"] in ("cancelling", "cancelled")
        assert sb.batch(late)["request_counts"]["completed"] < 4  # stopped before it ran everything
    else:
        assert "left alone: it is completed" in polled.stderr
        assert sb.batch(late)["status"] == "completed"  # never relabelled cancelled
    assert sb.stats()["requests"].get("POST /v1/batches/{id}/cancel", 0) == (1 if when == "running" else 0)

    again = run("poll.py", "--job", "in.dwjob", env=sb.env(), cwd=tmp_path)  # recorded once, reported again
    assert json.loads(again.stdout)["duplicates"] == report["duplicates"]
    assert "is a second batch" not in again.stderr
    assert job_chunks(job_state(tmp_path / "in.dwjob"))[0]["duplicates"] == [late]
    assert sb.batch(ours)["status"] in ("validating", "in_progress", "finalizing", "completed")

    # the fetch merges what the second batch ran (one answer a request) and counts what it billed
    sb.clear_faults()
    sb.wait_batch(ours)
    sb.wait_batch(late)
    fetched = run("fetch_results.py", "--job", "in.dwjob", "--format", "simple", env=sb.env(), cwd=tmp_path)
    assert fetched.returncode == 0, fetched.stderr
    doc = json.loads(fetched.stdout)
    assert doc["succeeded"] == 4 and len(doc["batches"]) == 1 and doc["status"] == "completed"
    ran_twice = sb.batch(late)["request_counts"]["completed"]
    assert doc["usage"]["requests"] == 4 + ran_twice  # every answer received, both batches'
    billed = sum(Decimal(sb.get_json(f"batches/{b}/analytics").get("total_cost", "0")) for b in (ours, late))
    assert abs(Decimal(doc["cost"]["billed_usd"]) - billed) <= billed / 20  # as shown, rounded


# -- two submits of one file at once ------------------------------------------------------------

PLATFORMS = ["posix", "winshim"]


def platform_env(sb, platform):
    return sb.env() if platform == "posix" else shim_env(sb.env())


@SLOW
@pytest.mark.parametrize("platform", PLATFORMS)
def test_two_submits_of_one_file_into_two_job_dirs_at_once_make_one_job(sandbox, tmp_path, platform):
    # uploads answered late: without the claim both submits would find no earlier batch and go on
    sandbox.set_faults({"extra_latency": 0.5, "extra_latency_paths": ["/v1/files"]})
    write_input(tmp_path / "in.jsonl", 6)
    env = platform_env(sandbox, platform)
    procs = {
        name: start(["submit.py", "in.jsonl", "--job", f"{name}.dwjob", "--max-requests", 3], tmp_path, env)
        for name in ("a", "b")
    }
    results = {name: (p.wait(60), *p.communicate()) for name, p in procs.items()}
    codes = sorted(code for code, _, _ in results.values())
    assert codes == [0, 2], results
    (winner,) = [n for n, r in results.items() if r[0] == 0]
    (loser,) = [n for n, r in results.items() if r[0] == 2]
    _, out, err = results[loser]
    assert is_error(out) and f"{winner}.dwjob" in err and "a second job would pay for every request again" in err
    assert not (tmp_path / f"{loser}.dwjob").exists()  # refused before anything was made or sent
    doc = json.loads(results[winner][1])
    assert len(doc["batches"]) == 2
    stats = sandbox.stats()
    assert stats["batches"] == 2 and posts(sandbox) == 2 and posts(sandbox, "files") == 2  # one per chunk

    # and later, when the first has finished: refused by the server-side look, naming it too
    late = run("submit.py", "in.jsonl", "--job", f"{loser}.dwjob", "--max-requests", 3, env=sandbox.env(), cwd=tmp_path)
    assert late.returncode == 2 and f"job directory {winner}.dwjob" in late.stderr, late.stderr
    assert sandbox.stats()["batches"] == 2


@SLOW
@pytest.mark.parametrize("platform", PLATFORMS)
def test_a_submit_killed_while_it_holds_the_claim_blocks_nobody(sandbox, tmp_path, platform):
    sandbox.set_faults({"slow_upload_read": {"after_bytes": 300, "pause": 3}})
    write_input(tmp_path / "in.jsonl", 6)
    env = platform_env(sandbox, platform)
    claims = tmp_path / ".dwb-claims"
    first = start(["submit.py", "in.jsonl", "--job", "a.dwjob"], tmp_path, env)
    kill_when(first, lambda: posts(sandbox, "files") >= 1)  # uploading: the claim is held
    assert list(claims.glob("*.json")) and json.loads(next(claims.glob("*.json")).read_text())["job"].endswith(
        "a.dwjob"
    )

    other = run("submit.py", "in.jsonl", "--job", "b.dwjob", env=env, cwd=tmp_path, subprocess=True)
    assert other.returncode == 0, other.stderr  # the dead holder's claim was no obstacle
    assert json.loads(next(claims.glob("*.json")).read_text())["job"].endswith("b.dwjob")

    # the killed job had created nothing: its rerun finds the file submitted by the other one
    resumed = run("submit.py", "in.jsonl", "--job", "a.dwjob", env=env, cwd=tmp_path, subprocess=True)
    assert resumed.returncode == 2 and "job directory b.dwjob" in resumed.stderr, resumed.stderr
    assert sandbox.stats()["batches"] == 1 and posts(sandbox) == 1
    state = job_state(tmp_path / "a.dwjob")
    assert not any(c["batch_id"] or c.get("create_posts") for c in job_chunks(state))


@pytest.mark.slow
def test_the_same_job_submitted_twice_at_once_waits_for_its_claim_and_creates_once(sandbox, tmp_path):
    sandbox.set_faults({"extra_latency": 0.3, "extra_latency_paths": ["/v1/files"]})
    write_input(tmp_path / "in.jsonl", 4)
    env = scaled(sandbox.env(), 1)  # the wait for a busy job is 10 s unscaled: both finish
    procs = [start(["submit.py", "in.jsonl"], tmp_path, env) for _ in range(2)]
    results = [(p.wait(60), *p.communicate()) for p in procs]
    assert [r[0] for r in results] == [0, 0], results
    docs = [json.loads(r[1]) for r in results]
    ids = [[b["batch_id"] for b in d["batches"]] for d in docs]
    assert ids[0] == ids[1] and len(ids[0]) == 1
    assert sorted(d["resumed"] for d in docs) == [False, True]
    assert sandbox.stats()["batches"] == 1 and posts(sandbox) == 1


def test_a_folder_where_no_claim_can_be_written_is_said_and_the_submit_goes_on(sandbox, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_input(data / "in.jsonl", 2)
    (data / ".dwb-claims").write_text("not a folder")
    proc = run("submit.py", "data/in.jsonl", "--job", "in.dwjob", env=sandbox.env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "cannot claim data/in.jsonl for this submit" in proc.stderr
    assert sandbox.stats()["batches"] == 1
    assert Path(data / ".dwb-claims").read_text() == "not a folder"


def test_a_second_batch_whose_cancel_fails_stays_watched_and_the_next_poll_cancels_it(sandbox_factory, tmp_path):
    sb = sandbox_factory("--latency", "0.4", "--concurrency", "1")
    write_input(tmp_path / "in.jsonl", 4)
    done = run("submit.py", "in.jsonl", env=sb.env(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    sb.set_faults({"pause_requests": True})  # the batches run, and neither ends before the polls
    state = job_state(tmp_path / "in.dwjob")
    (chunk,) = job_chunks(state)
    # the server made a second batch for the chunk's intent (a create it finished late), and the
    # chunk was sent twice: watched until a check after its deadline (passed already here)
    late = sb.create_batch(chunk["file_id"], metadata={"dwb_intent": chunk["intent_id"], "dwb_job": state["job_id"]})
    late = late.json()["id"]
    chunk.update(create_posts=2, watch_duplicates_until=time.time() - 1)
    (tmp_path / "in.dwjob" / "job.json").write_text(json.dumps(state))

    sb.set_faults(
        {
            "pause_requests": True,
            "http": [
                {"method": "POST", "path": f"/v1/batches/{late}/cancel", "status": 503, "times": 5, "retry_after": 0}
            ],
        }
    )
    first = run("poll.py", "--job", "in.dwjob", env=sb.env(), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert f"batch {late} is a second batch for the requests of batch {chunk['batch_id']}" in first.stderr
    assert f"cancelling batch {late} failed" in first.stderr
    (chunk,) = job_chunks(job_state(tmp_path / "in.dwjob"))
    assert chunk["duplicates"] == [late] and chunk["watch_duplicates_until"]  # still watched: tried again
    assert sb.batch(late)["status"] in ("validating", "in_progress")

    sb.set_faults({"pause_requests": True})
    second = run("poll.py", "--job", "in.dwjob", env=sb.env(), cwd=tmp_path)
    assert f"batch {late}: cancelled" in second.stderr and "is a second batch" not in second.stderr
    assert sb.batch(late)["status"] in ("cancelling", "cancelled")
    (chunk,) = job_chunks(job_state(tmp_path / "in.dwjob"))
    assert chunk["duplicates"] == [late] and "watch_duplicates_until" not in chunk  # the watch is over
    assert json.loads(second.stdout)["duplicates"] == [
        {"batch_id": late, "duplicate_of": chunk["batch_id"], "round": 1, "chunk": 1}
    ]
    third = run("poll.py", "--job", "in.dwjob", env=sb.env(), cwd=tmp_path)  # nothing more is looked up
    assert "second batch" not in third.stderr
