"""Your own folder of images + manifest.jsonl / manifest.csv -> crossmodal's dataset format.

Manifest fields: image (relative path), captions (list or 'a|b') or caption, optional
labels (list or 'x|y'), optional split (train/dev/test; otherwise a seeded 80/10/10), optional id.

    python data_scripts/prepare_folder.py --source my_photos --out data/mine
"""
from crossmodal.data.prepare import base_parser, prepare_main
from crossmodal.data.sources import read_folder

if __name__ == "__main__":
    p = base_parser(__doc__, source_help="your folder of images, holding manifest.jsonl or manifest.csv")
    p.add_argument("--manifest", default=None, help="manifest path (default: SOURCE/manifest.jsonl or .csv)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--allow-outside", action="store_true",
                   help="accept manifest paths outside --source (absolute paths or '..')")
    args = p.parse_args()
    prepare_main(read_folder, args, manifest=args.manifest, seed=args.seed, allow_outside=args.allow_outside)
