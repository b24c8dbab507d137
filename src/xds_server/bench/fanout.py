"""Scenario 2, fan-out: N simulated ADS clients that behave like Envoy (subscribe to CDS and
LDS as wildcards and to EDS by the clusters' names; ACK every response), one weight change
through the admin API, time until all N have ACKed the new endpoints. SotW and Delta, on a
one-service config, and on a config of S services (``fanout_big_*``), where what a push
and an ACK cost per stream must not grow with S.

The server runs in its own process (``xds-server serve``); the clients share one event
loop in this one, each on its own connection (as N Envoys would be). The time includes the
clients' own work, so it is an upper bound on the server's. Server memory per idle stream
is the growth of the server's VmRSS from no client to N connected, synced and idle."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2

from ..translate import CLUSTER, ENDPOINT, LISTENER
from .common import HOST, BenchServer, config_yaml, route_yaml, rss_kib
from .stats import Figures, ms


class Client:
    def __init__(self, index: int, target: str, delta: bool, fleet: Fleet) -> None:
        self.node = base_pb2.Node(id=f"bench-{index}", cluster="bench")
        self.channel = grpc.aio.insecure_channel(
            target, options=[("grpc.use_local_subchannel_pool", 1)]
        )
        self.stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self.delta = delta
        self.fleet = fleet
        self.eds_version = ""
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        if self.delta:
            await self._run_delta()
        else:
            await self._run_sotw()

    async def _run_sotw(self) -> None:
        call = self.stub.StreamAggregatedResources()
        names: dict[str, list[str]] = {CLUSTER: [], LISTENER: []}
        for type_url in (CLUSTER, LISTENER):
            await call.write(discovery_pb2.DiscoveryRequest(node=self.node, type_url=type_url))
        while (resp := await call.read()) is not grpc.aio.EOF:
            t = resp.type_url
            if t == CLUSTER and ENDPOINT not in names:
                names[ENDPOINT] = sorted(_cluster_names(resp.resources))
                await call.write(
                    discovery_pb2.DiscoveryRequest(
                        type_url=ENDPOINT, resource_names=names[ENDPOINT]
                    )
                )
            await call.write(
                discovery_pb2.DiscoveryRequest(
                    type_url=t,
                    version_info=resp.version_info,
                    response_nonce=resp.nonce,
                    resource_names=names.get(t, []),
                )
            )
            if t == ENDPOINT:
                self._acked_eds(resp.version_info)

    async def _run_delta(self) -> None:
        call = self.stub.DeltaAggregatedResources()
        subscribed = False
        for type_url in (CLUSTER, LISTENER):
            await call.write(discovery_pb2.DeltaDiscoveryRequest(node=self.node, type_url=type_url))
        while (resp := await call.read()) is not grpc.aio.EOF:
            t = resp.type_url
            if t == CLUSTER and not subscribed:
                subscribed = True
                await call.write(
                    discovery_pb2.DeltaDiscoveryRequest(
                        type_url=ENDPOINT,
                        resource_names_subscribe=sorted(
                            _cluster_names(r.resource for r in resp.resources)
                        ),
                    )
                )
            await call.write(
                discovery_pb2.DeltaDiscoveryRequest(type_url=t, response_nonce=resp.nonce)
            )
            if t == ENDPOINT:
                self._acked_eds(resp.system_version_info or resp.nonce)

    def _acked_eds(self, version: str) -> None:
        if version != self.eds_version:
            self.eds_version = version
            self.fleet.acked()


def _cluster_names(resources: Iterable[any_pb2.Any]) -> list[str]:
    out: list[str] = []
    for any_msg in resources:
        cluster = cluster_pb2.Cluster()
        any_msg.Unpack(cluster)
        if cluster.type == cluster_pb2.Cluster.EDS:
            out.append(cluster.name)
    return out


class Fleet:
    """Counts EDS ACKs of a new version; ``done`` is set when all N clients have one."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.done = asyncio.Event()
        self.done_at = 0.0

    def reset(self) -> None:
        self.count = 0
        self.done.clear()

    def acked(self) -> None:
        self.count += 1
        if self.count >= self.n and not self.done.is_set():
            self.done_at = time.perf_counter()
            self.done.set()


async def _fanout(server: BenchServer, n: int, changes: int, delta: bool) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    admin = server.admin
    fleet = Fleet(n)
    rss_before = rss_kib(server.pid)
    clients = [Client(i, f"{HOST}:{server.xds_port}", delta, fleet) for i in range(n)]
    for c in clients:
        c.task = asyncio.create_task(c.run())
    await asyncio.wait_for(fleet.done.wait(), 120)  # everyone has the initial config
    await asyncio.sleep(0.5)  # idle
    rss_after = rss_kib(server.pid)
    samples: list[float] = []
    try:
        for i in range(changes):
            fleet.reset()
            doc = route_yaml(0, 30 + i % 40)
            started = time.perf_counter()
            await loop.run_in_executor(None, admin.apply, [("<bench>", doc)])
            await asyncio.wait_for(fleet.done.wait(), 60)
            samples.append(fleet.done_at - started)
    finally:
        for c in clients:
            if c.task:
                c.task.cancel()
        await asyncio.gather(*(c.task for c in clients if c.task), return_exceptions=True)
        await asyncio.gather(*(c.channel.close() for c in clients))
    p50, p99 = ms(samples)
    return {"p50": p50, "p99": p99, "rss_per_stream_kib": (rss_after - rss_before) / n}


def run(
    sizes: list[int],
    changes: int,
    big: tuple[int, int],
    say: Callable[[str], None] = print,
) -> Figures:
    """``sizes``: the N to run with a one-service config; ``big``: (N, S), the same on a
    config of S services (what a push costs per stream when the config is large)."""
    # One event loop for every run: grpc.aio stays bound to the loop it first ran on.
    return asyncio.run(_run(sizes, changes, big, say))


async def _run(
    sizes: list[int], changes: int, big: tuple[int, int], say: Callable[[str], None]
) -> Figures:
    # The figures by N, filled in below: out starts with these dicts (the table's order).
    by_n: dict[str, dict[str, float]] = {
        "fanout_all_acked_ms_p50": {},
        "fanout_all_acked_ms_p99": {},
        "fanout_delta_all_acked_ms_p50": {},
        "fanout_delta_all_acked_ms_p99": {},
    }
    out: Figures = {**by_n}
    for delta in (False, True):
        prefix, api = ("fanout_delta", "Delta") if delta else ("fanout", "SotW")
        for n in sizes:
            with BenchServer() as server:  # a fresh server: its RSS is this N's alone
                server.admin.apply([("<bench>", config_yaml(1))])
                r = await _fanout(server, n, changes, delta)
            by_n[f"{prefix}_all_acked_ms_p50"][str(n)] = r["p50"]
            by_n[f"{prefix}_all_acked_ms_p99"][str(n)] = r["p99"]
            if n == max(sizes):
                key = "server_rss_per_stream_kib" + ("_delta" if delta else "")
                out[key] = r["rss_per_stream_kib"]
            say(f"fan-out {api} N={n}: all ACKed p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms")
        n, services = big
        with BenchServer() as server:
            server.admin.apply([("<bench>", config_yaml(services))])
            r = await _fanout(server, n, changes, delta)
        prefix = "fanout_big_delta" if delta else "fanout_big"
        out[f"{prefix}_all_acked_ms_p50"], out[f"{prefix}_all_acked_ms_p99"] = r["p50"], r["p99"]
        say(
            f"fan-out {api} N={n}, S={services}: all ACKed p50 {r['p50']:.1f} ms, "
            f"p99 {r['p99']:.1f} ms"
        )
    out["fanout_big_clients"], out["fanout_big_services"] = big
    return out
