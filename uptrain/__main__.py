"""`python -m uptrain` and the `uptrain` console script.

The CLI is imported and built inside main(), so that Ctrl-C or SIGTERM while it is still importing
is one line too (uptrain.cli handles them from then on)."""

import signal
import sys


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        from uptrain.cli import main as cli_main

        cli_main()
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        sys.exit(130)


if __name__ == "__main__":
    main()
