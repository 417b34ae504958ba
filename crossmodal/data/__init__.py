"""Data: one on-disk format for every source, and readers that produce it.

A prepared dataset is a ``datasets.DatasetDict`` saved with ``save_to_disk``: one
dataset per split (``train``, ``dev``, ``test``) with the columns

* ``id`` (str): a stable item id (e.g. the image file name),
* ``image`` (``datasets.Image``): the original encoded bytes,
* ``captions`` (list of str): one or more captions,
* ``labels`` (list of str): zero or more class labels (label-based relevance).
"""
from .format import (COLUMNS, PrepareReport, build_dataset_dict, load_prepared, open_image_checked,
                     write_prepared)

__all__ = ["COLUMNS", "PrepareReport", "build_dataset_dict", "load_prepared", "open_image_checked", "write_prepared"]
