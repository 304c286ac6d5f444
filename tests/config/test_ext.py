"""ext/ (Cython) against the pure-Python path it replaces: the same models, the same errors, the same snapshots.

The compiled parser (ext/endpointslice.pyx) must build exactly what `EndpointSlice.model_validate`
builds, and decline (answer None, so pydantic words the errors) every document pydantic refuses.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from bench.synthetic_cluster import cluster
from fastmesh.config import ConfigError, fastpath, load_file, load_text
from fastmesh.config.incremental import IncrementalCompiler
from fastmesh.config.model import EndpointSlice
from fastmesh.kube.source import project
from tests.config.test_bad_config import BASE, CASES

parse = fastpath.AVAILABLE.get("parse_endpoint_slice")
API_VERSION = "discovery.k8s.io/v1"


def test_the_extension_is_built() -> None:
    """`make test` builds ext/ (`make ext`): the tests below then compare both paths, not one with itself."""
    assert parse is not None, f"fastmesh._ext.endpointslice did not load ({fastpath.NOT_LOADED}): run `make ext`"


def test_a_model_field_the_module_does_not_build_keeps_it_from_loading(compiled: Any) -> None:
    """A field added to the model and not to the module: the module refuses to load (the Python path runs)."""
    from fastmesh._ext import endpointslice

    fields = {info.alias: name for name, info in EndpointSlice.model_fields.items()}
    endpointslice._check_fields(EndpointSlice, fields)
    with pytest.raises(ImportError, match="out of date with EndpointSlice"):
        endpointslice._check_fields(EndpointSlice, {k: v for k, v in fields.items() if k != "addressType"})


@pytest.fixture(params=[True, False], ids=["ext", "python"])
def ext(request: pytest.FixtureRequest) -> Iterator[bool]:
    fastpath.use_ext(request.param)
    yield request.param
    fastpath.use_ext(True)


@pytest.fixture
def compiled() -> Any:
    if parse is None:
        pytest.fail("fastmesh._ext.endpointslice is not built: run `make ext`")
    return parse


def _slice(**fields: Any) -> dict[str, Any]:
    doc = {"apiVersion": API_VERSION, "kind": "EndpointSlice",
           "metadata": {"name": "s-1", "namespace": "ns", "labels": {"kubernetes.io/service-name": "s"},
                        "uid": "u", "creationTimestamp": "2026-11-01T00:00:00Z"},
           "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
           "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": True}, "nodeName": "n1",
                          "targetRef": {"kind": "Pod", "name": "p"}}]}
    doc.update(fields)
    return doc


VALID = {
    "synthetic": _slice(),
    "minimal": {"metadata": {"name": "m"}, "addressType": "FQDN", "ports": [{"port": 1}]},
    "every field": _slice(status={"x": 1}, addressType="IPv6", ports=[
        {"name": None, "port": 65535, "protocol": "TCP", "appProtocol": "kubernetes.io/h2c"}, {"port": 1}],
        endpoints=[{"addresses": ["::1", "fe80::1"], "conditions": {"ready": False, "serving": True,
                                                                     "terminating": None},
                    "hostname": "h", "nodeName": "n", "zone": "z", "targetRef": None, "hints": {"forZones": []}},
                   {"addresses": ["::2"], "conditions": {}},
                   {"addresses": ["::3"], "conditions": {"terminating": True, "ready": True}},
                   {"addresses": ["::4"]}]),
    "no endpoints": _slice(endpoints=[]),
    "limits": _slice(endpoints=[{"addresses": [f"10.0.{i // 256}.{i % 256}" for i in range(100)]}] * 1000,
                     ports=[{"name": f"p{i}", "port": i + 1} for i in range(100)]),
}


def assert_same_model(fast: Any, slow: Any) -> None:
    """Equal as pydantic compares them, and equal in what `==` does not look at: class, fields set, dump."""
    assert type(fast) is type(slow)
    assert fast == slow
    if isinstance(slow, BaseModel):
        assert fast.model_fields_set == slow.model_fields_set
        assert fast.model_dump(by_alias=True, exclude_unset=True) == slow.model_dump(by_alias=True, exclude_unset=True)
        assert fast.__pydantic_extra__ == slow.__pydantic_extra__
        for name in type(slow).model_fields:
            assert_same_model(getattr(fast, name), getattr(slow, name))
    elif isinstance(slow, list):
        assert len(fast) == len(slow)
        for f, s in zip(fast, slow):
            assert_same_model(f, s)


@pytest.mark.parametrize("name", VALID)
def test_builds_what_pydantic_builds(name: str, compiled: Any) -> None:
    doc = VALID[name]
    before = copy.deepcopy(doc)
    assert_same_model(compiled(doc), EndpointSlice.model_validate(doc))
    assert doc == before  # the document is not touched


def test_builds_what_pydantic_builds_for_a_synthetic_cluster(compiled: Any) -> None:
    for obj in cluster(200, 3000)["EndpointSlice"]:
        doc = project("EndpointSlice", API_VERSION, obj)
        assert_same_model(compiled(doc), EndpointSlice.model_validate(doc))


def test_what_instances_share_stays_apart(compiled: Any) -> None:
    """Equal conditions and the fields set of one shape are shared: frozen, and copies get their own."""
    eps = compiled(_slice(endpoints=[{"addresses": ["10.0.0.1"], "conditions": {"ready": True}},
                                     {"addresses": ["10.0.0.2"], "conditions": {"ready": True}}]))
    a, b = eps.endpoints
    assert a.conditions is b.conditions and a.model_fields_set is b.model_fields_set
    c = a.model_copy(update={"zone": "z"})
    assert "zone" in c.model_fields_set and b.model_fields_set == {"addresses", "conditions"}
    with pytest.raises(ValidationError):
        a.conditions.ready = False
    with pytest.raises(ValidationError):
        a.zone = "z"


BAD = {
    "too many endpoints": _slice(endpoints=[{"addresses": ["10.0.0.1"]}] * 1001),
    "too many addresses": _slice(endpoints=[{"addresses": ["10.0.0.1"] * 101}]),
    "too many ports": _slice(ports=[{"name": f"p{i}", "port": i + 1} for i in range(101)]),
    "port 0": _slice(ports=[{"port": 0}]),
    "port true": _slice(ports=[{"port": True}]),
    "port float": _slice(ports=[{"port": 80.0}]),
    "ready 1": _slice(endpoints=[{"addresses": ["a"], "conditions": {"ready": 1}}]),
    "snake_case field": _slice(endpoints=[{"addresses": ["a"], "node_name": "n"}]),
    "address tuple": _slice(endpoints=[{"addresses": ("a",)}]),
    "kind": _slice(kind="Service"),
    "apiVersion": _slice(apiVersion="discovery.k8s.io/v1beta1"),
    "metadata name": _slice(metadata={"name": "Bad_Name"}),
    "metadata missing": {k: v for k, v in _slice().items() if k != "metadata"},
    "unknown top-level field": _slice(spec={}),
    "not a mapping": ["addressType"],
}


@pytest.mark.parametrize("name", BAD)
def test_declines_what_pydantic_refuses(name: str, compiled: Any) -> None:
    with pytest.raises(ValidationError):
        EndpointSlice.model_validate(BAD[name])
    assert compiled(BAD[name]) is None


_VALUES: list[Any] = [None, True, False, 0, 1, 80, 65535, 65536, -1, 1.5, "", "x", "TCP", "UDP", "IPv4", "IPv6",
                      "FQDN", "10.0.0.1", [], ["10.0.0.1"], [1], {}, {"ready": True}, {"port": 80}]


def _nodes(value: Any) -> Iterator[Any]:
    if isinstance(value, (dict, list)):
        yield value
        for child in value.values() if isinstance(value, dict) else value:
            yield from _nodes(child)


def _mutate(doc: dict[str, Any], rng: random.Random) -> None:
    """One random mistake (or not: some mutations leave the document valid) somewhere in `doc`."""
    node = rng.choice(list(_nodes(doc)))
    if isinstance(node, list):
        if node and rng.random() < 0.3:
            node.pop(rng.randrange(len(node)))
        elif node:
            node[rng.randrange(len(node))] = copy.deepcopy(rng.choice(_VALUES))
        else:
            node.append(copy.deepcopy(rng.choice(_VALUES)))
        return
    roll = rng.random()
    if node and roll < 0.25:
        del node[rng.choice(list(node))]
    elif roll < 0.35:
        node[rng.choice(["extra", "nodename", "Ready", "app_protocol", 7])] = "x"
    else:
        keys = list(node) + ["ready", "serving", "zone", "hostname", "appProtocol", "protocol", "name", "status"]
        node[rng.choice(keys)] = copy.deepcopy(rng.choice(_VALUES))


def test_random_mistakes_same_answer_as_pydantic(compiled: Any) -> None:
    """Random mutations of valid slices: whenever pydantic refuses one the module declines it, and
    whatever the module builds is what pydantic builds."""
    rng = random.Random(6)
    outcomes = {"refused": 0, "same": 0, "declined valid": 0}
    for _ in range(3000):
        doc = copy.deepcopy(rng.choice([VALID["synthetic"], VALID["every field"], VALID["minimal"]]))
        for _ in range(rng.randint(1, 3)):
            _mutate(doc, rng)
        fast = compiled(doc)
        try:
            slow = EndpointSlice.model_validate(doc)
        except ValidationError:
            assert fast is None, doc
            outcomes["refused"] += 1
            continue
        if fast is None:
            outcomes["declined valid"] += 1
        else:
            assert_same_model(fast, slow)
            outcomes["same"] += 1
    assert outcomes["refused"] > 1000 and outcomes["same"] > 300, outcomes


SLICE_CASES = [c for c in CASES if c.label.startswith("EndpointSlice")]


@pytest.mark.parametrize("case", SLICE_CASES, ids=[c.id for c in SLICE_CASES])
def test_bad_slices_read_the_same_with_and_without_ext(case: Any, tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(BASE + case.yaml)
    messages = []
    for enabled in (True, False):
        fastpath.use_ext(enabled)
        try:
            with pytest.raises(ConfigError) as info:
                load_file(path)
        finally:
            fastpath.use_ext(True)
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    assert case.message in messages[0]


def test_the_compiled_path_is_taken(compiled: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the module, valid slices never reach pydantic's EndpointSlice validator; bad ones still do."""
    calls = []

    def counting(cls: type[EndpointSlice], obj: Any, *args: Any, **kwargs: Any) -> EndpointSlice:
        calls.append(obj)
        return EndpointSlice.__pydantic_validator__.validate_python(obj)

    monkeypatch.setattr(EndpointSlice, "model_validate", classmethod(counting))
    load_text(BASE, "mesh.yaml")
    assert calls == []
    with pytest.raises(ConfigError):
        load_text(BASE + "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: x}\n"
                         "addressType: IPv4\nports: [{port: 0}]\n", "mesh.yaml")
    assert len(calls) == 1


def _broken(listed: dict[str, list[dict[str, Any]]]) -> None:
    """Slices that fail the schema or a check, among the valid ones."""
    first = listed["EndpointSlice"][0]
    listed["EndpointSlice"] += [
        {**first, "metadata": {**first["metadata"], "name": "bad-port"}, "ports": [{"name": "http", "port": 0}]},
        {**first, "metadata": {**first["metadata"], "name": "bad-ready"},
         "endpoints": [{"addresses": ["10.9.9.9"], "conditions": {"ready": "yes"}}]},
        {**first, "metadata": {**first["metadata"], "name": "bad-family"},
         "endpoints": [{"addresses": ["::1"]}]},
    ]


def test_compile_identical_with_and_without_ext(ext: bool) -> None:
    """The snapshot and the reports of a cluster (with broken slices), full and after slice changes,
    are those of the pure-Python path (compiled here once with ext, once without, against the other)."""
    listed = cluster(300, 3000, 30, 15)
    _broken(listed)
    objects = [(kind, obj) for kind, objs in listed.items() for obj in objs]
    changes = [("EndpointSlice", {**obj, "endpoints": obj["endpoints"][1:]}) for obj in listed["EndpointSlice"][5:9]]
    results = []
    for enabled in (ext, not ext):
        fastpath.use_ext(enabled)
        compiler = IncrementalCompiler("kubernetes https://127.0.0.1:6443")
        full = compiler.apply(objects)
        change = compiler.apply(changes)
        assert change.incremental
        results.append([(r.snapshot_json, r.header) for r in (full, change)])
    fastpath.use_ext(True)
    assert results[0] == results[1]
    left_out = {o["name"] for o in results[0][0][1]["objects"] if o.get("left_out")}
    assert {"bad-port", "bad-ready", "bad-family"} <= left_out



_CHILD = """
import sys
if sys.argv[1] == "missing":
    sys.modules["fastmesh._ext.endpointslice"] = None  # import fails as when ext/ was never built
from bench.synthetic_cluster import cluster
from fastmesh.config import fastpath
from fastmesh.config.incremental import IncrementalCompiler
from fastmesh.config.model import EndpointSlice
print(bool(fastpath.AVAILABLE), fastpath.fast_parser(EndpointSlice) is not None)
listed = cluster(100, 1000, 10, 5)
print(IncrementalCompiler("k").apply([(k, o) for k, objs in listed.items() for o in objs]).snapshot_json)
"""


@pytest.mark.parametrize("how", ["missing", "FASTMESH_NO_EXT"])
def test_without_the_module_the_python_path_gives_the_same(how: str, compiled: Any) -> None:
    """A process where the module cannot be imported (or is switched off by the environment) runs the
    pure-Python path and compiles the same snapshot as this one, with the module."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(root / "src")])}
    if how == "FASTMESH_NO_EXT":
        env["FASTMESH_NO_EXT"] = "1"
    child = subprocess.run([sys.executable, "-c", _CHILD, how], capture_output=True, text=True, env=env,
                           timeout=120, check=True)
    flags, snapshot = child.stdout.split("\n", 1)
    assert flags == ("False False" if how == "missing" else "True False")
    listed = cluster(100, 1000, 10, 5)
    assert fastpath.fast_parser(EndpointSlice) is compiled
    here = IncrementalCompiler("k").apply([(k, o) for k, objs in listed.items() for o in objs]).snapshot_json
    assert snapshot.strip() == here
