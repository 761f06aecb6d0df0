"""``s2dc``: entry point, sub-command registry and error rendering.

Each sub-command module registers its parser and a ``run(args) -> int`` that builds a config and calls
the Python API with keyword arguments. Errors the user can fix (`S2DCError`) become one line on stderr
naming the file and the problem: exit 1 for bad data, 2 for a bad call (argparse's own errors are 2
too). ``--verbose`` adds the traceback and debug logging.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback

from S2DCCore import __version__
from S2DCCore.cli import data_commands, eval_commands, infer_commands, study_commands, train_commands

COMMAND_MODULES = (data_commands, train_commands, eval_commands, infer_commands, study_commands)


def build_parser() -> argparse.ArgumentParser:
    """The full ``s2dc`` parser with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="s2dc",
        description="Structure-aware self-supervised learning (S²DC, Alice) for 3D medical images.",
    )
    parser.add_argument("--version", action="version", version=f"s2dc {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``s2dc`` with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = getattr(args, "verbose", False)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s",
        stream=sys.stderr,
    )
    from S2DCCore.errors import S2DCError, find_user_error
    from S2DCCore.utils.disk import storage_error

    _exit_cleanly_on_sigterm()
    try:
        return int(args.run(args) or 0)
    except S2DCError as exc:
        if verbose:
            traceback.print_exc()
        print(f"s2dc {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"s2dc {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # anything else is our bug: still one line unless --verbose
        user_error = find_user_error(exc) or storage_error(exc)
        if user_error is not None:  # a data error raised inside a MONAI transform, or a full/read-only disk
            if verbose:
                traceback.print_exc()
            print(f"s2dc {args.command}: error: {user_error}", file=sys.stderr)
            return user_error.exit_code
        if verbose:
            traceback.print_exc()
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
        print(f"s2dc {args.command}: error: {type(exc).__name__}: {first} (rerun with --verbose for the traceback)",
              file=sys.stderr)
        return 1


def _exit_cleanly_on_sigterm() -> None:
    """SIGTERM (Slicer's Cancel, ``kill``, torchrun stopping a group) unwinds like an exception: temporary
    files are removed and the run folder's lock file too, before the exit (code 143). SIGKILL cannot be
    caught; what it leaves is cleaned by the next writer (`S2DCCore.utils.tempfiles`)."""
    import signal
    import threading

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, terminate)


if __name__ == "__main__":
    sys.exit(main())
