"""Fashion product catalogue (styles.csv + images/) -> crossmodal's dataset format.

Fixed seeded split: test = 2,000 items (the queries), dev = 500, train = the rest.
Labels come from ``articleType`` unless ``--label-columns`` names others.

    python data_scripts/prepare_fashion.py --source ../shared/data/fashion --out data/fashion
"""
from crossmodal.data.prepare import base_parser, prepare_main
from crossmodal.data.sources import read_fashion

if __name__ == "__main__":
    p = base_parser(__doc__)
    p.add_argument("--label-columns", default="articleType", help="comma-separated label columns")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    prepare_main(read_fashion, args, label_columns=args.label_columns.split(","), seed=args.seed)
