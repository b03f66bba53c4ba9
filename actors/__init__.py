"""Long-lived Ray actors: the pipeline supervisor, CDC relay, feed consumer, fan-out pool and
counter flusher."""
