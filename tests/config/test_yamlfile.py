"""read_documents: libyaml with a lean constructor, giving what the pure-Python loader gives."""

from __future__ import annotations

import pytest
import yaml

from fastmesh.config import ConfigError
from fastmesh.config import yamlfile
from fastmesh.config.yamlfile import read_documents

pytestmark = pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML built without libyaml: one loader only")


def pure_python(text: str) -> list[tuple[int, object]]:
    """What the reference loader (PyYAML's pure-Python SafeLoader, duplicate keys refused) reads."""
    return yamlfile._load_all(text, yamlfile._StrictLoader)


SAME = {
    "documents, empty ones counted": "# c\n---\n---\na: 1\n---\n\n---\nb: [x, 'y', \"z\"]\n",
    "scalars resolved as YAML 1.1": (
        "i: 42\nneg: -7\nhex: 0x1f\noct: 0o17\nf: 1.5\nexp: 1e3\ninf: .inf\nt: true\ny: yes\nn: no\noff: off\n"
        "nul: ~\nempty:\nquoted: '42'\ndq: \"true\"\nts: 2024-05-01T10:00:00Z\nd: 2024-05-01\nname: svc-1\n"
    ),
    "nested mappings and sequences": "spec:\n  rules:\n    - matches: [{path: {type: Exact, value: /a}}]\n      w: 1\n",
    "anchors and aliases": "base: &b {port: 80, name: web}\nother: *b\nlist: [&x 1, *x]\n",
    "merge keys": "base: &b {port: 80}\nsvc:\n  <<: *b\n  name: web\n",
    "explicit tags": "s: !!set {a, b}\nbin: !!binary aGVsbG8=\nstr: !!str 12\nf: !!float 1\nomap: !!omap [a: 1]\n",
    "non-string keys": "1: one\nno: false key\n~: null key\n2.5: float key\n",
    "block scalars and unicode": "lit: |\n  line 1\n  line 2\nfold: >\n  a\n  b\nu: héllo ✓\n",
}


@pytest.mark.parametrize("text", SAME.values(), ids=SAME.keys())
def test_documents_are_those_of_the_pure_python_loader(text: str) -> None:
    assert read_documents(text, "mesh.yaml") == pure_python(text)


def test_an_alias_inside_its_own_anchor_is_kept_recursive() -> None:
    ((_, doc),) = read_documents("a: &x [1, *x]\n", "mesh.yaml")
    assert doc["a"][0] == 1 and doc["a"][1] is doc["a"]


def test_valid_text_never_reaches_the_slow_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("the pure-Python loader ran on valid YAML")

    monkeypatch.setattr(yamlfile._StrictLoader, "get_single_node", refuse)
    monkeypatch.setattr(yamlfile._StrictLoader, "get_node", refuse)
    text = "".join(f"---\nkind: HTTPRoute\nmetadata: {{name: r{i}}}\nspec: {{hostnames: [h{i}.example]}}\n"
                   for i in range(200))
    docs = read_documents(text, "mesh.yaml")
    assert len(docs) == 200 and docs[199] == (200, {"kind": "HTTPRoute", "metadata": {"name": "r199"},
                                                    "spec": {"hostnames": ["h199.example"]}})


BAD = {
    "duplicate key": "a: 1\nb: 2\na: 3\n",
    "duplicate key in a later document": "a: 1\n---\nspec:\n  x: 1\n  x: 2\n",
    "unhashable key": "? [1, 2]\n: v\n",
    "unknown tag": "a: !custom 1\n",
    "unclosed flow sequence": "a: [1, 2\nb: 3\n",
    "mapping value in a plain scalar": "a: b: c\n",
    "tab indentation": "a:\n\tb: 1\n",
    "bad alias": "a: *nothing\n",
}


@pytest.mark.parametrize("text", BAD.values(), ids=BAD.keys())
def test_errors_read_as_the_pure_python_loader_words_them(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as fast:
        read_documents(text, "mesh.yaml")
    monkeypatch.setattr(yamlfile, "_LOADER", yamlfile._StrictLoader)
    with pytest.raises(ConfigError) as reference:
        read_documents(text, "mesh.yaml")
    assert str(fast.value) == str(reference.value)
    assert str(fast.value).startswith("mesh.yaml: ") and "invalid YAML" in str(fast.value)
