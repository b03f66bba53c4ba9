"""The monolith baseline answers every route the gateway has, through the same service class."""

from __future__ import annotations

from benchmarks.monolith import SERVICE_CLASSES
from serve_apps.gateway.descriptors import build_service_map, exposed, load_descriptor_set
from serve_apps.topology import SERVICES


def test_the_monolith_has_every_service_application() -> None:
    assert set(SERVICE_CLASSES) == set(SERVICES)


def test_every_exposed_rpc_has_its_method_in_the_monolith() -> None:
    for method in exposed(build_service_map(load_descriptor_set()).values()):
        assert method.app in SERVICE_CLASSES, method.full_name
        assert callable(getattr(SERVICE_CLASSES[method.app], method.name, None)), method.full_name
