"""The ``crossmodal`` command: one subcommand per user task, one module per subcommand.

This package (``crossmodal/cli/``) is the application on top: the one place where the
model library, ``training`` and ``retrieval`` meet. The rest of ``crossmodal`` imports
neither of them. Each subcommand module declares ``register(subparsers)``, which adds
its parser and sets ``func`` to the function that runs it.
"""
from __future__ import annotations

import argparse
import sys

from . import demo, encode, evaluate, index, info, search, serve, train, video
from .common import HelpFormatter

#: in the order ``crossmodal --help`` lists them
COMMANDS = (train, encode, evaluate, demo, index, video, serve, search, info)


def _version_text() -> str:
    from importlib.metadata import PackageNotFoundError, version

    import faiss
    import torch

    try:
        ours = version("crossmodal")
    except PackageNotFoundError:
        ours = "unknown (not installed)"
    device = "cuda (" + torch.cuda.get_device_name(0) + ")" if torch.cuda.is_available() else "cpu"
    return (f"crossmodal {ours}\ntorch {torch.__version__}, faiss {faiss.__version__}, python "
            f"{sys.version.split()[0]}\ndevice: {device}")


class _VersionAction(argparse.Action):
    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(_version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crossmodal", description=__doc__.splitlines()[0],
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
    if args.quiet:
        set_quiet(True)
    if quiet() or not sys.stderr.isatty():
        from datasets.utils.logging import disable_progress_bar
        disable_progress_bar()  # datasets' own bars: frames of carriage returns in a log
    try:
        args.func(args)
    except CrossmodalError as e:
        print(f"crossmodal {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0
