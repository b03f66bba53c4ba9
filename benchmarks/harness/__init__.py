"""What the benchmarks share: a seeded local system, locust runs, probes, reports and plots."""
