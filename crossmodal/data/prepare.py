"""Shared driver of the ``data_scripts/prepare_*.py`` scripts: check, read, verify, write, report.

Every check that can be made before reading the source is made first (the destination
is never the source or a folder the command does not own), and the dataset is
validated before it is written (no empty split, unique ids). A user's mistake ends the
script with one line naming the file, line or column, and exit code 2.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Callable

from ..errors import CrossmodalError
from .format import PrepareReport, build_dataset_dict, check_prepare_destination, write_prepared


def base_parser(description: str, source_help: str = "folder of the dataset's original release"
                ) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, help=source_help)
    p.add_argument("--out", required=True, help="output folder (a datasets DatasetDict)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out even when it is a non-empty folder that is not a prepared dataset")
    p.add_argument("--dedupe", action="store_true", help="keep the first of items sharing an id instead of failing")
    return p


def run_prepare(read: Callable[..., dict], source: str, out: str, overwrite: bool = False, dedupe: bool = False,
                **kwargs) -> PrepareReport:
    """Read ``source`` with ``read``, write the prepared dataset to ``out``, print the report."""
    check_prepare_destination(out, source, overwrite)
    report = PrepareReport()
    splits = read(source, report, **kwargs)
    dd, report = build_dataset_dict(splits, report, dedupe=dedupe)
    write_prepared(dd, report, out, overwrite=overwrite)
    print(f"wrote {Path(out).resolve()}")
    print(report.summary())
    return report


def prepare_main(read: Callable[..., dict], args: argparse.Namespace, **kwargs) -> None:
    """Entry point of a prepare script: ``run_prepare`` with one-line errors (exit 2)."""
    try:
        run_prepare(read, args.source, args.out, overwrite=args.overwrite, dedupe=args.dedupe, **kwargs)
    except (CrossmodalError, FileNotFoundError, KeyError, UnicodeDecodeError, json.JSONDecodeError,
            csv.Error) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"{Path(sys.argv[0]).name}: error: {msg}", file=sys.stderr)
        sys.exit(2)
