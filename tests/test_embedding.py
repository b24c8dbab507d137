"""The public embedding API: all-or-nothing applies, kubectl-like answers, both flavours."""

from __future__ import annotations

import asyncio
import gc

import pytest

import xds_server
from xds_server import ConfigError, ControlPlane
from xds_server.lab.lab import SAMPLES
from xds_server.translate import ENDPOINT, LISTENER

SERVICES = (SAMPLES / "tcp-echo-services.yaml").read_text()
ALL_V1 = (SAMPLES / "tcp-echo-all-v1.yaml").read_text()
V2_20 = (SAMPLES / "tcp-echo-20-v2.yaml").read_text()


def test_apply_answers_like_kubectl():
    with ControlPlane.start_in_thread() as cp:
        cp.apply_yaml(SERVICES)
        first = [str(c) for c in cp.apply_yaml(ALL_V1)]
        assert first == [
            "gateway.networking.istio.io/tcp-echo-gateway created",
            "destinationrule.networking.istio.io/tcp-echo-destination created",
            "virtualservice.networking.istio.io/tcp-echo created",
        ]
        again = [c.action for c in cp.apply_yaml(ALL_V1)]
        assert again == ["unchanged"] * 3
        assert [str(c) for c in cp.apply_yaml(V2_20)] == [
            "virtualservice.networking.istio.io/tcp-echo configured"
        ]
        assert cp.get("VirtualService", "tcp-echo").tcp[0].route[1].weight == 20


def test_bad_batch_changes_nothing():
    with ControlPlane.start_in_thread() as cp:
        cp.apply_yaml(SERVICES)
        cp.apply_yaml(ALL_V1)
        versions = cp.call(cp.cp.cache.versions)
        revision = cp.cp.store.revision
        # One good document and one with a dangling subset: neither may take effect.
        good = V2_20.replace("name: tcp-echo", "name: tcp-echo-b").replace("31400", "31401")
        bad = V2_20.replace("subset: v2", "subset: v9")
        with pytest.raises(ConfigError) as err:
            cp.apply_yaml(good + "\n---\n" + bad, "batch.yaml")
        assert "batch.yaml" in str(err.value) and "document 2" in str(err.value)
        assert "spec.tcp[0].route[1].destination.subset" in str(err.value)
        assert cp.cp.store.revision == revision
        assert cp.call(cp.cp.cache.versions) == versions
        assert cp.get("VirtualService", "tcp-echo-b") is None


def test_async_api_and_delete():
    async def main() -> None:
        async with ControlPlane(xds_port=0) as cp:
            assert cp.port
            cp.apply_yaml(SERVICES)
            cp.apply_yaml(ALL_V1)
            assert cp.cache.snapshot(LISTENER).entries
            changes = cp.delete("VirtualService", "tcp-echo")
            assert [str(c) for c in changes] == [
                "virtualservice.networking.istio.io/tcp-echo deleted"
            ]
            assert not cp.cache.snapshot(LISTENER).entries
            assert not cp.cache.snapshot(ENDPOINT).entries

    asyncio.run(main())


def test_public_names():
    for name in xds_server.__all__:
        assert getattr(xds_server, name) is not None


def test_the_collector_is_paused_during_a_change_and_back_after():
    """A config change runs with the cyclic GC paused (it walked the growing heap of a big
    config for a quarter of the time), and it is on again afterwards, even after an error;
    a program that turned it off itself keeps it off."""
    cp = ControlPlane()
    seen = []
    real = cp.store.apply
    cp.store.apply = lambda *a, **k: seen.append(gc.isenabled()) or real(*a, **k)
    assert gc.isenabled()
    cp.apply_yaml(SAMPLES.joinpath("tcp-echo-services.yaml").read_text())
    with pytest.raises(ConfigError):
        cp.apply_yaml(SAMPLES.joinpath("tcp-echo-20-v2.yaml").read_text())  # no gateway
    assert seen == [False, False] and gc.isenabled()
    gc.disable()
    try:
        cp.apply_yaml(SAMPLES.joinpath("tcp-echo-services.yaml").read_text())
        assert not gc.isenabled()
    finally:
        gc.enable()
