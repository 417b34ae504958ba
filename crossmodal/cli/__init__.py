"""The ``crossmodal`` command: one subcommand per user task, one module per subcommand.

This package (``crossmodal/cli/``) is the application on top: the one place where the
model library, ``training`` and ``retrieval`` meet. The rest of ``crossmodal`` imports
neither of them. Each subcommand module declares ``register(subparsers)``, which adds
its parser and sets ``func`` to the function that runs it.
"""
from __future__ import annotations

import argparse
import sys

from . import demo, duplicates, encode, evaluate, index, info, search, serve, train, video
from .common import HelpFormatter

DESCRIPTION = """Search photos by what they show and captions by photo, with compact binary codes.

Start here (the bundled model, no training):
  crossmodal index build --images ~/Pictures --out idx/photos
  crossmodal search --index idx/photos --text "two dogs playing in the snow"
"""

#: in the order ``crossmodal --help`` lists them
COMMANDS = (train, encode, evaluate, demo, index, video, serve, search, duplicates, info)


def _version_text() -> str:
    """Versions from the installed distributions' metadata and the device from the driver:
    ``--version`` answers without importing torch or faiss."""
    import os
    from importlib.metadata import PackageNotFoundError, version

    def installed(*names: str) -> str:
        for name in names:
            try:
                return version(name)
            except PackageNotFoundError:
                continue
        return "not installed"

    driver = "/proc/driver/nvidia/version"
    device = ("cuda (an NVIDIA driver is loaded; used when this torch build supports CUDA)" if os.path.exists(driver)
              else "cpu (no NVIDIA driver)")
    return (f"crossmodal {installed('crossmodal')}\ntorch {installed('torch')}, faiss "
            f"{installed('faiss-cpu', 'faiss-gpu', 'faiss')}, python {sys.version.split()[0]}\ndevice: {device}")


class _VersionAction(argparse.Action):
    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(_version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crossmodal", description=DESCRIPTION,
                                     formatter_class=HelpFormatter,
                                     epilog="run 'crossmodal COMMAND --help' for a command's options and examples")
    parser.add_argument("--version", action=_VersionAction, help="versions of crossmodal, torch and faiss, and the "
                                                                 "device training would use")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output (results and errors still print)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. Errors a user can cause (``CrossmodalError``) print one line and
    exit 2; anything else is a bug and keeps its traceback."""
    from crossmodal.errors import CrossmodalError
    from crossmodal.progress import quiet, set_quiet

    args = build_parser().parse_args(argv)
    was_quiet = quiet()
    if args.quiet:
        set_quiet(True)  # for this command only: a caller in the same process keeps its own setting
    if quiet() or not sys.stderr.isatty():
        # datasets' own bars are frames of carriage returns in a log; the variable is read when
        # datasets is first imported, so a command that never reads a dataset never pays for it
        import os
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    try:
        from crossmodal.settings import check_environment

        check_environment()
        args.func(args)
    except CrossmodalError as e:
        print(f"crossmodal {args.command}: error: {e}", file=sys.stderr)
        return 2
    finally:
        set_quiet(was_quiet)
    return 0
