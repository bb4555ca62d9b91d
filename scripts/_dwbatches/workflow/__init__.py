"""What the commands do: one function per command, with explicit parameters, each returning an
``output.Outcome`` (the JSON report and the exit code).

Each command declares its options once, as a dataclass whose fields are its flags
(``optionspec``; the groups several commands share are in ``core/optiongroups``). A script
parses its arguments with that declaration (``cli.run``), calls one of these functions and
prints the outcome; nothing here reads ``argparse`` namespaces. Modules:

- ``common``: the client for a connection, and what a command works on (a job or ids);
- ``submitting``: ``submit_command`` (submit.py), ``submit_or_resume``, ``dry_run``, ``job_report``;
- ``checking``: ``poll`` (poll.py), ``check_once`` and ``wait_until_done`` (also run_batch.py);
- ``fetching``: ``fetch_command`` (fetch_results.py), ``fetch_job``, ``fetch_batches``, ``OutputOptions``;
- ``retrying``: ``retry_command`` (retry_failed.py);
- ``cancelling``: ``cancel_command`` (cancel_batch.py);
- ``running``: ``run_command`` (run_batch.py);
- ``building``: ``build_command`` (create_batch_file.py); ``listing``: ``listing`` (list_batches.py),
  ``models_command`` (list_models.py); ``validating``: ``validate`` (validate_batch_file.py);
  ``setup``: ``check_setup`` (check_setup.py).
- ``narration``: what the engines report, said on stderr (every run is held in ``command``).
- ``reports``: what each command prints, declared (its --help shows it; imported here, so that
  every script that uses a command has its report declared).

The `next` commands they put in reports are serialised from those declarations
(``optionspec.to_argv``) and written by ``commands``.
"""

from ..core import output
from . import narration, reports  # noqa: F401  (reports: declares each command's report)

output.hold_runs_in(narration.command)
