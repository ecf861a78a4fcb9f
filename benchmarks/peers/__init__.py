"""The peers benchmark: metricls against TF-IDF linear, tree and frozen-embedding peers."""
