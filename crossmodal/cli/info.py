"""``crossmodal info``: what a model or an index folder holds, as JSON."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from .common import add_command

EXAMPLES = """examples:
  crossmodal info default          # the model shipped with crossmodal: its card
  crossmodal info models/f8k --verify
  crossmodal info idx/f8k"""


def run(args) -> dict:
    from crossmodal.errors import InvalidInput
    from crossmodal.pretrained import DEFAULT_MODEL, resolve_model_dir

    path = resolve_model_dir(args.path) if args.path == DEFAULT_MODEL else Path(args.path)
    if (path / "config.json").is_file():
        info = model_info(path, args.verify)
    elif (path / "CURRENT").is_file():
        from retrieval.index import CrossModalIndex
        idx = CrossModalIndex.load(path)
        info = {"kind": "index", "path": str(path.resolve()), "version": idx.version, **idx.info(),
                "created": idx.created, "model_path": idx.model_path}
        if idx.model_path and (resolve_model_dir(idx.model_path) / "config.json").is_file():
            info["model"] = model_info(resolve_model_dir(idx.model_path), args.verify)
    else:
        raise InvalidInput(f"{path} is neither a model folder (config.json) nor an index folder (CURRENT)")
    print(json.dumps(_rounded(info), indent=2))
    return info


def _rounded(value, digits: int = 4):
    """Floats as people read them (16.9, not 16.900000000000002)."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v, digits) for v in value]
    return value


def model_info(path: Path, verify: bool = False) -> dict:
    """What ``info`` shows of a model; ``verify`` recomputes its fingerprint and the
    checksums of the encoders it references (a load otherwise trusts the stored ones)."""
    from crossmodal.model import CrossModalHasher
    from crossmodal.pretrained import model_card

    model = CrossModalHasher.from_pretrained(path, verify=verify)
    cfg = model.config
    info = {"kind": "model", "path": str(path.resolve()), "bits": list(cfg.bits), "quantizer": cfg.quantizer,
            "fingerprint": model.fingerprint(), **({"verified": True} if verify else {}),
            "size_mb": round(sum(f.stat().st_size for f in path.iterdir() if f.is_file()) / 1e6, 1),
            "image_encoder": {"name": cfg.image_encoder.name, "trainable": cfg.image_encoder.trainable,
                              "pooling": cfg.image_encoder.pooling, "image_size": model.image_encoder.image_size,
                              "views": cfg.image_views},
            "text_encoder": {"name": cfg.text_encoder.name, "trainable": cfg.text_encoder.trainable},
            "head": {**asdict(cfg.head), "outputs": cfg.output_width, "trained_bits": list(cfg.trained_bits)}}
    card = model_card(path)
    if card:
        info["card"] = card
    summary = path / "train_summary.json"
    if summary.is_file():
        s = json.loads(summary.read_text())
        info["training"] = {k: s.get(k) for k in ("data", "finished", "best_epoch", "best_score", "steps")}
        log = path / "train_log.jsonl"
        if log.is_file():
            epochs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
            best = next((e for e in epochs if e.get("epoch") == s.get("best_epoch")), None)
            if best:
                info["training"]["validation"] = {k[4:]: v for k, v in best.items() if k.startswith("val_")}
    return info


def register(sub) -> None:
    p = add_command(sub, "info", "what a model or an index holds: code lengths, encoders, fingerprint, training",
                    EXAMPLES)
    p.add_argument("path", help="a model folder, 'default' (the model shipped with crossmodal), or an index folder")
    p.add_argument("--verify", action="store_true",
                   help="recompute the model's fingerprint and the checksums of the encoders it builds on")
    p.set_defaults(func=run)
