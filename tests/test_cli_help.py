"""Every flag of every command says what it is for, and ``--help`` prints as meant (an
argparse description is not %-formatted, so a ``%%`` there showed as ``%%``)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from xds_server import cli, xdsctl


def parsers(
    parser: argparse.ArgumentParser, path: str
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from parsers(sub, f"{path} {name}")


ALL = [*parsers(cli.build_parser(), "xds-server"), *parsers(xdsctl.build_parser(), "xdsctl")]


@pytest.mark.parametrize(("path", "parser"), ALL, ids=[p for p, _ in ALL])
def test_every_flag_has_help_and_help_prints_clean(path: str, parser: argparse.ArgumentParser):
    missing = [
        "/".join(a.option_strings) or a.dest
        for a in parser._actions
        if not isinstance(a, argparse._SubParsersAction) and not a.help
    ]
    assert not missing, f"{path}: no help for {missing}"
    text = parser.format_help()
    assert "%%" not in text and "%(" not in text, text


def test_admin_port_means_the_admin_api_in_every_command():
    """One name, one meaning: --admin-port is the control plane's admin API (xdsctl's);
    the demo's Envoy admin port is --envoy-admin-port."""
    parser = cli.build_parser()
    demo = parser.parse_args(["demo", "--admin-port", "1", "--envoy-admin-port", "2"])
    assert (demo.admin_port, demo.envoy_admin_port) == (1, 2)
    for path, p in parsers(parser, "xds-server"):
        for action in p._actions:
            if "--admin-port" in action.option_strings and path.split()[-1] in ("serve", "demo"):
                assert "admin API" in action.help, (path, action.help)


def test_envoy_and_bootstrap_share_their_bootstrap_flags():
    """`envoy` runs the bootstrap that `bootstrap` prints: the flags they share (the
    bootstrap's choices, --envoy-admin-port among them) are one definition, one help."""
    subs = dict(parsers(cli.build_parser(), "xds-server"))

    def flags(p: argparse.ArgumentParser) -> dict[str, tuple[object, ...]]:
        return {
            a.dest: (tuple(a.option_strings), a.default, a.help)
            for a in p._actions
            if a.option_strings
        }

    envoy, bootstrap = flags(subs["xds-server envoy"]), flags(subs["xds-server bootstrap"])
    shared = envoy.keys() & bootstrap.keys()
    assert {"xds", "label", "api", "no_ads", "node_id", "envoy_admin_port"} <= shared
    assert {k: envoy[k] for k in shared} == {k: bootstrap[k] for k in shared}
