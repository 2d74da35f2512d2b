"""The command line: ``gre serve``, ``gre classify``, ``gre info``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from gre.config import Config, ConfigError, load_config

EXIT_CONFIG = 2

_config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    envvar="GRE_CONFIG",
    help="TOML config file (default: the embedded open_nsfw model). Env: GRE_CONFIG.",
)
_set_option = click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override any config key, e.g. --set max_batch_size=16 (repeatable).",
)
_engine_option = click.option(
    "--engine", type=click.Choice(["auto", "caffe", "opencv", "torch", "null"]), help="Engine."
)


def fail(message: str) -> None:
    """Print ``gre: error: message`` and exit with status 2 (no traceback)."""
    click.echo(f"gre: error: {message}", err=True)
    sys.exit(EXIT_CONFIG)


def build_config(config_path: Path | None, settings: tuple[str, ...], **flags: Any) -> Config:
    """Load the config with ``--set`` pairs and explicit flags as the top-priority overrides."""
    overrides: dict[str, Any] = {}
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep:
            fail(f"--set {setting!r}: expected KEY=VALUE")
        overrides[key.strip()] = value
    overrides.update({k: v for k, v in flags.items() if v is not None})
    try:
        return load_config(config_path, overrides=overrides)
    except ConfigError as exc:
        fail(str(exc))
        raise  # unreachable; for the type checker


@click.group()
@click.version_option(package_name="gre")
def main() -> None:
    """gre: serve a Caffe image classifier over HTTP with dynamic batching."""


@main.command()
@_config_option
@click.option("--host", help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on (default 8000).")
@_engine_option
@click.option("--devices", help='"cpu", "all" or GPU indices such as "[0, 2]".')
@_set_option
def serve(
    config_path: Path | None,
    host: str | None,
    port: int | None,
    engine: str | None,
    devices: str | None,
    settings: tuple[str, ...],
) -> None:
    """Serve POST /api/classify until SIGTERM or Ctrl-C (then drain and exit 0)."""
    from gre.http.server import run
    from gre.logs import configure_logging
    from gre.service import StartupError

    config = build_config(
        config_path, settings, host=host, port=port, engine=engine, devices=devices
    )
    configure_logging(config.server.log_level)
    try:
        status = run(config)
    except StartupError as exc:
        fail(str(exc))
    sys.exit(status)


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@_config_option
@click.option("--top-k", type=int, default=None, help="Classes per image (default 5).")
@_engine_option
@_set_option
def classify(
    images: tuple[Path, ...],
    config_path: Path | None,
    top_k: int | None,
    engine: str | None,
    settings: tuple[str, ...],
) -> None:
    """Classify image files offline, in this process; prints the API's JSON.

    One image: its JSON array. Several: an object keyed by path. Exit 1 if any failed.
    """
    from gre.offline import classify_files
    from gre.service import StartupError

    config = build_config(config_path, settings, engine=engine)
    k = top_k or config.server.default_top_k
    try:
        answers, failed = classify_files(config, images, k)
    except StartupError as exc:
        fail(str(exc))
    output: Any = answers[str(images[0])] if len(images) == 1 else answers
    click.echo(json.dumps(output, indent=2, ensure_ascii=False))
    sys.exit(1 if failed else 0)


@main.command()
@_config_option
@_set_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def info(config_path: Path | None, settings: tuple[str, ...], as_json: bool) -> None:
    """Print the model, the GPUs found (NVML), and the replica plan."""
    from gre.info import describe, render

    config = build_config(config_path, settings)
    try:
        facts = describe(config)
    except ValueError as exc:
        fail(str(exc))
    click.echo(json.dumps(facts, indent=2) if as_json else render(facts))
