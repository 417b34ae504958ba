"""``crossmodal video add|search|captions``: video moments through frame encoding."""
from __future__ import annotations

import json

from .common import add_command, count, engine_args, engine_options, index_and_model_args
from .search import read_query_image

EXAMPLES = {
    "video": """examples:
  crossmodal video add --index idx/f8k clip.mp4
  crossmodal video search --index idx/f8k --text "a man rides a bike down a hill"\n""",
    "add": """examples:
  crossmodal video add --index idx/f8k clip1.mp4 clip2.mkv --fps 1""",
    "search": """examples:
  crossmodal video search --index idx/f8k --text "a man rides a bike down a hill" -k 5
  crossmodal video search --index idx/f8k --image still.jpg --json""",
    "captions": """examples:
  crossmodal video captions --index idx/f8k clip1.mp4 --json""",
}


def clock(t: float) -> str:
    return f"{int(t // 60)}:{t % 60:04.1f}"


def run_add(args):
    from crossmodal.errors import NothingDone
    from retrieval.search import Searcher
    from retrieval.video import add_videos

    engine = engine_options(args)
    searcher = Searcher.open(args.index, args.model)
    report = add_videos(searcher, args.videos, fps=args.fps, max_frames=args.max_frames,
                        dedup_radius=args.dedup_radius, engine=engine)
    print(report.summary())
    if report.failed and not report.videos_added:
        raise NothingDone("no video could be added; no new version was written")
    return report


def run_search(args):
    from retrieval.search import Searcher
    from retrieval.store import display_text
    from retrieval.video import image_to_moments, text_to_moments

    searcher = Searcher.open(args.index, args.model)
    if args.text is not None:
        moments = text_to_moments(searcher, args.text, top=args.k, radius=args.radius)
    else:
        moments = image_to_moments(searcher, read_query_image(args.image), top=args.k, radius=args.radius)
    if args.json:
        print(json.dumps([m.to_dict() for m in moments], indent=2))
    else:
        print(f"{len(moments)} moment(s)")
        for n, m in enumerate(moments, 1):
            print(f"{n:>3}. {display_text(m.video)}  {clock(m.start)}-{clock(m.end)}  best d={m.best_distance}  "
                  f"score={m.score:.3f}")
    return moments


def run_captions(args):
    from retrieval.search import Searcher
    from retrieval.store import display_text
    from retrieval.video import video_captions

    searcher = Searcher.open(args.index, args.model)
    res = video_captions(searcher, args.video, k=args.k, fps=args.fps, max_frames=args.max_frames,
                         dedup_radius=args.dedup_radius)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"{display_text(args.video)}: {len(res['segments'])} segment(s)")
        for seg in res["segments"]:
            best = seg["captions"][0] if seg["captions"] else None
            print(f"  {clock(seg['start'])}-{clock(seg['end'])}  " +
                  (f"d={best['distance']}  {best['text']}" if best else "(no captions indexed)"))
        print("best captions for the whole video:")
        for b in res["summary"]:
            ranges = ", ".join(f"{clock(s)}-{clock(e)}" for s, e in b["ranges"])
            print(f"  d={b['best_distance']}  {b['text']}  [{ranges}]")
    return res


def sampling_args(p) -> None:
    p.add_argument("--fps", type=float, default=1.0, help="frames sampled per second")
    p.add_argument("--max-frames", type=count(1), default=None,
                   help="stop after this many sampled frames per video (at least 1; leave it out for no limit)")
    p.add_argument("--dedup-radius", type=count(0), default=2, help="skip frames this close to the last kept one")


def register(sub) -> None:
    p = add_command(sub, "video", "video moments and caption lookup through frame encoding", EXAMPLES["video"])
    vsub = p.add_subparsers(dest="video_command", required=True, metavar="ACTION")
    v = add_command(vsub, "add", "sample, encode and index the frames of videos", EXAMPLES["add"])
    index_and_model_args(v)
    v.add_argument("videos", nargs="+", help="video files (anything PyAV/FFmpeg reads)")
    sampling_args(v)
    engine_args(v, "--engine ray: encoding actors, one video each at a time (default: one per CPU of the cluster, "
                   "at most 8); unused here")
    v.set_defaults(func=run_add)
    v = add_command(vsub, "search", "find moments by text or image", EXAMPLES["search"])
    index_and_model_args(v)
    g = v.add_mutually_exclusive_group(required=True)
    g.add_argument("--text", help="describe the moment")
    g.add_argument("--image", help="an image like the moment")
    v.add_argument("-k", type=count(1), default=10, help="moments to show")
    v.add_argument("--radius", type=count(0), default=None, help="only frames within this Hamming distance")
    v.add_argument("--json", action="store_true", help="print JSON")
    v.set_defaults(func=run_search)
    v = add_command(vsub, "captions", "caption lookup for a video", EXAMPLES["captions"])
    index_and_model_args(v)
    v.add_argument("video", help="a video file (indexed or not)")
    v.add_argument("-k", type=count(1), default=3, help="captions per segment")
    sampling_args(v)
    v.add_argument("--json", action="store_true", help="print JSON")
    v.set_defaults(func=run_captions)
