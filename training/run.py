"""Training a model on a prepared dataset, start to finish: the pipeline behind
``crossmodal train`` and the demo (screening, seeding, the trainer, the record of what
the model was trained on)."""
from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from crossmodal.atomic import atomic_write_text
from crossmodal.cache import default_cache_dir
from crossmodal.config import ModelConfig
from crossmodal.data.prepared import PreparedSplits
from crossmodal.data.screen import Screening
from crossmodal.model import CrossModalHasher
from crossmodal.pretrained import write_card

from .config import TrainConfig
from .trainer import Scorer, Trainer


@dataclass
class TrainingRun:
    summary: dict  #: best epoch and score, steps, skipped rows per split
    screening: dict[str, Screening]
    is_main_process: bool  #: rank 0 (the process that writes and reports)


def train_model(data_dir: str | os.PathLike, out: str | os.PathLike, model_config: ModelConfig,
                config: TrainConfig, scorer: Scorer | None = None, resume: bool = False,
                on_screened=None, card: dict | None = None) -> TrainingRun:
    """Train a new model (or resume ``out/checkpoint``) and write it to ``out``.

    ``scorer`` scores validation codes each epoch (``retrieval.evaluation.ValidationEvaluator``;
    passed in so that ``training`` never imports ``retrieval``). ``on_screened`` gets the
    screening before the slow part starts, to report skipped rows early. ``card`` adds
    to the model card written beside the model (e.g. that the data is synthetic)."""
    started = time.perf_counter()
    data = PreparedSplits.open(data_dir, [config.train_split],
                               Path(config.cache_dir) if config.cache_dir else default_cache_dir(),
                               also_screen=[config.val_split] if config.val_split else [])
    screening = data.screening
    splits = list(screening)
    if on_screened:
        on_screened(screening)
    torch.manual_seed(config.seed)
    trainer = Trainer(CrossModalHasher(model_config), data, out, config, scorer=scorer)
    summary = trainer.fit(resume=resume)
    summary["skipped"] = {split: r.counts() for split, r in screening.items()}
    if trainer.rank == 0:
        summary["wall_s"] = round(time.perf_counter() - started, 1)
        record_training_data(Path(out), data_dir, summary["skipped"], summary["wall_s"])
        train_rows = {s: len(data[s]) for s in splits}
        write_card(out, {"name": Path(out).resolve().name, "fingerprint": trainer.model.fingerprint(),
                         "trained_on": {"data": str(Path(data_dir).resolve()), "split": config.train_split,
                                        "items": train_rows.get(config.train_split), **(card or {})},
                         "command": " ".join(sys.argv) if sys.argv and sys.argv[0] else None,
                         "best_epoch": summary["best_epoch"], "validation_score": summary["best_score"]})
    return TrainingRun(summary, screening, trainer.rank == 0)


def record_training_data(out: Path, data_dir: str | os.PathLike, skipped: dict, wall_s: float) -> None:
    """Add what `crossmodal info` shows to train_summary.json: the data, how long the whole
    run took (screening, features, epochs, writing) and when it ended."""
    path = out / "train_summary.json"
    summary = json.loads(path.read_text()) if path.is_file() else {}
    summary.update(data=str(Path(data_dir).resolve()), skipped=skipped, wall_s=wall_s,
                   finished=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    atomic_write_text(path, json.dumps(summary, indent=2))
