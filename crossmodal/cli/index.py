"""``crossmodal index build|add|remove|info``: build and maintain binary indexes."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from crossmodal.errors import InvalidInput, NothingDone

from .common import (add_command, cache_dir, cache_dir_arg, count, engine_args, engine_options, index_and_model_args,
                     model_arg, print_screening)

EXAMPLES = {
    "index": """examples:
  crossmodal index build --model models/f8k --data data/flickr8k --bits 64 --out idx/f8k
  crossmodal index add --index idx/f8k --images photo1.jpg photo2.jpg
  crossmodal index info --index idx/f8k""",
    "build": """examples:
  crossmodal index build --model models/f8k --images ~/Pictures --out idx/photos
  crossmodal index build --model models/f8k --data data/flickr8k --split test --bits 64 --out idx/f8k
  crossmodal index build --model models/f8k --data data/flickr8k --type ivf --param nlist=256 --out idx/ivf""",
    "sync": """examples:
  crossmodal index sync --index idx/photos --images ~/Pictures
  crossmodal index sync --index idx/photos --images ~/Pictures/trip-2024 --prune-missing   # after a rename
  crossmodal index sync --index idx/photos --prune-missing --dry-run""",
    "add": """examples:
  crossmodal index add --index idx/photos --images ~/Pictures/2026 new1.jpg
  crossmodal index add --index idx/f8k --texts "a dog on a beach" "two children at a table"\n""",
    "remove": """examples:
  crossmodal index remove --index idx/f8k --modality image photos/new1.jpg
  crossmodal index remove --index idx/f8k --modality text "a dog on a beach"
  crossmodal index remove --index idx/photos --under ~/Pictures/old-phone\n""",
    "info": """examples:
  crossmodal index info --index idx/f8k""",
}


def parse_params(pairs, kind: str, bits: int | None = None) -> dict:
    """``--param NAME=VALUE`` pairs over index type ``kind``'s defaults, checked (names,
    whole numbers, ranges) before any work is done."""
    from retrieval.index_types import index_params

    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise InvalidInput(f"--param takes NAME=VALUE, got {p!r}")
        k, v = p.split("=", 1)
        out[k.strip()] = v.strip()
    return index_params(kind, out, nbits=bits)  # refuse now: not after minutes of encoding


def run_build(args) -> dict:
    from crossmodal.model import CrossModalHasher
    from retrieval.index import IndexChanges, check_index_destination, discard_empty_index, has_index, read_manifest
    from retrieval.index_types import check_training_size
    from retrieval.ingest import build_index, embed_prepared
    from retrieval.photos import PhotoReport, index_photos, walk_photos

    if not (args.data or args.images):
        raise InvalidInput("index build: nothing to index: give --data DIR (a prepared dataset) and/or "
                           "--images DIR|FILE... (photo folders)")
    params = parse_params(args.param, args.type, args.bits)
    options = photo_options(args)
    check_index_destination(args.out)  # before minutes of feature extraction, not after
    model = CrossModalHasher.from_pretrained(args.model)
    if args.bits not in model.config.bits:
        raise InvalidInput(f"--bits {args.bits}: this model serves code lengths {list(model.config.bits)}")
    if args.images and args.type in ("hnsw", "multihash"):
        raise InvalidInput(f"--type {args.type} cannot remove or update items, which a photo library needs (sync, "
                           f"changed photos): use --type flat or ivf")
    inputs = build_inputs(args)
    resumed = _existing_build(args, model, inputs)
    report = PhotoReport()
    photos = walk_photos(args.images, report) if args.images else []
    if args.images and not args.data and not photos:
        raise NothingDone(f"index build: no photos found under {', '.join(map(str, args.images))}; no index was "
                          f"written")
    if args.images and not resumed:
        check_training_size(args.type, params, min(len(photos), args.chunk_size))
    dataset_items = IndexChanges()
    if args.data:
        dataset_items, screening = embed_prepared(model, args.data, args.split.split(","), cache_dir(args))
        print_screening(screening)
        if not resumed:
            check_training_size(args.type, params, min(dataset_items.added_counts().values(), default=0))
    created = not has_index(args.out)
    try:
        if resumed:
            print(f"{args.out} already holds a build of these photos by this model: resuming (photos indexed before "
                  f"are not read again)")
        else:
            build_index(model, args.model, dataset_items, args.out, args.bits, index_type=args.type,
                        params=params, backend=args.backend, backend_options=backend_options(args),
                        rerank=None if args.rerank_store == "none" else args.rerank_store, build_inputs=inputs,
                        rerank_candidates=args.rerank)
        if args.images:
            warn_if_synthetic(args.model)
            index_photos(args.out, model, photos, report, options, update=True)
            print(report.summary())
    except BaseException:
        if created:  # a first build that failed leaves nothing that blocks the next attempt
            discard_empty_index(args.out)
        raise
    saved = read_manifest(args.out)["counts"]
    if not any(saved.values()):
        discard_empty_index(args.out)
        raise NothingDone(f"index build: nothing could be indexed: {len(report.failed)} of {report.seen} photo(s) "
                          f"unreadable (named above); no index was written")
    counts = {m: saved.get(m, 0) for m in ("image", "text")}
    print(f"index written to {args.out}: {counts['image']} images, {counts['text']} texts, "
          f"{args.bits}-bit {args.type} ({args.backend})")
    return counts


def build_inputs(args) -> dict:
    """What a build indexes, as recorded in the index: the same command resumes it."""
    import os

    from retrieval.photos import photo_key  # roots keyed as their photos are

    return {"images": sorted(photo_key(r) for r in args.images or []),
            "data": os.path.abspath(args.data) if args.data else None, "split": args.split if args.data else None,
            "bits": args.bits, "type": args.type, "backend": args.backend}


def _existing_build(args, model, inputs: dict) -> bool:
    """Whether ``--out`` holds an interrupted photo build of the same inputs by the same
    model (resume it: True). Any other index there is refused unless ``--overwrite``."""
    from crossmodal.errors import UnsafeOutput
    from retrieval.index import discard_empty_index, has_index, read_manifest

    if not has_index(args.out):
        return False
    manifest = read_manifest(args.out)
    if not any(manifest.get("counts", {}).values()) and discard_empty_index(args.out):
        print(f"{args.out}: removed the empty index an earlier build left there", file=sys.stderr)
        return False
    if (args.images and not args.data and manifest.get("build_inputs") == inputs
            and manifest["model_fingerprint"] == model.fingerprint()):
        return True
    if args.overwrite:
        print(f"{args.out}: replacing the index it holds (--overwrite)", file=sys.stderr)
        return False
    counts = manifest.get("counts", {})
    raise UnsafeOutput(f"{args.out} already holds an index ({counts.get('image', 0)} images, {counts.get('text', 0)} "
                       f"texts) built from other inputs or by another model; nothing was changed. 'crossmodal index "
                       f"add' or 'index sync' adds to it; --overwrite replaces it")


def warn_if_synthetic(model_dir) -> None:
    """Photos indexed by a model that never saw a photo (the demo's) deserve a word."""
    from crossmodal.pretrained import model_card, synthetic_note

    note = synthetic_note(model_card(model_dir))
    if note:
        print(note, file=sys.stderr)


def backend_options(args) -> dict:
    """Options of the chosen backend as stored in the index (none for faiss)."""
    if args.backend != "milvus":
        return {}
    return {"uri": args.milvus_uri, "db_name": args.milvus_db, "collection_prefix": args.milvus_prefix,
            "consistency_level": args.milvus_consistency, "insert_batch": args.milvus_insert_batch}


def run_add(args) -> dict:
    from crossmodal.model import CrossModalHasher
    from retrieval.index import IndexChanges, read_manifest, write_index
    from retrieval.ingest import embed_prepared, embed_texts
    from retrieval.photos import PhotoReport, index_photos, walk_photos
    from retrieval.search import check_model_fits, check_query_texts

    if not (args.data or args.images or args.texts):
        raise InvalidInput("index add: nothing to add: give --images FILE..., --texts TEXT... or --data DIR")
    options = photo_options(args)
    live = read_manifest(args.index)
    model_dir = args.model or live.get("model_path")
    model = CrossModalHasher.from_pretrained(model_dir)
    check_model_fits(model, live["model_fingerprint"], live.get("model_path"), args.index)  # before any embedding
    riders = IndexChanges()  # captions and dataset items: one commit with the photos' last chunk
    if args.data:
        embedded, screening = embed_prepared(model, args.data, args.split.split(","), cache_dir(args), args.update)
        print_screening(screening)
        riders.extend(embedded)
    if args.texts:
        riders.extend(embed_texts(model, check_query_texts(args.texts), args.update))
    report = PhotoReport()
    riders_in = False
    if args.images:
        warn_if_synthetic(model_dir)
        found = walk_photos(args.images, report)
        if found:  # captions and dataset items ride in the photos' last commit: one write, not two
            riders_in = index_photos(args.index, model, found, report, options, update=args.update,
                                     riders=riders)
    if riders and not riders_in:
        report.written.merge(write_index(args.index, model, riders))
    if not (report.written.added or report.present or report.written.skipped):
        raise NothingDone(f"nothing added to {args.index}: none of the {len(report.failed)} input(s) could be read; "
                          f"no new version was written")
    if args.images:
        print(report.summary())
    if args.texts or args.data:  # what rode along: the captions (and a dataset's rows)
        added, present = report.written.of("text", "added"), report.written.of("text", "skipped")
        print(f"captions: added {added}, already present {present}"
              + (" (dataset images are counted with the photos above)" if args.data and args.images else ""))
    return {"added": report.written.added, "skipped": report.present, "failed": len(report.failed)}


def run_sync(args) -> dict:
    from crossmodal.model import CrossModalHasher
    from retrieval.index import read_manifest
    from retrieval.photos import prune_missing, sync_photos
    from retrieval.store import display_text

    if not args.images and not args.prune_missing:
        raise InvalidInput("index sync: give --images DIR... (the folders to follow), --prune-missing, or both")
    if args.dry_run and args.images:
        raise InvalidInput("--dry-run shows what --prune-missing would remove: run it without --images")
    if args.dry_run and not args.prune_missing:
        raise InvalidInput("--dry-run goes with --prune-missing")
    options = photo_options(args)
    model = CrossModalHasher.from_pretrained(args.model or read_manifest(args.index).get("model_path"))
    out = {}
    if args.images:
        report = sync_photos(args.index, model, args.images, options)
        print(report.sync_summary())
        out = {"added": report.added, "updated": report.updated, "removed": report.removed,
               "unchanged": report.present, "failed": len(report.failed)}
    if args.prune_missing:
        gone = prune_missing(args.index, model, dry_run=args.dry_run)
        for path in gone[:20]:
            print(f"{'would remove' if args.dry_run else 'removed'}: {display_text(path)}", file=sys.stderr)
        if len(gone) > 20:
            print(f"... and {len(gone) - 20} more", file=sys.stderr)
        print(f"{len(gone)} photo(s) whose files are gone {'would be removed (dry run: nothing was changed)' if args.dry_run else 'removed'}")
        out["pruned"] = len(gone)
    return out


def photo_options(args):
    """The photo run the flags ask for; under ``--engine ray`` the engine is connected here
    (call it before anything is written)."""
    from retrieval.photo_options import PhotoOptions

    if args.engine == "ray" and not args.images:
        raise InvalidInput("--engine ray encodes photo folders (--images); a prepared dataset's features are "
                           "computed here (leave out --engine)")
    engine = engine_options(args)
    return PhotoOptions(args.chunk_size, args.batch_size, args.workers if engine.name == "local" else None,
                        args.runtime, engine)


def photo_args(p) -> None:
    from crossmodal.config import RUNTIMES
    from retrieval.photo_options import DEFAULT_BATCH, DEFAULT_CHUNK, default_workers

    p.add_argument("--chunk-size", type=count(1), default=DEFAULT_CHUNK,
                   help="photos per commit: a killed run loses at most this many and resumes after them")
    p.add_argument("--batch-size", type=count(1), default=DEFAULT_BATCH, help="photos encoded at once")
    engine_args(p, f"--engine local: processes decoding photos while the CNN runs (0: decode in this process; "
                   f"default: {default_workers()}); --engine ray: encoding actors (default: one per CPU of the "
                   f"cluster, at most 8)")
    p.add_argument("--runtime", default="auto", choices=RUNTIMES,
                   help="where the CNN runs for photos: ONNX Runtime when installed (auto; checked against PyTorch "
                        "before use), PyTorch, or openvino-bf16: OpenVINO in bfloat16 on a CPU with AMX or AVX-512 "
                        "BF16, about 2.5x faster CNNs but not PyTorch's exact codes (pip install "
                        "\"crossmodal[openvino]\"; BENCHMARKS.md 'Ingest runtimes')")


def resolve_removal_keys(idx, modality: str, keys) -> tuple[list[str], list[str]]:
    """Keys as stored: a file added with --images is keyed by its absolute path, so a
    relative or ``~`` path is resolved the same way. Returns (found, not found)."""
    from retrieval.photos import photo_key

    found, missing = [], []
    for key in keys:
        forms = [key, photo_key(key), str(Path(key).expanduser().resolve())]  # resolved: keys of older releases
        hit = next((f for f in forms if idx.contains(modality, f)), None)
        (found if hit is not None else missing).append(hit if hit is not None else key)
    return found, missing


def run_remove(args) -> int:
    from retrieval.index import CrossModalIndex, IndexChanges, write_index
    from retrieval.photos import remove_under

    if not (args.keys or args.under):
        raise InvalidInput("index remove: give the keys of the items to remove, or --under DIR")
    n = 0
    if args.under:
        removed = remove_under(args.index, args.under, dry_run=args.dry_run)
        verb = "would remove" if args.dry_run else "removed"
        print(f"{verb} {removed['image']} photo(s) and {removed['frame']} video frame(s) under "
              f"{', '.join(map(str, args.under))}{' (dry run: nothing was changed)' if args.dry_run else ''}")
        n += sum(removed.values())
    if args.keys:
        keys, missing = resolve_removal_keys(CrossModalIndex.load(args.index), args.modality, args.keys)
        for key in missing:
            print(f"not in the index: {args.modality} {key!r}", file=sys.stderr)
        if args.dry_run:
            print(f"would remove {len(keys)} {args.modality} item(s) (dry run: nothing was changed)")
            return n + len(keys)
        removed_keys = write_index(args.index, None, IndexChanges().remove_keys(args.modality, keys)).removed
        if removed_keys:
            print(f"removed {removed_keys} {args.modality} item(s)")
        n += removed_keys
    if not n and not args.dry_run:
        what = (f"no {args.modality} item has the key(s) given (image files are keyed by their absolute path, dataset "
                f"items by their id, captions by their text or '<id>#<n>')" if args.keys else
                "no photo or video frame lies under the folder(s) given")
        raise NothingDone(f"nothing removed from {args.index}: {what}; no new version was written")
    return n


def run_info(args) -> dict:
    from retrieval.index import CrossModalIndex

    idx = CrossModalIndex.load(args.index)
    info = idx.info()
    info["model_path"] = idx.model_path
    print(json.dumps(info, indent=2))
    return info


def register(sub) -> None:
    from retrieval.backends import BACKENDS
    from retrieval.index_types import DEFAULT_PARAMS
    from retrieval.index import MODALITIES
    from retrieval.rerank import RERANK_DTYPES

    type_help = "; ".join(f"{t}: {', '.join(f'{k}={v}' for k, v in ps.items()) or 'no parameters'}"
                          for t, ps in DEFAULT_PARAMS.items())
    p = add_command(sub, "index", "build and maintain binary indexes", EXAMPLES["index"])
    isub = p.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    b = add_command(isub, "build", "index a prepared dataset split (images and captions) or photo folders",
                    EXAMPLES["build"])
    model_arg(b)
    b.add_argument("--data", default=None, help="prepared dataset folder")
    b.add_argument("--images", nargs="+", default=None, metavar="DIR_OR_FILE",
                   help="photo folders (walked recursively) or files; an interrupted build resumes when run again")
    b.add_argument("--split", default="test", help="split(s), comma-separated")
    b.add_argument("--bits", type=int, default=64, help="code length (one the model serves)")
    b.add_argument("--type", default="flat", choices=list(DEFAULT_PARAMS), help=f"index type ({type_help})")
    b.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="an index parameter, repeatable (see --type for each type's parameters and defaults)")
    b.add_argument("--backend", default="faiss", choices=list(BACKENDS),
                   help="faiss (in this process) or milvus (a Milvus server or Milvus Lite file)")
    from retrieval.milvus import CONSISTENCY_LEVELS, MilvusOptions
    mo = MilvusOptions()
    b.add_argument("--milvus-uri", default=None,
                   help="with --backend milvus: a server, http://host:19530, or a Milvus Lite .db file; the token, "
                        "if the server wants one, comes from CROSSMODAL_MILVUS_TOKEN (never stored)")
    b.add_argument("--milvus-db", default=mo.db_name, help="Milvus database (default: the server's default)")
    b.add_argument("--milvus-prefix", default=mo.collection_prefix,
                   help="collection name prefix; collections are PREFIX_<index id>_<modality>")
    b.add_argument("--milvus-consistency", default=mo.consistency_level, choices=CONSISTENCY_LEVELS,
                   help="Strong: a search sees every finished write; Bounded: faster, may lag a moment")
    b.add_argument("--milvus-insert-batch", type=count(1), default=mo.insert_batch, help="rows per insert request")
    b.add_argument("--rerank-store", default="int8", choices=[*RERANK_DTYPES, "none"],
                   help="how the index keeps each item's outputs for two-stage search (re-ranking its Hamming "
                        "candidates): int8 (width + 4 bytes an item), float16, or none (codes only)")
    b.add_argument("--rerank", type=count(0), default=None,
                   help="Hamming candidates a query re-ranks unless it says otherwise (recorded in the index; "
                        "default: chosen on dev for each code length)")
    cache_dir_arg(b)
    photo_args(b)
    b.add_argument("--out", required=True,
                   help="index folder to write: new or empty; the same build, interrupted, resumes")
    b.add_argument("--overwrite", action="store_true",
                   help="replace the index --out holds (otherwise a different build into it is refused)")
    b.set_defaults(func=run_build)

    a = add_command(isub, "add", "add items (a dataset split, image files or captions)", EXAMPLES["add"])
    index_and_model_args(a)
    a.add_argument("--data", default=None, help="a prepared dataset whose --split to add")
    a.add_argument("--split", default="test", help="split(s) of --data, comma-separated")
    a.add_argument("--images", nargs="*", default=None, metavar="DIR_OR_FILE",
                   help="photo folders (walked recursively) or image files")
    a.add_argument("--texts", nargs="*", default=None, metavar="TEXT", help="captions")
    a.add_argument("--update", action="store_true", help="replace items already present")
    cache_dir_arg(a)
    photo_args(a)
    a.set_defaults(func=run_add)

    y = add_command(isub, "sync", "bring an index in line with photo folders: add new, re-encode changed, "
                                  "remove deleted", EXAMPLES["sync"])
    index_and_model_args(y)
    y.add_argument("--images", nargs="+", default=None, metavar="DIR", help="the photo folders to follow")
    y.add_argument("--prune-missing", action="store_true",
                   help="also remove every photo whose file is gone, wherever it was (a renamed or deleted folder; "
                        "a drive that is not plugged in counts as gone: try --dry-run first)")
    y.add_argument("--dry-run", action="store_true", help="with --prune-missing: list what would go, change nothing")
    photo_args(y)
    y.set_defaults(func=run_sync)

    r = add_command(isub, "remove", "remove items by key", EXAMPLES["remove"])
    r.add_argument("--index", required=True, help="index folder")
    r.add_argument("--modality", default="image", choices=list(MODALITIES), help="which items the keys name")
    r.add_argument("keys", nargs="*", help="image file paths, dataset item ids, caption texts or '<id>#<n>'")
    r.add_argument("--under", action="append", metavar="DIR",
                   help="remove every photo and video frame inside this folder (repeatable), present or not")
    r.add_argument("--dry-run", action="store_true", help="say what would be removed, change nothing")
    r.set_defaults(func=run_remove)

    i = add_command(isub, "info", "what an index holds", EXAMPLES["info"])
    i.add_argument("--index", required=True, help="index folder")
    i.set_defaults(func=run_info)
