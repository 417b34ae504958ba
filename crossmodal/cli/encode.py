"""``crossmodal encode``: packed codes of a prepared split, to an .npz."""
from __future__ import annotations

from pathlib import Path

from .common import add_command, bits_list, cache_dir, cache_dir_arg, model_arg, print_screening

LAYOUT = """NPZ layout written by `crossmodal encode`:
  bits              int array: the code lengths present
  image_ids         str [N]: item ids
  text_ids          str [M]: caption ids, '<item id>#<n>'
  text_item_ids     str [M]: the item each caption describes
  texts             str [M]: the captions
  image_codes_<K>   uint8 [N, K/8]: packed codes (numpy packbits, big-endian)
  text_codes_<K>    uint8 [M, K/8]
  model_fingerprint str: the model that made them"""

EXAMPLES = """examples:
  crossmodal encode --model models/f8k --data data/flickr8k --split test --out codes.npz"""


def run(args) -> Path:
    import numpy as np

    from crossmodal.atomic import atomic_write_bytes
    from crossmodal.data.prepared import PreparedSplits
    from crossmodal.model import CrossModalHasher

    model = CrossModalHasher.from_pretrained(args.model)
    bits = args.bits or model.config.bits
    data = PreparedSplits.open(args.data, [args.split], cache_dir(args))
    print_screening(data.screening)
    flat = data.flat(args.split)
    out = data.outputs(model, args.split)
    arrays = {"bits": np.array(bits), "image_ids": np.array(flat.ids), "text_ids": np.array(flat.caption_ids()),
              "text_item_ids": np.array(flat.caption_owners()),
              "texts": np.array(flat.captions), "model_fingerprint": np.array(model.fingerprint())}
    for k in bits:
        arrays[f"image_codes_{k}"] = model.quantize(out.image_relaxed, k)
        arrays[f"text_codes_{k}"] = model.quantize(out.text_relaxed, k)
    import io
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    print(f"wrote {path}: {len(flat.ids)} images, {len(flat.captions)} captions, bits {list(bits)}")
    return path


def register(sub) -> None:
    p = add_command(sub, "encode", "write packed codes of a split to an .npz", LAYOUT + "\n\n" + EXAMPLES)
    model_arg(p)
    p.add_argument("--data", required=True, help="prepared dataset folder")
    p.add_argument("--split", default="test", help="split to encode")
    p.add_argument("--bits", type=bits_list, default=None, help="code lengths (default: all the model serves)")
    cache_dir_arg(p)
    p.add_argument("--out", required=True, help=".npz file to write")
    p.set_defaults(func=run)
