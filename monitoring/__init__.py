"""Monitoring side of slicewise: per-slice drift, its Prometheus exporter, alerting, retraining."""
