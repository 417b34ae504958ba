"""COCO captions (+ instances for labels) -> crossmodal's dataset format.

Expects ``annotations/captions_{train,val}YEAR.json`` (and optionally
``instances_*.json``) and the image folders ``trainYEAR/``, ``valYEAR/``.
val becomes test; a seeded ``--dev-size`` of train becomes dev.

    python data_scripts/prepare_coco.py --source /data/coco --out data/coco
"""
from crossmodal.data.prepare import base_parser, prepare_main
from crossmodal.data.sources import read_coco

if __name__ == "__main__":
    p = base_parser(__doc__)
    p.add_argument("--year", default="2017")
    p.add_argument("--dev-size", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    prepare_main(read_coco, args, year=args.year, dev_size=args.dev_size, seed=args.seed)
