"""Any Hugging Face ``datasets`` dataset (a save_to_disk folder, or a hub name with a
network) -> crossmodal's dataset format.

    python data_scripts/prepare_hf.py --source path/or/name --out data/x --caption-column caption
"""
from crossmodal.data.prepare import base_parser, prepare_main
from crossmodal.data.sources import read_hf

if __name__ == "__main__":
    p = base_parser(__doc__, source_help="a folder written by datasets' save_to_disk, or a hub name (needs a "
                                         "network)")
    p.add_argument("--image-column", default="image")
    p.add_argument("--caption-column", default="captions")
    p.add_argument("--label-column", default=None)
    p.add_argument("--id-column", default=None)
    args = p.parse_args()
    prepare_main(read_hf, args, image_column=args.image_column, caption_column=args.caption_column,
                label_column=args.label_column, id_column=args.id_column)
