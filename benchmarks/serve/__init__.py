"""The serve benchmark: throughput and latency of `metricls serve` under load."""
