"""Reading items (texts, features, labels) from files, label vocabularies and splits."""

from metricls.data.items import SUPPORTED_SUFFIXES, Items, read_items, resolve_dataset
from metricls.data.labels import LabelVocab
from metricls.data.splits import SPLITS, md5_split

__all__ = ["SPLITS", "SUPPORTED_SUFFIXES", "Items", "LabelVocab", "md5_split", "read_items",
           "resolve_dataset"]
