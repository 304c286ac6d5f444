"""What every config kind shares: strict frozen models, Kubernetes metadata, the object envelope."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from fastmesh.config.model.types import Doc, DNSLabel, ObjectName

_COMMON = ConfigDict(
    frozen=True,
    strict=True,  # `weight: "50"` is a mistake, not a number
    alias_generator=to_camel,
    validate_by_alias=True,
    validate_by_name=False,  # YAML spells fields in camelCase only
    serialize_by_alias=True,
    use_attribute_docstrings=True,  # each field's docstring is its documentation
)


class Spec(BaseModel):
    """A part of a spec: unknown fields are errors, so typos are caught."""

    model_config = ConfigDict(**_COMMON, extra="forbid")


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


class ObjectMeta(BaseModel):
    """Kubernetes metadata. Fields not listed (uid, resourceVersion, managedFields...) are ignored."""

    model_config = ConfigDict(**_COMMON, extra="ignore")

    name: ObjectName
    """Object name."""
    namespace: DNSLabel = "default"
    """Namespace; references without a namespace look in the referring object's namespace."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Labels. EndpointSlices name their Service with `kubernetes.io/service-name`."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations. Services read `fastmesh.io/load-balancer` and `fastmesh.io/service-account`."""
    creation_timestamp: Annotated[
        datetime | None, Field(strict=False), AfterValidator(_utc), Doc("RFC 3339 timestamp")
    ] = None
    """Orders routes of equal precedence: the oldest wins. Routes without one count as newest."""


class KubeObject(BaseModel):
    """The envelope of a document: apiVersion, kind, metadata, and a `status` that is ignored."""

    model_config = ConfigDict(**_COMMON, extra="forbid")

    API_VERSION: ClassVar[str]
    KIND: ClassVar[str]

    metadata: ObjectMeta
    """Name, namespace, labels, annotations."""
    status: Any = None
    """Written by controllers; ignored."""

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def ref(self) -> str:
        """`namespace/name`."""
        return f"{self.metadata.namespace}/{self.metadata.name}"
