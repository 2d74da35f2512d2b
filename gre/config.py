"""gre's configuration: TOML, validated with pydantic, overridable from the environment and CLI.

Sources, in rising priority: the TOML file; env files (``gre serve --env-file``, shell
fragments such as the Bitfusion AMI's ``/etc/default/gpurestengine``, read by
:mod:`gre.envfile`), each later one above the earlier; the process environment; command-line
flags. An env file and the environment are read alike: ``GRE_<KEY>`` (the key's name in upper
case, e.g. ``GRE_MAX_BATCH_SIZE=16``; values are read as TOML values where they parse, else as
strings), then, above those, the Bitfusion AMI names ``DEPLOY_PROTOTXT`` (or the AMI's own
spelling ``DEPLOY_PROTEXT``), ``CAFFE_MODEL``, ``MEAN`` and ``SYNSET_WORDS``. A key set by a
higher source wins whatever name set it below (``GRE_PORT=8001 gre serve --env-file F`` serves
on 8001). An unknown ``GRE_*`` name is logged as a warning (logger ``gre.config``) with the
nearest known one. Relative paths resolve against the folder of the file they appear in (the
working directory for env-file, environment and CLI values, as a shell would pass them). A
path written ``package:NAME/FILE`` names a file inside an installed Python package without
importing it.
"""

from __future__ import annotations

import difflib
import importlib.util
import ipaddress
import logging
import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from gre.envfile import EnvFileError, read_env_file

log = logging.getLogger(__name__)

PositiveInt = Annotated[int, Field(ge=1)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Section):
    """``[model]``: which net to serve and with which engine."""

    name: str = "open_nsfw"
    deploy: Path = Field(default=Path("package:nsfw/deploy.prototxt"))
    weights: Path = Field(default=Path("package:nsfw/resnet_50_1by2_nsfw.caffemodel"))
    #: One class per line, line i = class i (Caffe's synset_words.txt); the label is the line.
    synset_words: Path | None = None
    #: Inline labels, for nets with few classes; used when synset_words is not set.
    labels: list[str] | None = Field(default_factory=lambda: ["sfw", "nsfw"])
    #: ``"auto"``: the torch engine when the replicas run on GPUs, opencv on the CPU (the
    #: faster there on 6 of 8 zoo nets, ~3x pycaffe's img/s, open_nsfw's outputs within
    #: 1.2e-9 of pycaffe's: docs/fidelity.md).
    engine: Literal["auto", "caffe", "opencv", "torch", "null"] = "auto"
    #: Blob to read as the output; default: the net's last output blob.
    output_blob: str | None = None
    #: Apply softmax to the output blob (for nets that end in logits, not a Softmax layer).
    apply_softmax: bool = False
    #: The torch engine's arithmetic: ``"fp32"`` (within 1e-5 of pycaffe; TF32 off), or
    #: ``"fp16"`` / ``"bf16"`` with channels_last (faster on a GPU; accuracy in
    #: docs/fidelity.md). Other engines run fp32 and refuse the others.
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"


class PreprocessConfig(_Section):
    """``[preprocess]``: image to input blob, in Caffe's terms (see README and
    docs/fidelity.md)."""

    #: ``[H, W]``: squash to this size then crop (ImageNet: 256x256); ``"input"``: squash
    #: straight to the net input (GRE, Caffe's C++ classification example).
    resize: tuple[PositiveInt, PositiveInt] | Literal["input"] = (256, 256)
    crop: Literal["center", "none"] = "center"
    #: Per-channel values in the net's channel order, or a .binaryproto / .npy mean file.
    mean: list[float] | Path | None = Field(default_factory=lambda: [104.0, 117.0, 123.0])
    mean_mode: Literal["pixel", "image"] = "pixel"
    #: caffe.io.Transformer.set_raw_scale: pixels are in [0, raw_scale] before the mean.
    raw_scale: float = Field(default=255.0, gt=0)
    #: caffe.io.Transformer.set_input_scale: multiplies after the mean (MobileNet: 0.017).
    input_scale: float = Field(default=1.0, gt=0)
    channel_order: Literal["BGR", "RGB"] = "BGR"
    #: How the squash (``resize``) is computed. ``"opencv"`` (default, the fast path):
    #: cv2.resize INTER_LINEAR on the 8-bit image, without the anti-aliasing pycaffe applies
    #: when downsampling, so it differs from caffe.io.resize_image by up to ~5 levels on
    #: average and tens of levels at sharp edges (docs/fidelity.md). ``"caffe"``: reproduce
    #: caffe.io.resize_image (scikit-image resize, order 1, mode "constant": Gaussian
    #: anti-aliasing, then bilinear) in float32 with OpenCV and NumPy, within 1e-4 levels of
    #: pycaffe; about 7 ms instead of 0.4 ms for a 480x360 photo.
    resize_method: Literal["opencv", "caffe"] = "opencv"
    #: Where JPEGs decode: ``"cpu"`` (OpenCV's libjpeg-turbo in the replica's decode
    #: threads) or ``"gpu"`` (the torch engine only: nvJPEG through torchvision, one batched
    #: call per batch, then squash and crop on the device; other formats, CMYK, lossless and
    #: arithmetic JPEG decode on the CPU). Needs a 3-channel net and resize_method "opencv".
    decode: Literal["cpu", "gpu"] = "cpu"


class BatchingConfig(_Section):
    """``[batching]``: the dynamic batcher."""

    max_batch_size: int = Field(default=32, ge=1, le=4096)
    #: A batch's encoded images total at most this many bytes (an image larger than this goes
    #: alone); each replica's shared image arena (gre/replicas/arena.py) is this size, so a
    #: batch never crosses to its replica pickled (100 photos of 3.3 MiB at once grew the front
    #: end +466 MiB that way, +279 MiB through the arena: benchmarks/flood.py --photos).
    max_batch_bytes: int = Field(default=32 * 1024 * 1024, ge=1)
    #: How long an idle replica may wait for a fuller batch (0 = never wait), ms.
    max_queue_delay_ms: float = Field(default=0.0, ge=0, le=60_000)
    #: Requests waiting beyond this many are refused with 503.
    max_queue_size: int = Field(default=256, ge=1)
    #: Each request's deadline from arrival, ms; ``X-Request-Timeout-Ms`` may lower it.
    timeout_ms: float = Field(default=10_000.0, gt=0)


class ReplicasConfig(_Section):
    """``[replicas]``: worker processes, each bound to one device."""

    #: ``"cpu"``, ``"all"`` (every GPU found, else the CPU) or a list of GPU indices, where
    #: each ``"cpu"`` entry is a CPU device of its own (``["cpu", "cpu"]``: two CPU devices).
    devices: Literal["all", "cpu"] | list[Annotated[int, Field(ge=0)] | Literal["cpu"]] = "all"
    instances_per_device: int = Field(default=1, ge=1, le=64)
    #: Compute threads per CPU replica; 0 = the machine's cores divided among CPU replicas.
    cpu_threads: int = Field(default=0, ge=0)
    #: Threads per replica that decode and preprocess images; 0 = the machine's cores
    #: divided among all replicas (a GPU replica's CPU work is decoding: give it the cores).
    decode_threads: int = Field(default=0, ge=0)
    #: A replica that takes longer over one batch is killed and restarted, ms.
    replica_timeout_ms: float = Field(default=30_000.0, gt=0)
    #: How long a replica may take to load its net and warm up, s.
    start_timeout_s: float = Field(default=120.0, gt=0)
    #: Consecutive failed starts of one replica after which the service exits non-zero.
    start_attempts: int = Field(default=3, ge=1)
    #: First wait before restarting a replica, doubled per consecutive crash (max 30 s), ms.
    restart_backoff_ms: float = Field(default=250.0, ge=0)
    #: A replica whose resident memory passes this after a batch is stopped and replaced
    #: between batches (counted as a restart), MiB; ``None``: no limit.
    max_rss_mb: float | None = Field(default=None, gt=0)


class ServerConfig(_Section):
    """``[server]``: HTTP front end."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    #: HTTP worker processes sharing the port (1: this process serves HTTP itself). With
    #: more, they parse HTTP on every core and hand each request to this process, whose one
    #: batcher keeps batches whole (README "How it works"). 0: half the cores the replicas
    #: leave (gre.replicas.plan.http_workers), at least 1: 1 with CPU replicas.
    workers: int = Field(default=0, ge=0, le=256)
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1)
    #: Body bytes all requests together may hold (declared or received, until answered);
    #: beyond it, 503 ``too_many_bytes``. Bounds what uploads can make the front end hold.
    max_inflight_body_bytes: int = Field(default=256 * 1024 * 1024, ge=1)
    max_pixels: int = Field(default=40_000_000, ge=1)
    default_top_k: int = Field(default=5, ge=1)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: One JSON line per answered request at info level (errors are always logged).
    access_log: bool = True
    #: After SIGTERM, how long queued and in-flight requests may take to finish, s.
    drain_timeout_s: float = Field(default=30.0, ge=0)
    #: A request head must be complete this long after the connection opens (or, kept alive,
    #: after its first byte), else 408: heads are small, so only a stalling client needs more.
    header_timeout_s: float = Field(default=10.0, gt=0)
    #: The whole body must arrive this long after the head, else 408; 60 s lets a
    #: max_body_bytes body through at 2.2 Mbit/s (a 1 MB photo at 135 kbit/s).
    body_timeout_s: float = Field(default=60.0, gt=0)
    #: Longest request head (request line + headers) before 431, bytes (as h11 and Node).
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    #: Idle time allowed between requests on a kept-alive connection, s (uvicorn's).
    keep_alive_timeout_s: int = Field(default=5, ge=1)
    #: Open connections beyond which a new one closes an idle one (503 if none is idle).
    max_connections: int = Field(default=1024, ge=1)
    #: Pending-connection queue of the listening socket (capped by net.core.somaxconn).
    backlog: int = Field(default=2048, ge=1)
    #: Serve the try-it page at ``GET /`` (static files in the package).
    ui: bool = True
    #: Serve ``POST /admin/reload`` (re-read the config, swap the model without dropping a
    #: request); SIGHUP reloads whatever this says.
    admin_reload: bool = False
    #: Client addresses (IPs or CIDR networks) allowed to call ``/admin/*``.
    admin_clients: list[str] = Field(default_factory=lambda: ["127.0.0.1", "::1"])

    @field_validator("admin_clients")
    @classmethod
    def _networks(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network") from None
        return entries

    @model_validator(mode="after")
    def _body_fits_budget(self) -> ServerConfig:
        if self.max_body_bytes > self.max_inflight_body_bytes:
            raise ValueError(
                f"max_body_bytes ({self.max_body_bytes}) exceeds max_inflight_body_bytes "
                f"({self.max_inflight_body_bytes}): no body that large could ever be held"
            )
        return self


class Config(_Section):
    """The whole configuration; every section has defaults that serve open_nsfw."""

    model: ModelConfig = ModelConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    batching: BatchingConfig = BatchingConfig()
    replicas: ReplicasConfig = ReplicasConfig()
    server: ServerConfig = ServerConfig()


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the source, key and problem."""


_SECTIONS: dict[str, type[_Section]] = {
    name: info.annotation  # type: ignore[misc]
    for name, info in Config.model_fields.items()
}
#: Flat key -> section, for ``GRE_<KEY>`` and ``--set KEY=VALUE``; keys are unique by design.
KEY_SECTIONS: dict[str, str] = {
    key: section for section, cls in _SECTIONS.items() for key in cls.model_fields
}
_PATH_KEYS = {"deploy", "weights", "synset_words", "mean"}
#: The Bitfusion AMI's /etc/default names. Its /etc/default/gpurestengine spells the first
#: DEPLOY_PROTEXT; both spellings are accepted, and must agree where both are set.
AMI_NAMES = {
    "DEPLOY_PROTOTXT": "deploy",
    "DEPLOY_PROTEXT": "deploy",
    "CAFFE_MODEL": "weights",
    "MEAN": "mean",
    "SYNSET_WORDS": "synset_words",
}
#: ``GRE_*`` variables that are not config keys but that gre, its scripts, tests or benchmarks
#: read; seeing them is no reason for an "unknown setting" warning.
OTHER_GRE_NAMES = frozenset(
    {
        "GRE_CONFIG",  # gre's --config (gre/cli.py); also honoured in an env file
        "GRE_CAFFE_PYTHONPATH",  # scripts/install-caffe.sh: a pycaffe of one's own
        "GRE_TORCH_SPEC",  # scripts/install-torch.sh: the torch to install instead
        "GRE_CACHE_DIR",  # scripts/build-caffe.sh, benchmarks: the build and download cache
        "GRE_SHARED",  # benchmarks/data.py: the shared test data
        "GRE_FUZZ_EXAMPLES",  # Makefile, tests: fuzzing length
        "GRE_PEERS",  # Makefile, tests/benchmarks: which peers to test
        "GRE_PEER_RUN",  # benchmarks/peers/launch.py: marks a peer's processes, gre's too
        "GRE_UI_SCREENSHOT",  # tests/http/test_ui.py: where to save the page's screenshot
        "GRE_TRITON_DEBUG",  # benchmarks/peers/triton: PyTriton's debug log
    }
)


def resolve_path(value: str, base: Path) -> str:
    """Resolve ``package:NAME/FILE`` or a path relative to ``base`` to an absolute path.

    Raises:
        ConfigError: the package is not installed.
    """
    if value.startswith("package:"):
        package, _, rest = value.removeprefix("package:").partition("/")
        spec = importlib.util.find_spec(package)  # finds without importing the package
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(f"{value}: Python package {package!r} is not installed")
        return str(Path(next(iter(spec.submodule_search_locations))) / rest)
    return str((base / Path(value).expanduser()).resolve())


def parse_value(raw: str) -> Any:
    """Read an environment or CLI value: a TOML value if it parses (16, [0, 2]), else a string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


class _Layered:
    """Raw values keyed by (section, key), each remembering where it came from."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, Any]] = {}
        self.sources: dict[tuple[str, str], str] = {}

    def set(self, section: str, key: str, value: Any, source: str, base: Path) -> None:
        if key in _PATH_KEYS and isinstance(value, str):
            value = resolve_path(value, base)
        self.values.setdefault(section, {})[key] = value
        self.sources[(section, key)] = source
        if key == "synset_words" and section == "model":
            self.values["model"].setdefault("labels", None)  # synset words replace the default
        if key == "deploy" and section == "model" and isinstance(value, str):
            # Another net than the default's: name it after its model-zoo folder
            # (models/bvlc_googlenet/deploy.prototxt -> bvlc_googlenet), not "open_nsfw".
            path = Path(value)
            self.values["model"].setdefault("name", path.parent.name or path.stem)


def load_config(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    env_files: Sequence[Path] = (),
) -> Config:
    """Build the configuration from a TOML file, env files, the environment and CLI overrides.

    Args:
        path: TOML file; ``None``: the ``GRE_CONFIG`` of the last env file that sets it when
            ``environ`` lacks one (the environment's own is the CLI's ``--config`` default),
            else the embedded default model (open_nsfw).
        environ: the environment (default ``os.environ``).
        overrides: flat ``key -> value`` from the command line (strings are parsed as by
            :func:`parse_value`; ``None`` values are ignored).
        env_files: shell fragments of assignments (:func:`gre.envfile.read_env_file`), read as
            the environment is, beneath it; a later file wins over an earlier one.

    Raises:
        ConfigError: unreadable file, TOML or env-file syntax, unknown key, invalid value,
            ``DEPLOY_PROTOTXT`` and ``DEPLOY_PROTEXT`` set differently in one source, or a
            model file that does not exist -- the message names the source and the key.
    """
    environ = os.environ if environ is None else environ
    layered = _Layered()
    cwd = Path.cwd()
    layers: list[tuple[str, Mapping[str, str]]] = [
        (f"env file {file}", _read_env_file(file)) for file in env_files
    ]
    if path is None and not environ.get("GRE_CONFIG"):
        path = _config_from_env_files(layers, cwd)
    layers.append(("environment", environ))
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror or exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from exc
        for section, table in raw.items():
            if section not in _SECTIONS or not isinstance(table, dict):
                raise ConfigError(f"{path}: unknown section [{section}]")
            for key, value in table.items():
                layered.set(section, key, value, str(path), path.parent.resolve())
    for where, variables in layers:
        _apply_environment(layered, where, variables, cwd)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in KEY_SECTIONS:
            raise ConfigError(f"command line: unknown key {key!r}")
        value = parse_value(value) if isinstance(value, str) else value
        layered.set(KEY_SECTIONS[key], key, value, f"command line {key}", cwd)
    try:
        config = Config.model_validate(layered.values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, layered, path)) from None
    config = _resolve_packaged_defaults(config)
    _check_files(config, layered)
    return config


def _read_env_file(path: Path) -> dict[str, str]:
    """:func:`gre.envfile.read_env_file`, its errors as :class:`ConfigError`."""
    try:
        return read_env_file(path)
    except OSError as exc:
        raise ConfigError(f"env file {path}: {exc.strerror or exc}") from exc
    except EnvFileError as exc:
        raise ConfigError(f"env file {exc}") from exc


def _config_from_env_files(
    layers: Sequence[tuple[str, Mapping[str, str]]], cwd: Path
) -> Path | None:
    """The ``GRE_CONFIG`` of the last env file that sets it, resolved against ``cwd``."""
    for _, variables in reversed(layers):
        if variables.get("GRE_CONFIG"):
            return Path(resolve_path(variables["GRE_CONFIG"], cwd))
    return None


def _apply_environment(
    layered: _Layered, where: str, variables: Mapping[str, str], cwd: Path
) -> None:
    """Set the keys one environment (``where``: ``"environment"`` or ``"env file F"``) names:
    ``GRE_<KEY>``, then the AMI names above them. Empty AMI values are ignored, as before."""
    _warn_unknown(where, variables)
    for key, section in KEY_SECTIONS.items():
        name = f"GRE_{key.upper()}"
        if name in variables:
            layered.set(section, key, parse_value(variables[name]), f"{where} {name}", cwd)
    for key, (name, value) in _ami_values(where, variables).items():
        layered.set(KEY_SECTIONS[key], key, parse_value(value), f"{where} {name}", cwd)


def _ami_values(where: str, variables: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """``key -> (name, value)`` for the AMI names set in one environment.

    Raises:
        ConfigError: two names of one key (DEPLOY_PROTOTXT, DEPLOY_PROTEXT) set differently.
    """
    chosen: dict[str, tuple[str, str]] = {}
    for name, key in AMI_NAMES.items():
        value = variables.get(name)
        if not value:
            continue
        if key in chosen and chosen[key][1] != value:
            other, first = chosen[key]
            raise ConfigError(
                f"{where}: {other}={first!r} and {name}={value!r} both set "
                f"{KEY_SECTIONS[key]}.{key}, differently; set one of them"
            )
        chosen.setdefault(key, (name, value))
    return chosen


#: Every ``GRE_*`` name gre knows, for the "did you mean" of an unknown one.
_KNOWN_GRE_NAMES = frozenset({f"GRE_{key.upper()}" for key in KEY_SECTIONS} | OTHER_GRE_NAMES)


def _warn_unknown(where: str, variables: Mapping[str, str]) -> None:
    """Log a warning for each ``GRE_*`` name that no key or tool of gre's reads (a typo would
    otherwise leave its setting silently at the default)."""
    for name in sorted(variables):
        if not name.startswith("GRE_") or name in _KNOWN_GRE_NAMES:
            continue
        close = difflib.get_close_matches(name, sorted(_KNOWN_GRE_NAMES), n=1)
        hint = f": did you mean {close[0]}?" if close else ""
        place = "the environment" if where == "environment" else where
        log.warning("unknown setting %s in %s, ignored%s", name, place, hint)


def _resolve_packaged_defaults(config: Config) -> Config:
    model = config.model
    update = {
        key: Path(resolve_path(str(value), Path.cwd()))
        for key, value in (("deploy", model.deploy), ("weights", model.weights))
        if str(value).startswith("package:")
    }
    return (
        config.model_copy(update={"model": model.model_copy(update=update)}) if update else config
    )


def _describe(exc: ValidationError, layered: _Layered, path: Path | None) -> str:
    lines = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        dotted = ".".join(loc[:2])
        source = layered.sources.get((loc[0], loc[1])) if len(loc) > 1 else None
        source = source or (str(path) if path else "config")
        got = f" (got {error['input']!r})" if error["type"] != "extra_forbidden" else ""
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        lines.append(f"{source}: {dotted}: {message}{got}")
    return "\n".join(lines)


def _check_files(config: Config, layered: _Layered) -> None:
    files = {
        ("model", "deploy"): config.model.deploy,
        ("model", "weights"): config.model.weights,
        ("model", "synset_words"): config.model.synset_words,
        ("preprocess", "mean"): config.preprocess.mean
        if isinstance(config.preprocess.mean, Path)
        else None,
    }
    for (section, key), file in files.items():
        if file is None or (config.model.engine == "null" and key == "weights"):
            continue
        source = layered.sources.get((section, key), "default")
        if not file.is_file():
            raise ConfigError(f"{source}: {section}.{key}: no such file: {file}")
        if not os.access(file, os.R_OK):
            raise ConfigError(f"{source}: {section}.{key}: file is not readable: {file}")
