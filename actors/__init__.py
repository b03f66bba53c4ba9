"""Long-lived Ray actors: fan-out pool, CDC relay, feed consumer, counter flusher."""
