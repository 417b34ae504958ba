"""What every subcommand module shares: argument types, the help formatter, the way a
subcommand is registered, and the way a screening is reported."""
from __future__ import annotations

import argparse
from pathlib import Path


def count(minimum: int):
    """An argparse type: an integer >= ``minimum`` (a clear one-line error otherwise)."""
    def parse(s: str) -> int:
        try:
            value = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {s!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    parse.__name__ = f"integer >= {minimum}"
    return parse


def bits_list(s: str) -> tuple[int, ...]:
    """An argparse type: comma-separated code lengths."""
    try:
        return tuple(int(x) for x in s.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--bits must be comma-separated integers, got {s!r}") from None


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Examples keep their line breaks; every option shows its default (unless None/False)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (default is None or default is argparse.SUPPRESS or isinstance(default, bool) or default == ""
                or "(default" in text or not action.option_strings):
            return text
        if isinstance(default, (tuple, list)):  # code lengths: as the user types them
            return text + f" (default: {','.join(map(str, default))})"
        return text + " (default: %(default)s)"

    def _split_lines(self, text, width):
        """Wrap at spaces only: encoder names such as ``efficientnet-lite0+efficientnet-lite1``
        must stay whole to be copied from the help."""
        import textwrap

        return textwrap.wrap(self._whitespace_matcher.sub(" ", text).strip(), width, break_on_hyphens=False,
                             break_long_words=False)


def choices_help(notes: dict[str, str]) -> str:
    return "; ".join(f"{n}: {d}" for n, d in notes.items())


def add_command(sub, name: str, help: str, examples: str | None = None, **kw) -> argparse.ArgumentParser:
    """A subcommand parser with the shared formatter and its examples as the epilog;
    ``-q/--quiet`` works after the subcommand too."""
    p = sub.add_parser(name, help=help, description=kw.pop("description", help), formatter_class=HelpFormatter,
                       epilog=examples, **kw)
    p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="no progress output (results and errors still print)")
    return p


def model_arg(p: argparse.ArgumentParser) -> None:
    """``--model``, for commands that make codes without an index to name the model."""
    p.add_argument("--model", default="default",
                   help="a trained model folder, or 'default': the model shipped with crossmodal (trained on "
                        "Flickr8k; 'crossmodal info default' shows its card)")


def index_and_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", required=True, help="index folder")
    p.add_argument("--model", default=None, help="model folder (default: the model recorded in the index)")


def cache_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", default=None, help="feature cache (default: ~/.cache/crossmodal/features)")


def cache_dir(args) -> Path:
    from crossmodal.cache import default_cache_dir
    return Path(args.cache_dir) if args.cache_dir else default_cache_dir()


def print_screening(screening: dict) -> None:
    """One line per split that lost rows to screening."""
    for report in screening.values():
        line = report.summary()
        if line:
            print(line)


def engine_args(p: argparse.ArgumentParser, workers_help: str) -> None:
    """``--engine``, ``--ray-address`` and ``--workers`` (whose meaning is the engine's)."""
    from crossmodal.engines import ENGINES

    p.add_argument("--engine", default="local", choices=ENGINES,
                   help="where encoding runs: this machine, or a Ray cluster (needs the extra: "
                        "pip install \"crossmodal[ray]\")")
    p.add_argument("--ray-address", default=None,
                   help="with --engine ray: the cluster to join (auto, ray://HOST:PORT or HOST:PORT); left out: "
                        "start a Ray instance on this machine for the run")
    p.add_argument("--workers", type=count(0), default=None, help=workers_help)


def engine_options(args):
    """The engine the flags name, connected first under Ray, so a missing extra or an
    address that answers nothing stops the command before anything is read or written."""
    from crossmodal.engines import EngineOptions, connect
    from crossmodal.errors import InvalidInput

    if args.engine != "ray":
        if args.ray_address is not None:
            raise InvalidInput("--ray-address goes with --engine ray")
        return EngineOptions()
    options = EngineOptions("ray", args.ray_address, args.workers)
    connect(options)
    return options
