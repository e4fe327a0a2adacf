"""Reports: the text report, live progress, latency statistics."""
