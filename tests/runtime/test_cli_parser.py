"""The argument parser of `fastmesh`: help is wrapped to the terminal width, as argparse's own does."""

from __future__ import annotations

import pytest

from fastmesh.cli import parser


@pytest.mark.parametrize("columns", [60, 200])
def test_help_is_wrapped_to_columns(
    columns: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))
    with pytest.raises(SystemExit) as done:
        parser().parse_args(["proxy", "--help"])
    assert done.value.code == 0
    proxy_help = capsys.readouterr().out
    lines = proxy_help.splitlines()
    assert max(len(line) for line in lines) <= columns - 2
    assert "--listener NAME=IP:PORT" in proxy_help
    if columns == 200:  # the usage takes the room there is
        assert lines[0].startswith("usage: fastmesh proxy [-h] [--config FILE | --kubernetes] [--control-plane URL]")
        assert "--listener" in " ".join(lines[:2])


def test_config_or_kubernetes_is_required_not_both(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["proxy"], ["proxy", "--config", "m.yaml", "--kubernetes"],
                 ["proxy", "--kubernetes", "--control-plane", "https://cp:15012"]):
        with pytest.raises(SystemExit) as done:
            parser().parse_args(argv)
        assert done.value.code == 2
    err = capsys.readouterr().err
    assert "--kubernetes" in err and "argument --control-plane: not allowed with argument --kubernetes" in err
    args = parser().parse_args(["proxy", "--kubernetes", "--kubeconfig", "k", "--kube-namespace", "mesh"])
    assert args.kubernetes and str(args.kubeconfig) == "k" and args.kube_namespace == "mesh"


def test_arguments_parse_as_before() -> None:
    args = parser().parse_args(["proxy", "--config", "m.yaml", "--listener", "outbound=127.0.0.1:0"])
    assert args.command == "proxy" and args.listener == [("outbound", "127.0.0.1:0")]
