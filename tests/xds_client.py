"""A hand-driven xDS client for the protocol tests: SotW or Delta, ADS or one per-type
service. Requests go out when the test says so; responses are read with a timeout.

To show that something is *not* sent, a test triggers a later, different push and checks
that this one comes next (the server handles each stream's events in order); nothing here
waits on the clock for an absence.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Mapping

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.service.cluster.v3 import cds_pb2_grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.endpoint.v3 import eds_pb2_grpc
from envoy.service.listener.v3 import lds_pb2_grpc
from google.protobuf import any_pb2, struct_pb2
from google.rpc import status_pb2

from xds_server.translate import CLUSTER, ENDPOINT, LISTENER

MESSAGES = {
    LISTENER: listener_pb2.Listener,
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
}
SERVICES = {
    "ADS": (ads_pb2_grpc.AggregatedDiscoveryServiceStub, "AggregatedResources"),
    "LDS": (lds_pb2_grpc.ListenerDiscoveryServiceStub, "Listeners"),
    "CDS": (cds_pb2_grpc.ClusterDiscoveryServiceStub, "Clusters"),
    "EDS": (eds_pb2_grpc.EndpointDiscoveryServiceStub, "Endpoints"),
}


def unpack(any_msg: any_pb2.Any, type_url: str):
    msg = MESSAGES[type_url]()
    assert any_msg.Unpack(msg), any_msg.type_url
    return msg


def resource_name(any_msg: any_pb2.Any, type_url: str) -> str:
    msg = unpack(any_msg, type_url)
    return msg.cluster_name if type_url == ENDPOINT else msg.name


def names(response) -> list[str]:
    """Resource names in a SotW or Delta response, in order."""
    if isinstance(response, discovery_pb2.DeltaDiscoveryResponse):
        return [r.name for r in response.resources]
    return [resource_name(a, response.type_url) for a in response.resources]


def make_node(node_id: str, labels: Mapping[str, str] | None = None) -> base_pb2.Node:
    node = base_pb2.Node(id=node_id, cluster="test")
    if labels is not None:
        labels_struct = struct_pb2.Struct()
        labels_struct.update(dict(labels))
        node.metadata.fields["labels"].struct_value.CopyFrom(labels_struct)
    return node


class XdsClient:
    def __init__(
        self,
        port: int,
        node_id: str = "test-proxy",
        *,
        delta: bool = False,
        service: str = "ADS",
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self.delta = delta
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.node = make_node(node_id, labels)
        stub_class, suffix = SERVICES[service]
        stub = stub_class(self.channel)
        prefix = "Delta" if delta else "Stream"
        method = getattr(stub, prefix + suffix)
        self._requests: queue.Queue = queue.Queue()
        self._responses: queue.Queue = queue.Queue()
        self.call = method(iter(self._requests.get, None))
        threading.Thread(target=self._read, daemon=True).start()
        self.first = True
        self.last: dict[str, object] = {}

    def _read(self) -> None:
        try:
            for response in self.call:
                self._responses.put(response)
        except grpc.RpcError as e:
            self._responses.put(e)

    def _send(self, req) -> None:
        if self.first:
            req.node.CopyFrom(self.node)
            self.first = False
        self._requests.put(req)

    def request(
        self,
        type_url: str,
        names: Iterable[str] = (),
        nonce: str = "",
        version: str = "",
        error: str | None = None,
    ) -> None:
        """A SotW DiscoveryRequest."""
        req = discovery_pb2.DiscoveryRequest(
            type_url=type_url,
            resource_names=list(names),
            response_nonce=nonce,
            version_info=version,
        )
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=13, message=error))
        self._send(req)

    def subscribe(
        self,
        type_url: str,
        subscribe: Iterable[str] = (),
        unsubscribe: Iterable[str] = (),
        nonce: str = "",
        error: str | None = None,
        initial: Mapping[str, str] | None = None,
    ) -> None:
        """A DeltaDiscoveryRequest."""
        req = discovery_pb2.DeltaDiscoveryRequest(
            type_url=type_url,
            resource_names_subscribe=list(subscribe),
            resource_names_unsubscribe=list(unsubscribe),
            response_nonce=nonce,
            initial_resource_versions=dict(initial or {}),
        )
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=13, message=error))
        self._send(req)

    def recv(self, timeout: float = 5.0):
        item = self._responses.get(timeout=timeout)
        if isinstance(item, Exception):
            raise item
        self.last[item.type_url] = item
        return item

    def ack(self, response, names: Iterable[str] = ()) -> None:
        if self.delta:
            self.subscribe(response.type_url, nonce=response.nonce)
        else:
            self.request(response.type_url, names, response.nonce, response.version_info)

    def nack(self, response, message: str, names: Iterable[str] = (), version: str = "") -> None:
        if self.delta:
            self.subscribe(response.type_url, nonce=response.nonce, error=message)
        else:
            self.request(response.type_url, names, response.nonce, version, error=message)

    def close(self) -> None:
        self._requests.put(None)
        self.channel.close()

    def __enter__(self) -> XdsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
