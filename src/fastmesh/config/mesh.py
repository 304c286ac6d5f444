"""The loaded config: every object with the document it came from, and the proxy settings."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from fastmesh.config.model import (
    EndpointSlice,
    FaultInjection,
    HTTPRoute,
    KubeObject,
    Proxy,
    ProxySpec,
    Service,
    TrafficPolicy,
)

T = TypeVar("T", bound=KubeObject)


def doc_label(kind: str, namespace: str | None, name: str | None) -> str:
    """`HTTPRoute default/reviews`, as far as the document could be read."""
    if name is None:
        return f"{kind} <unnamed>"
    return f"{kind} {namespace or 'default'}/{name}"


@dataclass(frozen=True)
class Document:
    """One object and where it is in the file."""

    index: int
    """1-based position of the YAML document."""
    obj: KubeObject

    @property
    def label(self) -> str:
        return doc_label(self.obj.KIND, self.obj.namespace, self.obj.name)


@dataclass(frozen=True)
class MeshConfig:
    """A valid config. Build it with `load_file` / `load_text`; compile it with `compile_snapshot`."""

    source: str
    """The file it was read from."""
    documents: tuple[Document, ...]
    """Every object, in file order."""
    own_namespace: str | None = None
    """The namespace the proxy runs in (`--namespace`); None: the Proxy document's, else `default`."""
    _by_kind: dict[type[KubeObject], tuple[KubeObject, ...]] = field(init=False, repr=False, compare=False)
    _services: dict[tuple[str, str], Service] = field(init=False, repr=False, compare=False)
    _proxy: ProxySpec = field(init=False, repr=False, compare=False)
    _policies: dict[tuple[str, str, int | None], TrafficPolicy] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Indexes built once: checks and compile look objects up per route, so a scan of the
        # documents on each lookup would make them quadratic in the size of the file.
        by_kind: dict[type[KubeObject], list[KubeObject]] = {}
        for doc in self.documents:
            by_kind.setdefault(type(doc.obj), []).append(doc.obj)
        object.__setattr__(self, "_by_kind", {kind: tuple(objs) for kind, objs in by_kind.items()})
        services: dict[tuple[str, str], Service] = {}
        for s in self.objects(Service):
            services.setdefault((s.namespace, s.name), s)  # a duplicate is an error; the first one counts
        object.__setattr__(self, "_services", services)
        proxy = next((p.spec for p in self.objects(Proxy)), None)  # a second Proxy is an error
        object.__setattr__(self, "_proxy", proxy if proxy is not None else ProxySpec())
        policies: dict[tuple[str, str, int | None], TrafficPolicy] = {}
        for p in self.objects(TrafficPolicy):
            target = p.spec.target_ref
            name = target.name if target.kind == "Service" else f"HTTPRoute/{target.name}"
            policies.setdefault((p.namespace, name, target.port), p)
        object.__setattr__(self, "_policies", policies)

    def with_objects(
        self, kind: type[KubeObject], documents: tuple[Document, ...], objects: tuple[KubeObject, ...]
    ) -> MeshConfig:
        """This config with `documents`, which differ from its own only in the `objects` of `kind` (not a
        Service, Proxy or TrafficPolicy: their indexes are kept); without building the indexes again."""
        assert kind not in (Service, Proxy, TrafficPolicy)
        new = copy.copy(self)
        object.__setattr__(new, "documents", documents)
        object.__setattr__(new, "_by_kind", {**self._by_kind, kind: objects})
        return new

    def objects(self, kind: type[T]) -> Iterator[T]:
        """The objects of one kind (its exact class: the kinds have no subclasses), in file order."""
        return iter(self._by_kind.get(kind, ()))  # type: ignore[arg-type]

    @property
    def proxy(self) -> ProxySpec:
        """Proxy settings: the Proxy document's spec, or every default when there is none."""
        return self._proxy

    @property
    def namespace(self) -> str:
        """The proxy's own namespace: GAMMA consumer routes of this namespace apply to its callers."""
        if self.own_namespace is not None:
            return self.own_namespace
        proxy = next(self.objects(Proxy), None)
        return proxy.namespace if proxy is not None else "default"

    @property
    def services(self) -> list[Service]:
        return list(self.objects(Service))

    @property
    def routes(self) -> list[HTTPRoute]:
        return list(self.objects(HTTPRoute))

    @property
    def endpoint_slices(self) -> list[EndpointSlice]:
        return list(self.objects(EndpointSlice))

    def service(self, namespace: str, name: str) -> Service | None:
        return self._services.get((namespace, name))

    def traffic_policy(self, namespace: str, name: str, port: int) -> TrafficPolicy | None:
        """The TrafficPolicy of a Service port: the one naming the port, else the one naming the Service."""
        return self._policies.get((namespace, name, port)) or self._policies.get((namespace, name, None))

    def route_policy(self, route: HTTPRoute) -> TrafficPolicy | None:
        """The TrafficPolicy targeting an HTTPRoute."""
        return self._policies.get((route.namespace, f"HTTPRoute/{route.name}", None))

    def fault_injection(self, namespace: str, name: str) -> FaultInjection | None:
        return next((f for f in self.objects(FaultInjection) if (f.namespace, f.name) == (namespace, name)), None)

    def summary(self) -> str:
        """`2 HTTPRoutes, 3 Services, ...` for `fastmesh validate`."""
        counts: dict[str, int] = {}
        for doc in self.documents:
            counts[doc.obj.KIND] = counts.get(doc.obj.KIND, 0) + 1
        parts = [f"{n} {kind}{'' if n == 1 else 's'}" for kind, n in counts.items()]
        return ", ".join(parts) or "no objects"


def document_count(cfg: MeshConfig) -> int:
    """How many objects the config holds (empty YAML documents not counted)."""
    return len(cfg.documents)
