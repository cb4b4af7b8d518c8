"""The `vidclf` command line: parse options, call one library function per command, turn errors into
one line and an exit code. One module per group of commands; each registers its commands on `app`.
"""

from vidclf.cli.common import app
from vidclf.cli import data, models, train, evaluate, predict, deploy  # noqa: E402,F401  (they register their commands)

__all__ = ["app"]
