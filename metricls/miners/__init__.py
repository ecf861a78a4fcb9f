"""Multi-label miners returning PML ``indices_tuple`` for losses called with ``labels=None``."""

from metricls.miners.base import MultiLabelMiner, pairs_to_triplets
from metricls.miners.label import LabelMiner
from metricls.miners.shared_label import SharedLabelMiner

__all__ = ["LabelMiner", "MultiLabelMiner", "SharedLabelMiner", "pairs_to_triplets"]
