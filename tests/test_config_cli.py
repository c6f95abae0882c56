"""The command line's search and service options are made from the settings dataclasses
(coverhunter.config.search, .service, .cli_options): their defaults cannot drift apart."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields
from pathlib import Path

import pytest

from coverhunter.cli import get_parser
from coverhunter.cli_index import identify_options, serve_config
from coverhunter.config import IdentifyOptions, ServeConfig, add_arguments, from_arguments


def _sub(name: str) -> argparse.ArgumentParser:
    (sub,) = [a for a in get_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices[name]


def _flags(name: str) -> list[str]:
    return [s for a in _sub(name)._actions for s in a.option_strings if s not in ("-h", "--help")]


def test_the_command_line_defaults_are_the_dataclass_defaults():
    assert (
        identify_options(get_parser().parse_args(["identify", "a.wav", "--index", "i"])) == IdentifyOptions()
    )
    assert serve_config(get_parser().parse_args(["serve", "--index", "i"])) == ServeConfig(index=Path("i"))
    # the service's default search is the command line's (segments: by length)
    assert ServeConfig(index=Path("i")).identify_options() == IdentifyOptions(segments=None)
    evaluate = {a.dest: a.default for a in _sub("evaluate")._actions}
    assert evaluate["rerank_grow_after"] == IdentifyOptions().rerank_grow_after
    assert evaluate["rerank"] == 0  # evaluate measures the model alone unless asked


def test_the_flags_users_scripts_name_are_kept():
    assert _flags("identify") == [
        "--index",
        "--model",
        "--top",
        "--false-alarm",
        "--search",
        "--rerank",
        "--rerank-grow-after",
        "--rerank-versions",
        "--json",
        "--device",
        "--segments",
        "--recursive",
        "--output",
    ]
    assert _flags("serve") == [
        "--index",
        "--model",
        "--host",
        "--port",
        "--device",
        "--token",
        "--protect-reads",
        "--max-upload-mb",
        "--max-duration-s",
        "--decode-timeout-s",
        "--queue-size",
        "--rerank",
        "--rerank-grow-after",
        "--rerank-versions",
    ]


def test_flags_become_the_fields():
    args = get_parser().parse_args(
        ["identify", "a.wav", "--index", "i", "--search", "exact", "--segments", "--top", "3"]
        + ["--false-alarm", "0.05", "--rerank", "0", "--rerank-grow-after", "7", "--rerank-versions", "2"]
    )
    assert identify_options(args) == IdentifyOptions(
        top=3,
        false_alarm=0.05,
        rerank=0,
        rerank_grow_after=7,
        rerank_versions=2,
        segments=True,
        approximate=False,
    )
    args = get_parser().parse_args(["identify", "a.wav", "--index", "i", "--search", "approximate"])
    assert identify_options(args).approximate is True
    args = get_parser().parse_args(
        ["serve", "--index", "i", "--protect-reads", "--host", "0.0.0.0", "--port", "0", "--queue-size", "2"]
        + ["--max-upload-mb", "5", "--rerank", "20", "--token", "T"]
    )
    cfg = serve_config(args)
    assert (cfg.open_reads, cfg.host, cfg.port, cfg.queue_size) == (False, "0.0.0.0", 0, 2)
    assert (cfg.max_upload_mb, cfg.rerank, cfg.token) == (5.0, 20, "T")
    with pytest.raises(SystemExit):
        get_parser().parse_args(["serve", "--index", "i", "--rerank-versions", "0"])


def test_every_search_and_service_setting_carries_its_help():
    for cls in (IdentifyOptions, ServeConfig):
        for f in fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name}"
    # the service's search settings are IdentifyOptions' fields, default and help
    search = {f.name: f for f in fields(IdentifyOptions)}
    for f in fields(ServeConfig):
        if f.name in search:
            assert (f.default, f.metadata) == (search[f.name].default, search[f.name].metadata)


def test_settings_out_of_range_are_named():
    for bad in ({"top": 0}, {"false_alarm": 1.5}, {"segments_after_s": -1.0}, {"switch_cost": -1.0}):
        with pytest.raises(ValueError, match=f"identify {next(iter(bad))} must be"):
            IdentifyOptions(**bad)
    for bad, word in (
        ({"queue_size": 0}, "queue-size"),
        ({"max_upload_mb": 0.0}, "max-upload-mb"),
        ({"port": 70000}, "port"),
        ({"top": 0}, "top"),
        ({"false_alarm": -0.1}, "false-alarm"),
    ):
        with pytest.raises(ValueError, match=f"serve {word} must be"):
            ServeConfig(index=Path("i"), **bad)


def test_the_helper_on_its_own():
    @dataclass(frozen=True)
    class Settings:
        path: Path = field(metadata={"help": "where"})
        rate: float = field(default=0.5, metadata={"help": "how often", "metavar": "R"})
        name: str | None = field(default=None, metadata={"help": "what", "flag": "--label"})
        quiet: bool = field(default=True, metadata={"help": "talk", "flag": "--loud", "invert": True})

    p = argparse.ArgumentParser()
    add_arguments(p, Settings, ["path", "rate", "name", "quiet"], defaults={"rate": 0.25})
    (action,) = [a for a in p._actions if a.dest == "path"]
    assert action.required and action.type is Path
    args = p.parse_args(["--path", "x"])
    assert Settings(**from_arguments(Settings, args)) == Settings(Path("x"), 0.25, None, True)
    args = p.parse_args(["--path", "x", "--label", "n", "--loud", "--rate", "2"])
    assert Settings(**from_arguments(Settings, args)) == Settings(Path("x"), 2.0, "n", False)
    with pytest.raises(AttributeError, match="--rate"):
        from_arguments(Settings, argparse.Namespace(path="x"), ["path", "rate"])

    @dataclass(frozen=True)
    class Wrong:
        on: bool = field(default=True, metadata={"help": "a switch that is on already"})

    with pytest.raises(TypeError, match="switch"):
        add_arguments(argparse.ArgumentParser(), Wrong, ["on"])
