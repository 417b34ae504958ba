"""The model that ships with crossmodal, and how a ``--model`` value names a folder.

``default`` (the value every command uses when ``--model`` is not given) is the model
in ``crossmodal/pretrained/default/``: hash heads trained by ``crossmodal train`` with
the default configuration on Flickr8k's training split, over the frozen encoders the
package installs (referenced by name, version and checksum, so the folder is a few MB).
Its ``card.json`` says what it was trained on, under which terms, how well it scores
and how to reproduce it. Any other value is a model folder's path.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import MissingInput

#: the ``--model`` value that names the bundled model
DEFAULT_MODEL = "default"
DEFAULT_DIR = Path(__file__).resolve().parent / "default"
CARD_NAME = "card.json"


def resolve_model_dir(model: str | Path | None) -> Path:
    """A ``--model`` value as a folder: ``None`` or ``"default"`` is the bundled model
    (write ``./default`` for a folder of that name)."""
    if model is None or str(model) == DEFAULT_MODEL:
        if not (DEFAULT_DIR / "config.json").is_file():
            raise MissingInput(f"the bundled default model is missing from {DEFAULT_DIR} (a damaged install?); "
                               f"reinstall crossmodal, or pass --model DIR")
        return DEFAULT_DIR
    return Path(model)


def is_default(model: str | Path | None) -> bool:
    """Whether a ``--model`` value names the bundled model."""
    return model is None or str(model) == DEFAULT_MODEL or Path(model).resolve() == DEFAULT_DIR


def write_card(folder: str | Path, card: dict) -> None:
    """Write ``card.json``: what a model was trained on and how to reproduce it."""
    from ..atomic import atomic_write_text

    atomic_write_text(Path(folder) / CARD_NAME, json.dumps(card, indent=2) + "\n")


def synthetic_note(card: dict) -> str | None:
    """The warning for indexing real photos with a model trained on rendered scenes."""
    trained_on = card.get("trained_on", {})
    if not trained_on.get("synthetic"):
        return None
    return (f"note: this model was trained on {trained_on.get('dataset', 'synthetic data')}, not on photos: it will "
            f"not find real photos by what they show. Leave out --model to use the bundled model (trained on "
            f"Flickr8k photos), or train one on your own captioned photos")


def model_card(folder: str | Path | None = None) -> dict:
    """The card of a model folder (the bundled model's by default): {} when it has none."""
    path = resolve_model_dir(folder) / CARD_NAME
    return json.loads(path.read_text()) if path.is_file() else {}
