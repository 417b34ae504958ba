"""Flickr8k's original release -> crossmodal's dataset format (standard 6k/1k/1k split).

    python data_scripts/prepare_flickr8k.py --source ../shared/data/flickr8k --out data/flickr8k
"""
from crossmodal.data.prepare import base_parser, prepare_main
from crossmodal.data.sources import read_flickr8k

if __name__ == "__main__":
    args = base_parser(__doc__).parse_args()
    prepare_main(read_flickr8k, args)
