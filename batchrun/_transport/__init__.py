"""Transport: one HTTP attempt. ``client`` (send, map every failure onto batchrun.errors),
``responses`` (classify an answer; pure), ``streaming`` (SSE decoding and assembly)."""
