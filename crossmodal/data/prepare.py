"""Shared driver of the ``data_scripts/prepare_*.py`` scripts: read, verify, write, report."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from .format import PrepareReport, build_dataset_dict, write_prepared


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--source", required=True, help="folder of the original release")
    p.add_argument("--out", required=True, help="output folder (a datasets DatasetDict)")
    return p


def run_prepare(read: Callable[..., dict], source: str, out: str, **kwargs) -> PrepareReport:
    """Read ``source`` with ``read``, write the prepared dataset to ``out``, print the report."""
    report = PrepareReport()
    splits = read(source, report, **kwargs)
    dd, report = build_dataset_dict(splits, report)
    write_prepared(dd, report, out)
    print(f"wrote {Path(out).resolve()}")
    print(report.summary())
    return report
