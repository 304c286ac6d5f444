# cython: language_level=3, boundscheck=False, wraparound=False
"""EndpointSlice documents into the pydantic models of fastmesh.config.model.endpointslice, fast.

At 10,000 Services / 100,000 endpoints the EndpointSlices are most of the objects pydantic builds
in a full compile (bench/kube_scale.py, ext/README.md). This module checks a slice document
against the same schema in C and builds the very same model instances (same classes, same field
values, same `model_fields_set`) without pydantic's validator: the instances compare equal to
`EndpointSlice.model_validate(doc)` and the compile cannot tell them apart.

It only ever accepts: for anything it does not take as valid (a wrong type, an unknown field, a
value out of range, a shape it does not know), `parse_endpoint_slice` answers None and the caller
validates with pydantic, whose errors (and their field paths) are the messages users see. So bad
input reads the same with or without this module (tests/config/test_ext.py compares both).
The metadata goes through pydantic (ObjectMeta: names, timestamps): one call per slice, not per endpoint.
"""

from includes.pyobject cimport PyObject_GenericSetAttr

from pydantic import ValidationError

from fastmesh.config.model.base import ObjectMeta
from fastmesh.config.model.endpointslice import (
    EndpointConditions,
    EndpointEntry,
    EndpointPort,
    EndpointSlice,
)

cdef object _new = object.__new__
cdef object _validate_meta = ObjectMeta.model_validate
cdef object _DEFAULT_CONDITIONS = EndpointEntry.model_fields["conditions"].get_default()

# The fields each mapping may have (camelCase, as in YAML), and the model field each one sets.
cdef dict _SLICE_FIELDS = {
    "metadata": "metadata", "status": "status", "apiVersion": "api_version", "kind": "kind",
    "addressType": "address_type", "endpoints": "endpoints", "ports": "ports",
}
cdef dict _ENTRY_FIELDS = {
    "addresses": "addresses", "conditions": "conditions", "hostname": "hostname", "nodeName": "node_name",
    "zone": "zone", "targetRef": "target_ref", "hints": "hints",
}
cdef dict _CONDITION_FIELDS = {"ready": "ready", "serving": "serving", "terminating": "terminating"}
cdef dict _PORT_FIELDS = {"name": "name", "port": "port", "protocol": "protocol", "appProtocol": "app_protocol"}
cdef frozenset _ADDRESS_TYPES = frozenset(("IPv4", "IPv6", "FQDN"))



def _check_fields(model, dict fields):
    """This module builds every field of `model` by name: one added to the model (or renamed) must be added
    here too; until then the module does not load and the pure-Python path runs (test_ext.py fails)."""
    known = {info.alias: name for name, info in model.model_fields.items()}
    if known != fields:
        raise ImportError(f"ext/endpointslice.pyx is out of date with {model.__name__}: {known} != {fields}")


def _length(model, str name, str bound):
    """A list field's min_length or max_length, as the model declares it."""
    for constraint in model.model_fields[name].metadata:
        if hasattr(constraint, bound):
            return getattr(constraint, bound)
    raise ImportError(f"{model.__name__}.{name} has no {bound}")


_check_fields(EndpointSlice, _SLICE_FIELDS)
_check_fields(EndpointEntry, _ENTRY_FIELDS)
_check_fields(EndpointConditions, _CONDITION_FIELDS)
_check_fields(EndpointPort, _PORT_FIELDS)

# The limits of the schema, read from the models.
cdef Py_ssize_t MAX_ENDPOINTS = _length(EndpointSlice, "endpoints", "max_length")
cdef Py_ssize_t MIN_PORTS = _length(EndpointSlice, "ports", "min_length")
cdef Py_ssize_t MAX_PORTS = _length(EndpointSlice, "ports", "max_length")
cdef Py_ssize_t MIN_ADDRESSES = _length(EndpointEntry, "addresses", "min_length")
cdef Py_ssize_t MAX_ADDRESSES = _length(EndpointEntry, "addresses", "max_length")


class _Decline(Exception):
    """Not a document this module takes: pydantic decides (and words the errors)."""


cdef inline bint _opt_str(object value):
    return value is None or type(value) is str


cdef inline bint _opt_bool(object value):
    return value is None or type(value) is bool


cdef object _model(object cls, dict values, set fields_set):
    """An instance of the pydantic model `cls` holding `values`, as model_validate leaves it."""
    obj = _new(cls)
    PyObject_GenericSetAttr(obj, "__dict__", values)
    PyObject_GenericSetAttr(obj, "__pydantic_fields_set__", fields_set)
    PyObject_GenericSetAttr(obj, "__pydantic_extra__", None)
    PyObject_GenericSetAttr(obj, "__pydantic_private__", None)
    return obj


# The `model_fields_set` of each shape of mapping seen (its keys, in order), shared by the instances
# of that shape: 100,000 endpoints have a handful of shapes, and pydantic never changes the set of a
# frozen instance (model_copy copies it first). Bounded: keys are checked before a shape is kept.
cdef dict _SHAPES = {}


cdef set _fields_set(dict raw, dict fields):
    """The model fields `raw` sets; _Decline on a field the model does not have."""
    shape = (id(fields), *raw)
    cdef set found = _SHAPES.get(shape)
    if found is not None:
        return found
    found = set()
    for key in raw:
        name = fields.get(key)
        if name is None:
            raise _Decline()
        found.add(name)
    _SHAPES[shape] = found
    return found


# The models are frozen, so equal conditions share one instance (pydantic shares the default one too):
# there are few ({"ready": true} and the like) and 100,000 endpoints. Keyed by the mapping's items
# once they are known to be valid (the names of _CONDITION_FIELDS, None or bool): a bounded set.
cdef dict _CONDITIONS = {}


cdef object _conditions(object raw):
    if type(raw) is not dict:
        raise _Decline()
    cdef dict d = <dict>raw
    for key, value in d.items():
        if key not in _CONDITION_FIELDS or not _opt_bool(value):
            raise _Decline()
    items = tuple(d.items())
    found = _CONDITIONS.get(items)
    if found is None:
        values = {"ready": d.get("ready"), "serving": d.get("serving"), "terminating": d.get("terminating")}
        found = _CONDITIONS[items] = _model(EndpointConditions, values, _fields_set(d, _CONDITION_FIELDS))
    return found


cdef object _entry(object raw):
    if type(raw) is not dict:
        raise _Decline()
    cdef dict d = <dict>raw
    fields_set = _fields_set(d, _ENTRY_FIELDS)
    raw_addresses = d.get("addresses")
    if type(raw_addresses) is not list:
        raise _Decline()
    cdef list addresses = list(<list>raw_addresses)
    cdef Py_ssize_t n = len(addresses)
    if n < MIN_ADDRESSES or n > MAX_ADDRESSES:
        raise _Decline()
    for address in addresses:
        if type(address) is not str:
            raise _Decline()
    raw_conditions = d.get("conditions", _DEFAULT_CONDITIONS)
    conditions = _DEFAULT_CONDITIONS if raw_conditions is _DEFAULT_CONDITIONS else _conditions(raw_conditions)
    hostname, node_name, zone = d.get("hostname"), d.get("nodeName"), d.get("zone")
    if not (_opt_str(hostname) and _opt_str(node_name) and _opt_str(zone)):
        raise _Decline()
    return _model(EndpointEntry, {
        "addresses": addresses, "conditions": conditions, "hostname": hostname, "node_name": node_name,
        "zone": zone, "target_ref": d.get("targetRef"), "hints": d.get("hints"),
    }, fields_set)


cdef object _port(object raw):
    if type(raw) is not dict:
        raise _Decline()
    cdef dict d = <dict>raw
    fields_set = _fields_set(d, _PORT_FIELDS)
    name, port, protocol, app_protocol = d.get("name"), d.get("port"), d.get("protocol", "TCP"), d.get("appProtocol")
    if type(port) is not int or not (1 <= port <= 65535):
        raise _Decline()
    if type(protocol) is not str or protocol != "TCP" or not (_opt_str(name) and _opt_str(app_protocol)):
        raise _Decline()
    return _model(EndpointPort, {"name": name, "port": port, "protocol": "TCP", "app_protocol": app_protocol},
                  fields_set)


cpdef object parse_endpoint_slice(object doc):
    """The EndpointSlice model `EndpointSlice.model_validate(doc)` gives, or None: validate with pydantic
    (the document is not valid, or not in a shape this module takes)."""
    if type(doc) is not dict:
        return None
    cdef dict d = <dict>doc
    cdef list endpoints, ports
    try:
        fields_set = _fields_set(d, _SLICE_FIELDS)
        api_version, kind = d.get("apiVersion", "discovery.k8s.io/v1"), d.get("kind", "EndpointSlice")
        if type(api_version) is not str or api_version != "discovery.k8s.io/v1":
            return None
        if type(kind) is not str or kind != "EndpointSlice":
            return None
        address_type = d.get("addressType")
        if type(address_type) is not str or address_type not in _ADDRESS_TYPES:
            return None
        raw_endpoints, raw_ports = d.get("endpoints", []), d.get("ports")
        if type(raw_endpoints) is not list or len(<list>raw_endpoints) > MAX_ENDPOINTS:
            return None
        if type(raw_ports) is not list or not (MIN_PORTS <= len(<list>raw_ports) <= MAX_PORTS):
            return None
        endpoints = [_entry(e) for e in <list>raw_endpoints]
        ports = [_port(p) for p in <list>raw_ports]
        if type(d.get("metadata")) is not dict:
            return None
        metadata = _validate_meta(d["metadata"])
    except (_Decline, ValidationError):
        return None
    return _model(EndpointSlice, {
        "metadata": metadata, "status": d.get("status"), "api_version": "discovery.k8s.io/v1",
        "kind": "EndpointSlice", "address_type": address_type, "endpoints": endpoints, "ports": ports,
    }, fields_set)
