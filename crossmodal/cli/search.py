"""``crossmodal search``: query an index by text or image."""
from __future__ import annotations

import json

from .common import add_command, count, index_and_model_args

EXAMPLES = """examples:
  crossmodal search --index idx/f8k --text "a dog runs through the snow" -k 10
  crossmodal search --index idx/f8k --image photo.jpg --target image --json"""


def read_query_image(path: str, min_side: int | None = None):
    """A query image, or one line saying why it cannot be read."""
    from crossmodal.data import open_image_checked
    from crossmodal.errors import InvalidInput, MissingInput

    try:
        return open_image_checked(path, min_side=min_side)[1]
    except FileNotFoundError:
        raise MissingInput(f"no such image: {path}") from None
    except Exception as e:  # Pillow raises many types for bad files
        raise InvalidInput(f"cannot read image {path}: {type(e).__name__}: {e}") from None


def run(args):
    from retrieval.search import Searcher, image_query_target
    from retrieval.store import display_text

    searcher = Searcher.open(args.index, args.model)
    if args.text is not None:
        target = args.target or "image"
        hits = searcher.search_texts([args.text], target, args.k, args.radius, args.rerank)[0]
        query = {"text": args.text}
    else:
        img = read_query_image(args.image, min_side=searcher.model.image_encoder.image_size)
        target = args.target or image_query_target(searcher.index)
        hits = searcher.search_images([img], target, args.k, args.radius, args.rerank)[0]
        query = {"image": args.image}
    if args.json:
        print(json.dumps({"query": query, "target": target, "bits": searcher.index.nbits,
                          "results": [h.to_dict() for h in hits]}, indent=2))
    else:
        print(f"{len(hits)} {target} result(s) for {next(iter(query.values()))!r} ({searcher.index.nbits}-bit codes)")
        print(f"{'rank':>4}  {'dist':>4}  {'key':<28}  source")
        for n, h in enumerate(hits, 1):
            src = display_text(h.source or "")[:80]
            when = f"  @ {h.timestamp:.1f}s" if h.timestamp is not None else ""
            print(f"{n:>4}  {h.distance:>4}  {display_text(h.key)[:28]:<28}  {src}{when}")
    return hits


def register(sub) -> None:
    from retrieval.index import MODALITIES

    p = add_command(sub, "search", "search an index by text or image", EXAMPLES)
    index_and_model_args(p)
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--text", help="a caption to search with")
    q.add_argument("--image", help="an image file to search with")
    p.add_argument("--target", default=None, choices=list(MODALITIES),
                   help="what to find (default: the other modality)")
    p.add_argument("-k", type=count(1), default=10, help="results to show (at most the index's size)")
    p.add_argument("--radius", type=count(0), default=None, help="Hamming radius search")
    p.add_argument("--rerank", type=count(0), default=None,
                   help="re-rank the N nearest codes by the stored outputs (default: the index's own N, recorded "
                        "when it was built; 0: Hamming order only)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)
