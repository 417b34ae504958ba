"""``crossmodal duplicates``: groups of near-duplicate photos in an index."""
from __future__ import annotations

import json

from .common import add_command, count

EXAMPLES = """examples:
  crossmodal duplicates --index idx/photos
  crossmodal duplicates --index idx/photos --radius 6 --json > groups.json"""


def or_none(kind: type, what: str):
    """An argparse type: a number of ``kind``, or 'none' (that check off)."""
    import argparse

    def parse(text: str):
        if text.strip().lower() == "none":
            return None
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, or none; got {text!r}") from None
    return parse


def run(args):
    from retrieval.duplicates import default_radius, find_duplicates
    from retrieval.index import CrossModalIndex
    from retrieval.store import display_text

    index = CrossModalIndex.load(args.index)
    radius = default_radius(index.nbits) if args.radius is None else args.radius
    groups = find_duplicates(index, "image", radius, args.min_cosine, args.max_look_distance)
    lookless = sum(1 for m in index.items_of("image") if "look" not in m["extra"])
    if lookless and args.max_look_distance is not None:
        import sys

        print(f"{lookless} photo(s) were indexed before look hashes were kept: their pairs are confirmed by the "
              f"model's outputs alone, which is less precise; rebuild the index (index build --overwrite) to give "
              f"them looks", file=sys.stderr)
    if args.json:  # ensure_ascii: any file name, losslessly (surrogate escapes), never a crash
        print(json.dumps({"index": str(args.index), "radius": radius, "min_cosine": args.min_cosine,
                          "max_look_distance": args.max_look_distance,
                          "groups": [g.to_dict() for g in groups]}, indent=2))
        return groups
    copies = sum(len(g.ids) - 1 for g in groups)
    print(f"{len(groups)} group(s) of near-duplicate photos, {copies} extra copie(s) "
          f"({index.count('image')} photos; within {radius} of {index.nbits} bits"
          f"{'' if args.min_cosine is None else f', outputs cosine >= {args.min_cosine}'})")
    for n, g in enumerate(groups, 1):
        print(f"group {n}: {len(g.ids)} photos")
        for i, key in enumerate(g.keys):
            detail = f"  (d={g.distances[i]}{f', cos={g.cosines[i]:.3f}' if g.cosines else ''})" if i else ""
            print(f"  {display_text(key)}{detail}")
    return groups


def register(sub) -> None:
    from retrieval.duplicates import DEFAULT_MAX_LOOK_DISTANCE, DEFAULT_MIN_COSINE, DEFAULT_RADIUS

    p = add_command(sub, "duplicates", "find groups of near-duplicate photos (copies, re-saved, resized)", EXAMPLES)
    p.add_argument("--index", required=True, help="index folder")
    p.add_argument("--radius", type=count(0), default=None,
                   help="Hamming radius of the candidates (default by code length: "
                        f"{', '.join(f'{b}: {r}' for b, r in DEFAULT_RADIUS.items())})")
    p.add_argument("--min-cosine", type=or_none(float, "a cosine from -1 to 1"), default=DEFAULT_MIN_COSINE,
                   help="cosine of the stored outputs a pair needs (none: not checked)")
    p.add_argument("--max-look-distance", type=or_none(int, "a number of bits from 0 to 64"),
                   default=DEFAULT_MAX_LOOK_DISTANCE,
                   help="bits of the photos' 64-bit look hashes that may differ (none: not checked)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)
