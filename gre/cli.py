"""The command line: ``gre serve``, ``gre classify``, ``gre info``, ``gre fetch``."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from gre.config import Config, ConfigError, load_config

if TYPE_CHECKING:
    from gre.zoo.fetch import Fetched

EXIT_CONFIG = 2
#: ``gre fetch`` failed (a download, a checksum, the manifest).
EXIT_FETCH = 1
#: ``gre fetch`` interrupted (Ctrl-C: 128 + SIGINT); its ``.part`` files are kept.
EXIT_INTERRUPTED = 130

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
_env_file_option = click.option(
    "--env-file",
    "env_files",
    multiple=True,
    metavar="FILE",
    help="Shell fragment of NAME=value lines read as environment variables beneath the "
    "environment, e.g. the Bitfusion AMI's /etc/default/gpurestengine (repeatable; a later "
    "file wins). A leading '-' ignores a missing file, as systemd's EnvironmentFile=-.",
)
_engine_option = click.option(
    "--engine", type=click.Choice(["auto", "caffe", "opencv", "torch", "null"]), help="Engine."
)


def fail(message: str) -> None:
    """Print ``gre: error: message`` and exit with status 2 (no traceback)."""
    click.echo(f"gre: error: {message}", err=True)
    sys.exit(EXIT_CONFIG)


def env_file_paths(env_files: Sequence[str]) -> list[Path]:
    """The ``--env-file`` files to read now, in order. A name with a leading ``-`` is dropped
    while no file has that name (systemd's ``EnvironmentFile=-``: only a missing file is
    ignored; an unreadable one is still an error).

    Raises:
        ConfigError: an empty name.
    """
    paths = []
    for spec in env_files:
        optional = spec.startswith("-")
        name = spec[1:] if optional else spec
        if not name:
            raise ConfigError(f"--env-file {spec!r}: no file named")
        if optional and not Path(name).exists():
            continue
        paths.append(Path(name))
    return paths


def parse_settings(settings: Sequence[str]) -> dict[str, str]:
    """``--set KEY=VALUE`` pairs as ``{key: value}``; raises :class:`ConfigError` for a pair
    without ``=``."""
    overrides = {}
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep:
            raise ConfigError(f"--set {setting!r}: expected KEY=VALUE")
        overrides[key.strip()] = value
    return overrides


def config_loader(
    config_path: Path | None, settings: Sequence[str], env_files: Sequence[str], **flags: Any
) -> Callable[[], Config]:
    """A function of no arguments that reads the whole configuration afresh each call: the
    config file, the ``--env-file`` files (a ``-``-prefixed one that has appeared since is
    read too), the environment, then ``--set`` pairs and explicit flags (``None``: not given)
    on top. It raises :class:`ConfigError` rather than exiting, so that a reload (SIGHUP) that
    fails can keep the running config."""

    def load() -> Config:
        overrides: dict[str, Any] = parse_settings(settings)
        overrides.update({k: v for k, v in flags.items() if v is not None})
        return load_config(config_path, overrides=overrides, env_files=env_file_paths(env_files))

    return load


def load_or_exit(load: Callable[[], Config]) -> Config:
    """``load()``, or ``gre: error: ...`` and exit 2 on :class:`ConfigError`."""
    try:
        return load()
    except ConfigError as exc:
        fail(str(exc))
        raise  # unreachable; for the type checker


def build_config(
    config_path: Path | None,
    settings: Sequence[str],
    env_files: Sequence[str] = (),
    **flags: Any,
) -> Config:
    """Load the config once (see :func:`config_loader`); exit 2 if it is unusable."""
    return load_or_exit(config_loader(config_path, settings, env_files, **flags))


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
@_env_file_option
def serve(
    config_path: Path | None,
    host: str | None,
    port: int | None,
    engine: str | None,
    devices: str | None,
    settings: tuple[str, ...],
    env_files: tuple[str, ...],
) -> None:
    """Serve POST /api/classify until SIGTERM or Ctrl-C (then drain and exit 0); SIGHUP
    re-reads the configuration (config file, env files, environment, flags)."""
    from gre.http.server import run
    from gre.logs import configure_logging
    from gre.service import StartupError

    configure_logging("warning")  # the config's own warnings as JSON lines too
    load = config_loader(
        config_path, settings, env_files, host=host, port=port, engine=engine, devices=devices
    )
    config = load_or_exit(load)
    configure_logging(config.server.log_level)
    try:
        status = run(config, reload_config=load)
    except StartupError as exc:
        fail(str(exc))
    sys.exit(status)


def parse_features(features: str | None) -> tuple[str, ...]:
    """``--features fc7,pool5`` as ``("fc7", "pool5")`` (``None``: none).

    Raises:
        click.BadParameter: an empty name, or a name twice.
    """
    if features is None:
        return ()
    names = tuple(name.strip() for name in features.split(","))
    if not all(names) or len(set(names)) != len(names):
        raise click.BadParameter(f"{features!r}: comma-separated distinct blob names")
    return names


@main.command()
@click.argument(
    "paths", metavar="PATH...", nargs=-1, required=True, type=click.Path(path_type=Path)
)
@click.option("-r", "--recursive", is_flag=True, help="Take a directory's subfolders' images too.")
@click.option(
    "-o",
    "--output",
    metavar="FILE",
    help="Write one row per image to FILE.jsonl, FILE.csv or FILE.parquet (- : JSON lines "
    "on stdout); columns SampleID, labels, confidences, error, message, then one float "
    "list per --features blob. Without it: the API's JSON on stdout.",
)
@click.option(
    "--features",
    metavar="BLOB[,BLOB...]",
    help="Blobs to write per image, e.g. fc7,pool5 (flattened C, H, W; needs --output).",
)
@click.option(
    "--top-k",
    metavar="K",
    type=click.IntRange(min=0),
    default=None,
    help="Classes per image (default server.default_top_k, 5; 0: none, features only).",
)
@click.option(
    "--batch-size",
    metavar="N",
    type=click.IntRange(min=1),
    help="Largest batch (batching.max_batch_size, default 32).",
)
@_config_option
@_engine_option
@_set_option
@_env_file_option
def classify(
    paths: tuple[Path, ...],
    recursive: bool,
    output: str | None,
    features: str | None,
    top_k: int | None,
    batch_size: int | None,
    config_path: Path | None,
    engine: str | None,
    settings: tuple[str, ...],
    env_files: tuple[str, ...],
) -> None:
    """Classify image files on this machine, batched on the replica pool (every core).

    Each PATH is an image file; a directory (its .jpg .jpeg .png .bmp .webp files, any
    case; all levels below with --recursive); or a list, a file ending in .txt or .lst
    with one path per line, relative to the list's folder (blank lines and # comments
    skipped). Rows follow the input order. A file that cannot be read or decoded gets a row
    with its error (unreadable, bad_image, ...) and the run goes on.

    The replicas are the config's [replicas] (more on a CPU: --set instances_per_device=2);
    an image not answered within batching.timeout_ms gets a deadline_exceeded row.

    Without --output: one image prints its JSON array, several an object keyed by path.
    A progress bar (images/s) shows on a terminal; a closing line on stderr gives the
    images/s reached. Exit 0: all classified; 1: some rows have an error; 2: a usage or
    configuration error (before any image is classified).
    """
    from gre.bulk.classify import api_answers, write_rows
    from gre.bulk.inputs import InputError, expand
    from gre.bulk.run import BlobError, BulkError, Summary
    from gre.bulk.writers import WriterError, output_format
    from gre.logs import configure_logging
    from gre.service import StartupError

    blobs = parse_features(features)
    if blobs and output is None:
        raise click.UsageError("--features needs --output (FILE.jsonl, .csv, .parquet or -)")
    try:
        if output is not None:
            output_format(output)
        inputs = expand(paths, recursive)
    except (WriterError, InputError) as exc:
        fail(str(exc))
    config = build_config(
        config_path, settings, env_files, engine=engine, max_batch_size=batch_size
    )
    configure_logging("warning")  # replicas' start-up chatter stays out of the way
    k = config.server.default_top_k if top_k is None else top_k
    summary: Summary
    try:
        if output is not None:
            summary = write_rows(config, inputs, output, k, blobs)
        else:
            answers, summary = api_answers(config, inputs, k)
    except (StartupError, BlobError, WriterError) as exc:
        fail(str(exc))
    except BulkError as exc:
        click.echo(f"gre: error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        kept = f"; {output} holds the rows answered so far" if output not in (None, "-") else ""
        click.echo(f"gre: error: interrupted{kept}", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if output is None:
        single = len(paths) == 1 and inputs == [str(paths[0])]
        shown: Any = answers[inputs[0]] if single else answers
        click.echo(json.dumps(shown, indent=2, ensure_ascii=False))
    click.echo(summary.line(), err=True)
    sys.exit(1 if summary.errors else 0)


@main.command()
@_config_option
@_set_option
@_env_file_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def info(
    config_path: Path | None, settings: tuple[str, ...], env_files: tuple[str, ...], as_json: bool
) -> None:
    """Print the model, the GPUs found (NVML), and the replica plan."""
    from gre.info import describe, render

    config = build_config(config_path, settings, env_files)
    try:
        facts = describe(config)
    except ValueError as exc:
        fail(str(exc))
    click.echo(json.dumps(facts, indent=2) if as_json else render(facts))


def _fetched_line(fetched: Fetched) -> str:
    """One line per file ``gre fetch`` put in place."""
    how = {"present": "present, kept", "downloaded": "downloaded", "extracted": "extracted"}
    replaced = " (replaced a file that failed its checks)" if fetched.replaced else ""
    return f"{fetched.path}: {how[fetched.action]}{replaced}, sha1 {fetched.sha1}"


def _fetch_target(
    target: str, directory: Path, sha1: str | None, mirror: str | None, manifest: Path | None
) -> list[Fetched]:
    """Fetch a URL (``target`` has ``://``) or a manifest name, with a progress bar on stderr.

    Raises:
        FetchError: see :func:`gre.zoo.fetch.fetch_url` and :func:`~gre.zoo.fetch.fetch_model`.
    """
    from gre.zoo.fetch import fetch_model, fetch_url, new_client
    from gre.zoo.manifest import load_manifest
    from gre.zoo.progress import BarProgress

    with new_client() as client, BarProgress() as progress:
        if "://" in target:
            return [fetch_url(target, directory, sha1=sha1, client=client, progress=progress)]
        return fetch_model(
            target, directory, manifest=load_manifest(manifest), client=client,
            progress=progress, mirror=mirror,
        )  # fmt: skip


@main.command()
@click.argument("target", metavar="NAME|URL", required=False)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("models"),
    show_default=True,
    help="Folder to fetch into: a NAME's files go to DIR/NAME/, where config/NAME.toml "
    "expects them (models/NAME/ from the repository root).",
)
@click.option("--sha1", metavar="HEX", help="With a URL: the SHA-1 the file must have.")
@click.option(
    "--mirror",
    metavar="URL",
    help="With a NAME: fetch each file from URL/NAME/FILE instead of its origin, e.g. an "
    "air-gapped `python -m http.server -d models` (checksums are verified all the same).",
)
@click.option(
    "--manifest",
    "manifest_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Manifest TOML to read instead of gre's own (its form: gre/zoo/manifest.py).",
)
@click.option("--list", "list_names", is_flag=True, help="List the names known, then exit.")
def fetch(
    target: str | None,
    directory: Path,
    sha1: str | None,
    mirror: str | None,
    manifest_path: Path | None,
    list_names: bool,
) -> None:
    """Download a model NAME's files (deploy prototxt, caffemodel, synset words, mean) into
    --dir/NAME/, or one URL into --dir. Each is verified (SHA-1, size in bytes) before it is
    renamed into place; files already there and verified are kept; an interrupted download
    resumes on the next run (HTTP Range). Exit 1 on failure."""
    from gre.zoo.errors import FetchError
    from gre.zoo.manifest import load_manifest

    is_url = target is not None and "://" in target
    if sha1 is not None and not is_url:
        raise click.UsageError("--sha1 goes with a URL; a NAME's checksums are in the manifest")
    if mirror is not None and is_url:
        raise click.UsageError("--mirror goes with a NAME; give the mirror's URL itself instead")
    try:
        if list_names:
            for name, model in load_manifest(manifest_path).models.items():
                click.echo(f"{name}  {model.description}".rstrip())
            return
        if target is None:
            raise click.UsageError("give a model NAME or a URL (--list shows the names)")
        results = _fetch_target(target, directory, sha1, mirror, manifest_path)
    except FetchError as exc:
        click.echo(f"gre: error: {exc}", err=True)
        sys.exit(EXIT_FETCH)
    except KeyboardInterrupt:
        click.echo("gre: error: interrupted; partial downloads (*.part) are kept: run the "
                   "same command again to resume", err=True)  # fmt: skip
        sys.exit(EXIT_INTERRUPTED)
    for fetched in results:
        click.echo(_fetched_line(fetched))
    if not is_url and directory == Path("models") and Path("config", f"{target}.toml").is_file():
        click.echo(f"serve it: gre serve --config config/{target}.toml")


# Registered last: gre.spark.command imports parse_settings from this module, lazily.
from gre.spark.command import spark as spark_command  # noqa: E402

main.add_command(spark_command)
