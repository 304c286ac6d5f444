"""How the control plane turns per-variant reports into one status per parentRef (fastmesh.control.status.merged)."""

from __future__ import annotations

from typing import Any

from fastmesh.control.status import NO_PROXY, _callers, merged

KEY = ("HTTPRoute", "shop", "billing")


def _report(left_out: bool, message: str = "external service 'billing' not found") -> dict[str, Any]:
    return {"kind": "HTTPRoute", "namespace": "shop", "name": "billing", "left_out": left_out,
            "problems": [{"path": "spec.rules[0].backendRefs[0].name", "message": message,
                          "reason": "BackendNotFound"}]}


OF_NAMESPACE = {"shop": "with-billing", "web": "plain", "api": "plain"}


def test_a_report_every_variant_agrees_on_is_taken_as_it_is() -> None:
    variants = {NO_PROXY: {KEY: _report(False)}, "plain": {KEY: _report(False)}}
    assert merged(OF_NAMESPACE, variants, KEY, [NO_PROXY, "plain"]) == _report(False)


def test_fine_for_some_callers_only_names_the_others() -> None:
    variants = {NO_PROXY: {KEY: _report(False)}, "plain": {KEY: _report(False)}, "with-billing": {}}
    report = merged(OF_NAMESPACE, variants, KEY, list(variants))
    assert report is not None and not report["left_out"]
    assert report["problems"][0]["message"] == (
        "for callers in namespaces without a (valid) Proxy object and in namespace api, web: "
        "external service 'billing' not found")
    # A consumer route is judged for its own namespace's callers only: there it is fine.
    assert merged(OF_NAMESPACE, variants, KEY, ["with-billing"]) is None


def test_left_out_for_some_callers_wins_over_unresolved_for_others() -> None:
    variants = {NO_PROXY: {KEY: _report(False)}, "plain": {KEY: _report(True, "bad")}}
    report = merged(OF_NAMESPACE, variants, KEY, list(variants))
    assert report is not None and report["left_out"]
    assert report["problems"][0]["message"] == "for callers in namespace api, web: bad"


def test_long_lists_of_namespaces_are_cut() -> None:
    many = {f"ns{i:02d}": "v" for i in range(15)}
    assert _callers(many, ["v"], most=3) == "callers in namespace ns00, ns01, ns02 and 12 more"
