"""What the commands do: one function per command, with explicit parameters, each returning an
``output.Outcome`` (the JSON report and the exit code).

The scripts in ``scripts/`` parse their arguments, call one of these and print the outcome;
nothing here reads ``argparse`` namespaces. Modules:

- ``common``: the connection (``Connection``) and what a command works on (a job or ids);
- ``submitting``: ``submit`` (submit.py), ``submit_or_resume``, ``dry_run``, ``job_report``;
- ``checking``: ``check`` (poll.py), ``check_once`` and ``wait_until_done`` (also run_batch.py);
- ``fetching``: ``fetch_job`` and ``fetch_batches`` (fetch_results.py), ``OutputOptions``;
- ``retrying``: ``retry`` (retry_failed.py);
- ``cancelling``: ``cancel`` (cancel_batch.py);
- ``running``: ``run`` (run_batch.py);
- ``reports``: what each command prints, declared (its --help shows it; imported here, so that
  every script that uses a command has its report declared).

The `next` commands they put in reports are built in ``commands``.
"""

from . import reports  # noqa: F401,E402  (declares each command's report)
