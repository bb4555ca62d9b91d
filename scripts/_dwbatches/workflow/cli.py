"""The command line of a script, from its options declaration (``optionspec``): the flags on
its parser, the options parsed and checked, one workflow function called with them (and the
connection, ``optiongroups.Connection``), its Outcome printed. The workflow never sees an
``argparse`` namespace.

    def main(argv=None):
        parser = output.make_parser(__doc__, network=True, script=__file__)
        return cli.run(parser, PollOptions, argv, poll)
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

from ..core import output
from ..core.optionspec import add_arguments, check, from_args
from ..core.output import Outcome
from .common import Connection


def run(parser: Any, options: Any, argv: Optional[Sequence[str]], work: Callable[[Any, Connection], Outcome]) -> int:
    """Parse ``argv`` with the flags of the class ``options`` on ``parser`` (made by
    ``output.make_parser``, which holds the connection and view flags), then, as the run's body
    (errors become the error document): check the options and the connection, call
    ``work(options, connection)`` and print its Outcome."""
    add_arguments(options, parser)
    args = output.parse_args(parser, argv)
    opts = from_args(options, args)
    conn = from_args(Connection, args) if hasattr(args, "sandbox") else Connection()

    def body() -> int:
        check(conn)
        check(opts)
        return output.finish(work(opts, conn))

    return output.run(body)
