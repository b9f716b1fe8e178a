"""The materializer process: ``python -m consumers.materializer`` (installed: ``xcombus materialize``).

Folds the XCom topic into the SQLite view until SIGTERM or SIGINT; then it finishes the
batch in hand, commits it and exits 0. Exit codes (xcombus.process): 0 stopped cleanly,
1 failed (the message says why), 2 bad configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from xcombus.process import configure_logging, exit_codes
from xcombus.services import materialize_until_stopped
from xcombus.settings import Settings


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, run the materializer until stopped; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m consumers.materializer",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--view", help="view file (default: XCOMBUS_VIEW_PATH or xcombus.db)")
    parser.add_argument("--topic", help="topic (default: XCOMBUS_TOPIC or xcombus.xcom)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    with exit_codes("xcombus materialize"):
        asyncio.run(materialize_until_stopped(Settings.from_env(view_path=args.view, topic=args.topic)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
