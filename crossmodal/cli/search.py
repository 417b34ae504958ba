"""``crossmodal search``: query an index by text or image."""
from __future__ import annotations

import json

from .common import add_command, count, index_and_model_args

EXAMPLES = """examples:
  crossmodal search --index idx/f8k --text "a dog runs through the snow" -k 10
  crossmodal search --index idx/f8k --image photo.jpg --target image --json
  crossmodal search --index idx/photos --text "a beach" --not "people" --not "buildings"
  crossmodal search --index idx/photos --image beach.jpg --text "at night" --mix 0.5 --target image
  crossmodal search --index idx/photos --text "birthday cake" --under ~/Pictures/2024 --after 2024-03-01 \\
      --before 2024-04-01 --sort date --min-score 0.3"""


def read_query_image(path: str, min_side: int | None = None):
    """A query image, or one line saying why it cannot be read."""
    from crossmodal.data import open_image_checked
    from crossmodal.errors import InvalidInput, MissingInput

    try:
        return open_image_checked(path, min_side=min_side)[1]
    except FileNotFoundError:
        raise MissingInput(f"no such image: {path}") from None
    except Exception as e:  # Pillow raises many types for bad files; its own message names a buffer, not the file
        from crossmodal.image_batches import decode_failure

        raise InvalidInput(f"cannot read image {path}: {decode_failure(e)}") from None


def result_form(args):
    """The filters, cut-off and order a search command was given."""
    from retrieval.filters import ItemFilter
    from retrieval.search import ResultForm

    return ResultForm(ItemFilter.parse(args.under, args.after, args.before), args.sort, args.min_score)


def run(args):
    from crossmodal.errors import InvalidInput
    from retrieval.search import Searcher
    from retrieval.store import display_text

    if args.text is None and args.image is None:
        raise InvalidInput("search: give --text TEXT, --image FILE, or both")
    if args.mix is not None and (args.text is None or args.image is None):
        raise InvalidInput("--mix weighs a text against an image: give both --text and --image, or drop --mix")
    form = result_form(args)
    searcher = Searcher.open(args.index, args.model)
    img = read_query_image(args.image, min_side=searcher.model.image_encoder.image_size) if args.image else None
    mix = 0.5 if args.mix is None else args.mix
    hits = searcher.search(args.text, img, args.target, args.k, mix, args.exclude or (), args.not_weight, form,
                           args.radius, args.rerank)
    target = args.target or searcher.default_target(args.text, img)
    query = {k: v for k, v in (("text", args.text), ("image", args.image)) if v is not None}
    if args.exclude:
        query["not"] = list(args.exclude)
    if args.text is not None and args.image is not None:
        query["mix"] = mix
    if args.json:
        print(json.dumps({"query": query, "target": target, "bits": searcher.index.nbits, **form.where.to_dict(),
                          "sort": form.sort, "min_score": form.min_score,
                          "results": [h.to_dict() for h in hits]}, indent=2))  # ensure_ascii: lossless, never fails
    else:
        label = " + ".join(repr(display_text(v)) for v in query.values() if isinstance(v, str))
        print(f"{len(hits)} {target} result(s) for {label} ({searcher.index.nbits}-bit codes"
              f"{', newest first' if form.sort == 'date' else ''})")
        print(f"{'rank':>4}  {'score':>6}  {'dist':>4}  {'date':<10}  {'key':<28}  source")
        for n, h in enumerate(hits, 1):
            src = display_text(h.source or "")[:80]
            when = f"  @ {h.timestamp:.1f}s" if h.timestamp is not None else ""
            score = f"{h.score:6.3f}" if h.score is not None else f"{'-':>6}"
            date = ((h.extra or {}).get("date") or "")[:10]
            print(f"{n:>4}  {score}  {h.distance:>4}  {date:<10}  {display_text(h.key)[:28]:<28}  {src}{when}")
    return hits


def query_form_args(p) -> None:
    """The filters, cut-off and order every search command takes."""
    from retrieval.filters import SORTS

    p.add_argument("--under", action="append", metavar="DIR",
                   help="only photos (and video frames) inside this folder, repeatable")
    p.add_argument("--after", metavar="DATE", help="only photos taken on or after this date (YYYY-MM-DD[THH:MM]): "
                                                  "EXIF date taken, else the file's modification time")
    p.add_argument("--before", metavar="DATE", help="only photos taken before this date")
    p.add_argument("--sort", default="relevance", choices=list(SORTS),
                   help="order of the results kept: relevance, or date (newest first; the same results)")
    p.add_argument("--min-score", type=float, default=None, metavar="S",
                   help="drop results whose re-ranked score (cosine, -1..1) is below S")


def register(sub) -> None:
    from retrieval.index import MODALITIES

    p = add_command(sub, "search", "search an index by text or image", EXAMPLES)
    index_and_model_args(p)
    from retrieval.search import DEFAULT_EXCLUDE_WEIGHT

    p.add_argument("--text", help="a caption to search with")
    p.add_argument("--image", help="an image file to search with (with --text too: 'like this photo, but ...')")
    p.add_argument("--mix", type=float, default=None,
                   help="with --text and --image: the image's share of the query, 0..1 (default 0.5)")
    p.add_argument("--not", dest="exclude", action="append", metavar="TEXT",
                   help="push results away from this concept, repeatable")
    p.add_argument("--not-weight", type=float, default=DEFAULT_EXCLUDE_WEIGHT,
                   help="how far --not pushes (0: not at all)")
    query_form_args(p)
    p.add_argument("--target", default=None, choices=list(MODALITIES),
                   help="what to find (default: the other modality)")
    p.add_argument("-k", type=count(1), default=10, help="results to show (at most the index's size)")
    p.add_argument("--radius", type=count(0), default=None, help="Hamming radius search")
    p.add_argument("--rerank", type=count(0), default=None,
                   help="re-rank the N nearest codes by the stored outputs (default: the index's own N, recorded "
                        "when it was built; 0: Hamming order only)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)
