"""Locust users for Serve's own ceiling: the bare deployment or ingress + one handle hop.

CEILING_PATH selects the target (/bare or /hop), so the ceiling is measured with the same load
generator, user count and duration as the product.
"""

from __future__ import annotations

import os

from locust import FastHttpUser, task

PATH = os.environ.get("CEILING_PATH", "/bare")


class CeilingUser(FastHttpUser):
    @task
    def call(self) -> None:
        self.client.get(PATH, name=f"GET {PATH}")
