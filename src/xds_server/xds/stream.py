"""One xDS stream's state machine, shared by every flavour we serve.

State of the world (SotW) and Delta, over ADS or over a per-type service (LDS, CDS, EDS),
are the same stream with two wire formats: a per-type service is a stream restricted to one
type URL. Everything else is one piece of code: subscriptions, ACK/NACK, what each type
should carry now (``target``), push ordering, and status.

**State and status.** The stream owns its state: one ``TypeState`` per type it was asked
for (subscription, what was sent and ACKed, versions, nonce, counters), changed only by
``on_request`` and ``responses``, which run one at a time; requests and cache changes go
in, responses come out, no I/O here. What status readers see (status.py) is a snapshot of
it, ``Stream.status()``, taken on demand with each type's state (SYNCED, STALE, ...) worked
out against what the proxy should have at that moment. A snapshot shares the stream's
mappings and name sets: those are replaced, never changed in place.

**What a type carries.** ``desired``: the resources of the proxy's group (see cache.py) that
its subscription covers (all for a wildcard, else the names it asked for: resources a proxy
did not ask for are never sent). ``target`` adds the removals that are held back (below).
A response's version is the content hash of exactly what it carries, so a type is sent
only when that content or the subscription changes, and a proxy that reconnects with the
version it has is sent nothing. SotW sends the whole target; Delta sends the resources whose
version differs from what the proxy has (``initial_resource_versions`` on reconnect seed
that) and ``removed_resources`` for what left the target.

**Ordering, additions (make before break).** Types are evaluated in CDS -> EDS -> LDS order
and a push of a type waits while an earlier type has a response that is neither ACKed nor
NACKed. So a listener that names a new cluster is sent only after the proxy answered the
cluster and its endpoints. Responses to a change in what the proxy asks for are not held:
the proxy asked.

**Ordering, removals (the other way round).** A resource leaves a type's target only when
no resource of the referring type that the proxy has or was sent still needs it
(translate/refs.py: listener -> clusters, EDS cluster -> its endpoints). Until then it is
kept, in the version the proxy runs. Removing a route therefore goes: LDS without the
listener; after that is ACKed, CDS without the cluster; after that (and after the proxy
stopped asking for it), EDS without the endpoints. "Has" counts the last ACKed and the last
sent state, so a NACKed listener (the proxy keeps its old one) still protects its clusters.
Per-type services carry one type per stream and so cannot order across types (the xDS
spec says the same: only ADS can sequence); there, as with any control plane, a listener
may arrive before its cluster and refuse connections for that moment.

**Cluster updates resend their endpoints.** Envoy warms an updated EDS cluster until it gets
its ClusterLoadAssignment again, even an unchanged one, and answers the CDS response only
when the cluster is warm (else both wait for ``initial_fetch_timeout``, 15 s;
go-control-plane #245). So when a CDS response changes a cluster the proxy was sent, the
endpoints that cluster names follow it at once, not held behind the unanswered CDS (Envoy
takes a stream's responses in order, so the cluster is warming when they arrive): SotW
carries them with the changed ones under the same version, Delta as resources. What Envoy
sends for it: in SotW ADS it repeats its EDS request (same names, version and nonce), which
asks for nothing new and is answered by that push; in Delta ADS nothing; without ADS each
updated cluster subscribes on a new EDS stream, answered as any first request.

**Empty SotW subscriptions.** A SotW request naming nothing of a type asked for by name
(Envoy's EDS once its last EDS cluster is gone) is not answered: Envoy takes a response to
a type it watches nothing of without a word, so the push would stay unanswered (STALE, and
a push -> ACK time that ends only at the next change). The proxy has nothing: synced.

**NACK.** Recorded with the proxy's text (status, metrics, log). Nothing is resent: in SotW
the rejected target keeps its version, in Delta the proxy's state is taken as sent, so
there is no difference to send until the config changes; the next change is pushed
normally. The proxy keeps its last accepted config, and the removal rule above protects it.

**Nonces.** A SotW request whose nonce is not the latest one sent for its type is ignored
whole: the proxy will send another request when the latest response arrives. In Delta,
subscriptions are changes that must not be lost, so a stale nonce only voids the ACK part.
Only the answer to the latest response is an ACK or NACK; a later request on the same
nonce is a subscription change. A nonce on a type not yet answered on this stream (one
from an earlier stream) is neither.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from ..translate import (
    CLUSTER,
    ENDPOINT,
    PUSH_ORDER,
    REFERS_TO,
    SHORT_NAMES,
    WILDCARD_TYPES,
    NodeProfile,
)
from .cache import (
    EMPTY_VERSION,
    Entry,
    Group,
    SnapshotCache,
    TypeSnapshot,
    changed_entries,
    content_version,
)
from .status import ProxyStatus, TypeStatus, client_version, shorten

if TYPE_CHECKING:
    from .metrics import XdsMetrics

log = logging.getLogger("xds_server.xds")

# The Envoy API modules have no type information: to mypy these are Any.
Request: TypeAlias = "discovery_pb2.DiscoveryRequest | discovery_pb2.DeltaDiscoveryRequest"
Response: TypeAlias = "discovery_pb2.DiscoveryResponse | discovery_pb2.DeltaDiscoveryResponse"


class StreamError(ValueError):
    """A request this stream cannot serve (wrong type URL for a per-type service)."""


def node_profile(node: base_pb2.Node | None, *, transport: str = "ADS") -> NodeProfile:
    """How a node is translated for: its labels (``metadata.labels``, or Istio's
    ``LABELS``; absent: every Gateway), whether it is a gRPC library client (its
    user agent says gRPC, or Istio's ``GENERATOR: grpc``), and its transport."""
    if node is None:
        return NodeProfile(transport=transport)
    fields = node.metadata.fields
    labels = None
    for key in ("labels", "LABELS"):
        if key in fields and fields[key].HasField("struct_value"):
            labels = {k: _text(v) for k, v in fields[key].struct_value.fields.items()}
            break
    proxyless = node.user_agent_name.startswith("gRPC") or (
        "GENERATOR" in fields and fields["GENERATOR"].string_value == "grpc"
    )
    # A bootstrap whose cluster for the control plane is not the server's --xds-cluster
    # says its name, or the clusters sent to it name one it does not have (a CDS NACK).
    xds_cluster = fields["xds_cluster"].string_value if "xds_cluster" in fields else ""
    return NodeProfile.of(
        labels, proxyless=proxyless, transport=transport, xds_cluster=xds_cluster or None
    )


def _text(value: Any) -> str:
    """A ``google.protobuf.Value`` as a label's text."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return str(value.string_value)
    if kind == "number_value":
        n: float = value.number_value
        return str(int(n)) if n.is_integer() else str(n)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    return ""


def _covers(names: AbstractSet[str], entries: Mapping[str, Entry]) -> bool:
    """Whether ``names`` asks for every one of ``entries`` (as Envoy's EDS request names
    every cluster): then the subscription is the whole snapshot."""
    return len(names) >= len(entries) and all(n in names for n in entries)


@dataclass(slots=True, eq=False)
class TypeState:
    """The stream's state for one type URL. Its mappings and name sets are replaced, never
    changed in place (they may be a snapshot's, shared by every stream of a group), so
    that ``Stream.status()`` can share them too."""

    subscribed: bool = False
    wildcard: bool = False
    explicit: AbstractSet[str] = frozenset()  # asked for by name
    # The proxy's state once it applied our last response, and at its last ACK.
    sent: Mapping[str, Entry] = field(default_factory=dict)
    acked: Mapping[str, Entry] = field(default_factory=dict)
    sent_version: str | None = None
    acked_version: str | None = None
    nonce: str | None = None  # of the last response
    in_flight: bool = False  # sent and neither ACKed nor NACKed yet
    sent_at: float | None = None  # monotonic, for push -> ACK latency
    nack: str | None = None  # the proxy's error text for sent_version
    last_change: float | None = None  # wall-clock time of the last push, ACK or NACK
    pushes: int = 0
    last_resources: int = 0  # resources in the last response (Delta: the changed ones)
    acks: int = 0
    nacks: int = 0
    stale_nonces: int = 0  # requests ignored (SotW) or ACKs voided (Delta) for an old nonce

    def wants(self, name: str) -> bool:
        return self.wildcard or name in self.explicit


class Stream:
    """One stream: its identity, its ``TypeState`` per type, driven by requests and cache
    changes, one at a time."""

    def __init__(
        self,
        cache: SnapshotCache,
        opened: ProxyStatus,
        *,
        delta: bool,
        types: tuple[str, ...] | None = None,
        metrics: XdsMetrics | None = None,
    ) -> None:
        """``opened``: the stream as known before its first request (stream id, peer, API,
        time); the node comes with the first request."""
        self.cache = cache
        self.stream_id = opened.stream_id
        self.peer = opened.peer
        self.api = opened.api
        self.connected_since = opened.connected_since
        self.node = opened.node
        self.node_id = opened.node_id
        self.node_cluster = opened.node_cluster
        self.delta = delta
        self.types = types  # None: ADS, any type
        self.metrics = metrics
        self.group: Group | None = None
        self._group_name = opened.group  # the profile's text, for status
        self._state: dict[str, TypeState] = {}  # by type URL, in order of first request
        self.force: set[str] = set()  # types that must be answered now
        self.new_names: dict[str, set[str]] = {}  # Delta: just subscribed, maybe missing
        # Endpoints to send again though unchanged: see "Cluster updates" above.
        self._eds_resend: set[str] = set()
        self._nonces = 0
        self._status: ProxyStatus | None = None  # the last snapshot: see status()

    # --- identity --------------------------------------------------------------------------

    def _identify(self, node: base_pb2.Node | None) -> None:
        if self.group is not None:
            return
        if node is not None:
            self.node = node
            self.node_id = node.id
            self.node_cluster = node.cluster
        transport = "ADS" if self.types is None else "DELTA_GRPC" if self.delta else "GRPC"
        profile = node_profile(node, transport=transport)
        self.group = self.cache.acquire(profile)
        self._group_name = str(profile)
        log.info(
            "%s connected (%s, %s, %s)",
            self.node_id or self.peer,
            self.api,
            client_version(self.node) or "unknown client",
            profile,
        )

    @property
    def ready(self) -> bool:
        return self.group is not None and self.group.ready

    def close(self) -> None:
        self._status = None
        if self.group is not None:
            self.cache.release(self.group)
            self.group = None

    def _type_url(self, type_url: str) -> str:
        if self.types is None:
            if not type_url:
                raise StreamError("type_url is required on an aggregated (ADS) stream")
            return type_url
        type_url = type_url or self.types[0]
        if type_url not in self.types:
            raise StreamError(f"this service serves {', '.join(self.types)}, not {type_url}")
        return type_url

    # --- status ----------------------------------------------------------------------------

    def status(self) -> ProxyStatus:
        """What is reported of this stream now: a snapshot, each type's state worked out
        against what the proxy should have now. It shares the stream's mappings (replaced,
        never changed in place), so it costs no copy of them. What it is made of changes
        only with a request, a response or a new snapshot of the group (which the cache
        installs as a new mapping): until then the last one is still true and is returned
        again, so that a board polled on every status change while nothing changed (a test
        waiting over 1000 streams) does not remake them."""
        snapshots = self.group.types if self.group is not None else None
        status = self._status  # None since the last request or response
        if status is None or status.snapshots is not snapshots:  # or the group has new ones
            status = self._status = self._take_status(snapshots)
        return status

    def _take_status(self, snapshots: Mapping[str, TypeSnapshot] | None) -> ProxyStatus:
        return ProxyStatus(
            stream_id=self.stream_id,
            peer=self.peer,
            node_id=self.node_id,
            node_cluster=self.node_cluster,
            connected_since=self.connected_since,
            types={t: self._report(t, st) for t, st in self._state.items()},
            api=self.api,
            node=self.node,
            group=self._group_name,
            snapshots=snapshots,
        )

    def _report(self, type_url: str, st: TypeState) -> TypeStatus:
        desired = self.desired(type_url)
        return TypeStatus(
            wildcard=st.wildcard,
            explicit=st.explicit,
            sent=st.sent,
            acked=st.acked,
            sent_version=st.sent_version,
            acked_version=st.acked_version,
            nonce=st.nonce,
            in_flight=st.in_flight,
            nack=st.nack,
            last_change=st.last_change,
            pushes=st.pushes,
            last_resources=st.last_resources,
            acks=st.acks,
            nacks=st.nacks,
            stale_nonces=st.stale_nonces,
            desired=desired,
            current_version=self._version(type_url, desired),
        )

    # --- requests --------------------------------------------------------------------------

    def on_request(self, req: Request) -> bool:
        """Take a DiscoveryRequest (SotW) or DeltaDiscoveryRequest; True if it changed
        anything (so the status board should wake its waiters)."""
        self._status = None
        if self.delta:
            return self._on_delta(req)
        return self._on_sotw(req)

    def _begin(self, req: Request) -> tuple[str, TypeState, bool]:
        """What every request starts with, SotW or Delta: the node, the type's state, and
        the ACK/NACK part. Returns (type URL, state, whether the nonce was stale)."""
        type_url = self._type_url(req.type_url)
        self._identify(req.node if req.HasField("node") else None)
        st = self._state.get(type_url)
        if st is None:
            st = self._state[type_url] = TypeState()
        if req.response_nonce and st.nonce is not None:
            if req.response_nonce != st.nonce:
                self._stale(type_url, st, req.response_nonce)
                return type_url, st, True
            if st.in_flight:  # else a later request on the same nonce: names, not an answer
                self._answer(type_url, st, req)
        return type_url, st, False

    def _on_sotw(self, req: discovery_pb2.DiscoveryRequest) -> bool:
        type_url, st, stale = self._begin(req)
        if stale:
            return False
        names = set(req.resource_names)
        wildcard = "*" in names or (not names and type_url in WILDCARD_TYPES)
        names.discard("*")
        if not st.subscribed or wildcard != st.wildcard or names != st.explicit:
            first = not st.subscribed
            st.subscribed, st.wildcard, st.explicit = True, wildcard, self._shared(type_url, names)
            if not wildcard and not names:
                # Asks for nothing (see "Empty SotW subscriptions"): has nothing, answered.
                st.sent = st.acked = {}
                st.sent_version = st.acked_version = EMPTY_VERSION
                st.in_flight = False
            elif (
                first
                and req.version_info
                and self.ready
                and req.version_info == self.desired_version(type_url)
            ):
                # A reconnecting proxy that already has exactly this: nothing to send.
                st.sent = st.acked = self.desired(type_url)
                st.sent_version = st.acked_version = req.version_info
            else:
                self.force.add(type_url)
        return True

    def _on_delta(self, req: discovery_pb2.DeltaDiscoveryRequest) -> bool:
        # A stale nonce voids only the ACK part: subscription changes must not be lost.
        type_url, st, _stale = self._begin(req)
        subscribe = set(req.resource_names_subscribe)
        unsubscribe = set(req.resource_names_unsubscribe)
        new = (subscribe - {"*"}) - st.explicit
        if not st.subscribed:
            # Legacy wildcard: a first request naming nothing means everything.
            st.subscribed, st.wildcard = True, not subscribe or "*" in subscribe
            current = self.group.snapshot(type_url).entries if self.group else {}
            has: dict[str, Entry] = {}
            for name, version in req.initial_resource_versions.items():
                entry = current.get(name)
                if entry is None or entry.version != version:
                    entry = Entry(name, version, None)  # what the proxy has, content unknown
                has[name] = entry
            if has:
                st.sent, st.acked = has, dict(has)
            self.force.add(type_url)
        elif "*" in subscribe and not st.wildcard:
            st.wildcard = True
            self.force.add(type_url)
        if "*" in unsubscribe:
            st.wildcard = False
        if subscribe or unsubscribe:  # shared, like SotW's, when it names the whole snapshot
            st.explicit = self._shared(type_url, (st.explicit | subscribe) - unsubscribe - {"*"})
        if new:
            self.force.add(type_url)
            self.new_names.setdefault(type_url, set()).update(new)
        # The proxy forgets what it unsubscribed from: so do we. (In Delta a version is the
        # hash of the proxy's whole state of the type, so it changes with it.) Only an
        # unsubscription takes names away: an ACK looks at none.
        dropped = unsubscribe and [n for n in st.sent.keys() | st.acked.keys() if not st.wants(n)]
        if dropped:
            st.sent = {n: e for n, e in st.sent.items() if st.wants(n)}
            st.acked = {n: e for n, e in st.acked.items() if st.wants(n)}
            if st.sent_version is not None:
                st.sent_version = content_version(st.sent)
            if st.acked_version is not None:
                st.acked_version = content_version(st.acked)
        return bool(req.response_nonce) or bool(subscribe) or bool(unsubscribe)

    def _stale(self, type_url: str, st: TypeState, nonce: str) -> None:
        st.stale_nonces += 1
        log.debug(
            "%s %s: ignoring stale nonce %s",
            self.node_id,
            SHORT_NAMES.get(type_url, type_url),
            nonce,
        )

    def _answer(self, type_url: str, st: TypeState, req: Request) -> None:
        """The proxy answered our latest response of this type: an ACK or a NACK."""
        kind = SHORT_NAMES.get(type_url, type_url)
        st.in_flight = False
        st.last_change = time.time()
        if req.HasField("error_detail"):
            st.nack = shorten(req.error_detail.message)  # its head: a proxy may send MBs
            st.nacks += 1
            if self.metrics:
                self.metrics.rejected(kind)
            log.warning(
                "%s rejected %s version %s: %s",
                self.node_id,
                kind,
                st.sent_version,
                st.nack,
            )
        else:
            st.acked = st.sent
            st.acked_version = st.sent_version
            st.nack = None
            st.acks += 1
            if self.metrics and st.sent_at is not None:
                self.metrics.acked(kind, time.monotonic() - st.sent_at)

    # --- what the proxy should have --------------------------------------------------------

    def desired(self, type_url: str) -> Mapping[str, Entry]:
        """What the subscription covers in the group's current snapshot. Read-only: when it
        covers the whole snapshot it is the snapshot's own mapping, shared by every stream
        of the group (no per-stream copy, and its version is already known)."""
        st = self._state.get(type_url)
        if self.group is None or st is None:
            return {}
        snapshot = self.group.snapshot(type_url)
        entries = snapshot.entries
        if st.wildcard or st.explicit is snapshot.names or _covers(st.explicit, entries):
            return entries
        return {n: entries[n] for n in st.explicit if n in entries}

    def _shared(self, type_url: str, names: AbstractSet[str]) -> AbstractSet[str]:
        """The snapshot's own name set when a request names exactly it (as every Envoy's
        EDS request names every cluster): one copy per group, not one per stream."""
        if self.group is not None:
            every = self.group.snapshot(type_url).names
            if names == every:
                return every
        return frozenset(names)

    def _whole(self, type_url: str, target: Mapping[str, Entry]) -> TypeSnapshot | None:
        """The group's snapshot if ``target`` is all of it (the common case), so that what
        it has computed once (version, body, diff) serves every stream of the group."""
        snapshot = self.group.snapshot(type_url) if self.group is not None else None
        return snapshot if snapshot is not None and target is snapshot.entries else None

    def _version(self, type_url: str, target: Mapping[str, Entry]) -> str:
        whole = self._whole(type_url, target)
        return whole.version if whole is not None else content_version(target)

    def desired_version(self, type_url: str) -> str:
        """The version the proxy should end up with (a held removal is not there yet)."""
        return self._version(type_url, self.desired(type_url))

    def _needed(self, type_url: str) -> set[str]:
        """Names of ``type_url`` that resources the proxy has or was sent still need."""
        out: set[str] = set()
        for referrer, referred in REFERS_TO.items():
            st = self._state.get(referrer)
            if referred != type_url or st is None:
                continue
            for entry in (*st.sent.values(), *st.acked.values()):
                out |= entry.refs
        return out

    def target(self, type_url: str) -> Mapping[str, Entry]:
        """``desired`` plus the removals held back until nothing the proxy has needs them,
        kept in the version the proxy has (Delta: as sent, since it rolls nothing back)."""
        want = self.desired(type_url)
        st = self._state[type_url]
        whole = self._whole(type_url, want)
        if st.acked is st.sent and whole is not None:
            gone = whole.gone_since(st.sent)  # from the names the last change touched
        else:
            had = st.sent if st.acked is st.sent else st.sent.keys() | st.acked.keys()
            gone = [n for n in had if n not in want]
        if gone:
            needed = self._needed(type_url)
            first, second = (st.sent, st.acked) if self.delta else (st.acked, st.sent)
            held = {n: first.get(n) or second[n] for n in gone if n in needed and st.wants(n)}
            if held:
                want = {**want, **held}
        return want

    # --- responses -------------------------------------------------------------------------

    def _order(self) -> list[str]:
        others = sorted(t for t in self._state if t not in PUSH_ORDER)
        return [t for t in (*PUSH_ORDER, *others) if t in self._state]

    def responses(self) -> list[Response]:
        """What to send now, in push order, holding back pushes behind unanswered ones."""
        self._status = None
        out: list[Response] = []
        if not self.ready:
            return out  # its group's snapshots are on their way: answered when installed
        blocked = False
        for type_url in self._order():
            st = self._state[type_url]
            if not st.subscribed:
                continue
            forced = type_url in self.force
            # Endpoints an updated cluster waits for are not held behind it: Envoy answers
            # the CDS response only once the cluster is warm, which takes those endpoints.
            if forced or not blocked or (type_url == ENDPOINT and self._eds_resend):
                response = self._respond(type_url, st, forced)
                if response is not None:
                    out.append(response)
            if st.in_flight:
                blocked = True
        self.force.clear()
        return out

    def _respond(self, type_url: str, st: TypeState, forced: bool) -> Response | None:
        target = self.target(type_url)
        version = self._version(type_url, target)
        self._nonces += 1
        nonce = f"{self.stream_id}-{self._nonces}"
        again = self._resend(target) if type_url == ENDPOINT and self._eds_resend else []
        response: Response | None
        if self.delta:
            response = self._delta(type_url, st, target, version, nonce, forced, again)
        elif forced or again or version != st.sent_version:
            response = discovery_pb2.DiscoveryResponse(
                version_info=version,
                resources=self._sotw_body(type_url, st, target, forced, again),
                type_url=type_url,
                nonce=nonce,
            )
        else:
            response = None
        if response is None:
            self._nonces -= 1
            return None
        if type_url == CLUSTER and st.sent and (self.types is None or ENDPOINT in self.types):
            self._eds_resend |= self._updated_endpoints(st, target)
        st.sent, st.sent_version, st.nonce = target, version, nonce
        st.in_flight, st.sent_at, st.last_change = True, time.monotonic(), time.time()
        st.nack = None
        st.pushes += 1
        st.last_resources = len(response.resources)
        kind = SHORT_NAMES.get(type_url, type_url)
        if self.metrics:
            self.metrics.pushed(kind, self.api, response.ByteSize())
        removed = getattr(response, "removed_resources", ())
        log.debug(
            "%s <- %s version %s (%d resources%s, nonce %s)",
            self.node_id,
            kind,
            version,
            len(response.resources),
            f", {len(removed)} removed" if removed else "",
            nonce,
        )
        return response

    def _updated_endpoints(self, st: TypeState, target: Mapping[str, Entry]) -> set[str]:
        """The endpoints named by the clusters of ``target`` that the proxy was sent in
        another version: Envoy warms those clusters until it gets them again."""
        out: set[str] = set()
        for entry in self._changes(CLUSTER, st.sent, target):
            if entry.name in st.sent:
                out |= entry.refs
        return out

    def _resend(self, target: Mapping[str, Entry]) -> list[Entry]:
        """The endpoints to send again (see "Cluster updates"), those still in ``target``."""
        names, self._eds_resend = self._eds_resend, set()
        return [target[n] for n in sorted(names) if n in target]

    @staticmethod
    def _with(changed: list[Entry], again: list[Entry]) -> list[Entry]:
        """``changed`` plus the entries of ``again`` it lacks (a new list: ``changed`` may
        be a snapshot's memo)."""
        if not again:
            return changed
        have = {e.name for e in changed}
        return sorted([*changed, *(e for e in again if e.name not in have)], key=lambda e: e.name)

    def _sotw_body(
        self,
        type_url: str,
        st: TypeState,
        target: Mapping[str, Entry],
        forced: bool,
        again: list[Entry],
    ) -> Sequence[any_pb2.Any]:
        """Listeners and clusters: the whole state, as SotW requires for them. Endpoints:
        only what differs from what the proxy ACKed, as the protocol allows for types a
        proxy asks for by name (a proxy updates the ones a response carries and keeps the
        rest; Istio pushes EDS this way): one weight of 10k services is one assignment, not
        10k; ``again`` adds the ones an updated cluster needs. A request that asks again
        (``forced``) gets everything it asked for. (SotW entries are all packed: only a
        Delta proxy's ``initial_resource_versions`` make entries without content.)"""
        if type_url not in WILDCARD_TYPES and not forced and st.acked_version is not None:
            changed = self._with(self._changes(type_url, st.acked, target), again)
            if changed:
                return [a for e in changed if (a := e.any) is not None]
        whole = self._whole(type_url, target)
        if whole is not None:
            return whole.anys
        return [a for n in sorted(target) if (a := target[n].any) is not None]

    def _changes(
        self, type_url: str, old: Mapping[str, Entry], target: Mapping[str, Entry]
    ) -> list[Entry]:
        whole = self._whole(type_url, target)
        return whole.changed_since(old) if whole is not None else changed_entries(old, target)

    def _delta(
        self,
        type_url: str,
        st: TypeState,
        target: Mapping[str, Entry],
        version: str,
        nonce: str,
        forced: bool,
        again: list[Entry],
    ) -> discovery_pb2.DeltaDiscoveryResponse | None:
        changed = self._with(self._changes(type_url, st.sent, target), again)
        whole = self._whole(type_url, target)
        gone = whole.gone_since(st.sent) if whole is not None else st.sent.keys() - target.keys()
        removed = sorted(gone)
        # Names just subscribed to that do not exist: say so, or the proxy waits for them.
        missing = self.new_names.pop(type_url, set()) - target.keys() - set(removed)
        removed += sorted(missing)
        if not (forced or changed or removed):
            return None
        return discovery_pb2.DeltaDiscoveryResponse(
            system_version_info=version,
            resources=[
                discovery_pb2.Resource(name=e.name, version=e.version, resource=e.any)
                for e in changed
            ],
            type_url=type_url,
            removed_resources=removed,
            nonce=nonce,
        )
