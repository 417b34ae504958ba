"""``crossmodal serve``: the HTTP service and web page over one or more indexes."""
from __future__ import annotations

from .common import add_command

EXAMPLES = """examples:
  crossmodal serve --index idx/f8k                       # http://127.0.0.1:8000
  crossmodal serve --index idx/f8k-32 --index idx/f8k-64 --allow-writes --write-token SECRET"""


def run(args) -> None:
    from retrieval.service import serve

    serve(args.index, args.model, args.host, args.port, args.allow_writes, args.write_token,
          int(args.max_upload_mb * 1024 * 1024), int(args.max_megapixels * 1e6) if args.max_megapixels else None)


def register(sub) -> None:
    p = add_command(sub, "serve", "HTTP service and web page over one or more indexes", EXAMPLES)
    p.add_argument("--index", action="append", required=True, help="an index folder (repeat for other code lengths)")
    p.add_argument("--model", default=None, help="model folder (default: the model recorded in the index)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (loopback: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    p.add_argument("--allow-writes", action="store_true", help="enable POST /api/index/texts (needs --write-token)")
    p.add_argument("--write-token", default=None, help="bearer token that write requests must carry")
    p.add_argument("--max-upload-mb", type=float, default=8.0, help="largest image upload, in MB")
    p.add_argument("--max-megapixels", type=float, default=None,
                   help="refuse uploads announcing more pixels, before decoding (default: 40, or CROSSMODAL_MAX_PIXELS)")
    p.set_defaults(func=run)
