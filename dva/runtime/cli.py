"""The one command-line front end under every `dva` subcommand and `jobs/*.py`: argument parsing (`--config
NAME|YAML` and `key=value` overrides for the commands that have a config), the error format, redaction, exit codes
and how the process ends.

Exit codes (README, "Exit codes"):

    0  finished. A job whose only failures are inputs it recorded as failed in its manifest also finishes with 0:
       rerunning the whole job (a RayJob's retry) would not mend a bad input, and the rows say which failed.
    1  the job ran but nothing came of it: every input it tried failed (`JobSummary.exit_code`), `dva report
       --check` found a page that references missing files, or an unexpected error (with its traceback).
    2  the command stopped on an error it names, before or instead of its work: a bad command line, an unknown or
       invalid config key, missing weights or inputs, an unreachable output (any `DvaError` the command raises).
       Printed as one line on stderr, `dva NAME: error: MESSAGE`, with credentials redacted.
    3  `dva check` / `--dry-run`: the config is valid but a check failed (each failure is listed).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from typing import Callable, NoReturn, Optional, Sequence

from dva.errors import DvaError
from dva.storage import shown

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CHECK_FAILED = 3


class UsageError(DvaError):
    """The command line itself is wrong (an unknown option, a missing argument)."""


class _Parser(argparse.ArgumentParser):
    """argparse with its errors raised, so they print and exit like every other error of the command."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (usage: {self.format_usage().strip().removeprefix('usage: ')})")


def command_parser(prog: str, description: str, *, config: Optional[str] = None, group: str = "",
                   example: str = "") -> argparse.ArgumentParser:
    """The parser of the command `prog`; with `config`, also the config arguments (`add_config_arguments`).
    Commands with arguments of their own add them to it (positional ones before the config arguments)."""
    parser = _Parser(prog=prog, description=description)
    if config is not None:
        add_config_arguments(parser, config, group, example)
    return parser


def add_config_arguments(parser: argparse.ArgumentParser, config: str, group: str, example: str = "") -> None:
    """`--config NAME|YAML` (default: preset `config` in `configs/<group>/`) and `key=value` overrides: the
    `args.config` and `args.overrides` of every command that has a config."""
    parser.add_argument("--config", default=config, metavar="NAME|YAML",
                        help=f"preset in configs/{group}/ or a YAML path (default: {config})")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides" + (f", e.g. {example}" if example else ""))


def error_line(prog: str, err: BaseException | str, argv: Sequence[str] = ()) -> str:
    """The one line a failed command prints on stderr: `dva NAME: error: MESSAGE`, with credentials redacted:
    those `redact` finds, and the user-info of every URI on the command line `argv` wherever the message repeats
    it (a library may quote `key:secret@bucket` without the scheme), and control and bidirectional characters
    escaped (`dva.storage.shown`)."""
    text = " ".join(line.strip() for line in str(err).split("\n") if line.strip())  # one line, always
    return f"{prog}: error: {shown(text, argv)}"


def run_command(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]],
                command: Callable[[argparse.Namespace], Optional[int]], *, intermixed: bool = False) -> int:
    """Parse `argv` with `parser`, run `command(args)` and return its exit code (None is 0), or EXIT_USAGE after
    printing the error line when parsing or the command raises a `DvaError`. `--help` prints and returns 0.

    A Ray that the command started is shut down before returning (one that was running before, such as a test's,
    is left alone), and the output is flushed: what the command printed is out before the process ends."""
    ray_was_running = _ray_running()
    try:
        try:
            args = parser.parse_intermixed_args(argv) if intermixed else parser.parse_args(argv)
        except SystemExit as stop:  # --help has been printed
            return EXIT_OK if not stop.code else EXIT_USAGE
        logging.basicConfig(level=logging.INFO, format="[dva] %(message)s")
        code = command(args)
        return EXIT_OK if code is None else int(code)
    except DvaError as err:
        print(error_line(parser.prog, err, sys.argv[1:] if argv is None else argv), file=sys.stderr)
        return EXIT_USAGE
    finally:
        if not ray_was_running:
            shutdown_ray()
        flush_output()


def _ray_running() -> bool:
    ray = sys.modules.get("ray")  # a command that never imported Ray started none
    return ray is not None and ray.is_initialized()


def shutdown_ray() -> None:
    """Disconnect from Ray (stopping the local one this process started), if connected."""
    if _ray_running():
        sys.modules["ray"].shutdown()


def flush_output() -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()


def exit_process(main: Callable[[], int]) -> NoReturn:
    """Run `main()` as the whole process (the `dva` console script, `python -m dva.cli`, `jobs/*.py`) and end the
    process with its exit code through `os._exit`, skipping the interpreter's native teardown.

    Why: by the time a command returns, everything it made is committed (every output and manifest row is written
    atomically before it counts) and Ray is shut down. What remains is the interpreter's exit, which runs C++
    static destructors while threads of native libraries (Ray's core worker, ONNX Runtime, torch, fsspec's IO loop)
    may still be alive; a mutex destroyed under such a thread has aborted a finished job (glibc `tpp.c`
    `__pthread_tpp_change_priority` assertion, SIGABRT), which a RayJob reports as a failure and retries. Skipping
    that teardown, after flushing, is what Ray does for its own worker processes. Calls of a command's
    `main(argv)` in-process (tests) never come here: they just return the code.
    """
    try:
        code = main()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else EXIT_OK if stop.code is None else EXIT_FAILED
    except KeyboardInterrupt:
        code = 130
    except BaseException:  # noqa: BLE001 - a bug: its traceback (redacted), then the code Python would give
        print("".join(shown(line) + "\n" for line in traceback.format_exc().rstrip("\n").split("\n")), file=sys.stderr, end="")
        code = EXIT_FAILED
    shutdown_ray()
    flush_output()
    os._exit(code)
