"""Experiment configs: one YAML file → one typed, frozen model, the experiment kind's.

Why typed: a typo in a key must stop the run before hours of supernet training, with one clear
message that names the file, the line, the dotted key path and the nearest valid name. So every
section is a pydantic model with ``extra="forbid"``; :func:`validate_config` turns the first
``ValidationError`` into one :class:`InputError`.

:class:`ExperimentConfig` holds what every experiment has (kind, name, seed, dataset, executor, device,
distributed, output). Each experiment kind (:mod:`nas.kinds`) validates with its own subclass that adds
its sections, the ones it needs as required fields; this module knows no kind. Reading is two steps so
the kind can be looked up in between: :func:`read_config` (YAML, ``--set`` overrides, the checks no model
can make) and :func:`validate_config` against a model; :func:`nas.kinds.load_experiment` does both.

Paths of referenced files (data roots, and later tables and checkpoints) resolve against the config
file's folder (use :data:`ExistingPath`); ``output.root`` resolves against the working directory,
where users expect ``runs/`` to appear.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from nas.config_errors import short_repr as _short, translate_validation_error
from nas.config_paths import ExistingPath
from search_spaces.errors import InputError, nearest
from search_spaces.inputs import MAX_CONFIG_BYTES, MAX_INT, dotted as _dotted, find_bad_number, parse_yaml, read_text

__all__ = ["ExistingPath", "Section", "DatasetConfig", "SearchSpaceConfig", "ExecutorConfig", "DeviceConfig",
           "DistributedConfig", "OutputConfig", "ExperimentConfig", "ConfigData", "LoadedConfig", "read_config",
           "validate_config", "apply_overrides", "config_to_yaml", "config_diff", "translate_validation_error",
           "RESERVED_OPTIONS"]


class Section(BaseModel):
    """A config section: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetConfig(Section):
    """Which dataset the subnets are for (``load_dataset(name, root=..., seed=..., **options)``)."""

    name: str = Field(description="a registered dataset: digits (built in), mnist, cifar10, imagefolder (your own "
                                  "class tree of images), tinyshakespeare, cora, citeseer")
    root: ExistingPath | None = Field(None, description="folder holding the dataset files (default: $QNAS_DATA); must "
                                                        "exist")
    options: dict[str, Any] = Field(default_factory=dict, description="loader options, e.g. max_train, val_fraction; "
                                                                      "cifar10: variant full (50k/10k, the default "
                                                                      "when present) or subset (10k/10k)")


class SearchSpaceConfig(Section):
    """Which registered space to search (``get_space(name, **options)``)."""

    name: str = Field(description="a registered space: mbv3, resnet, spaceevo (options: {candidate: c10-3333-1111}), "
                                  "gnn (kind: lpgnas)")
    options: dict[str, Any] = Field(default_factory=dict, description="the space's options (in_channels, image_size, "
                                                                      "stage_channels, w_bits, ...); in_channels, "
                                                                      "num_classes and image_size must match the "
                                                                      "dataset")


class ExecutorConfig(Section):
    """Where the expensive evaluations (supernet accuracy) run: ``local`` (this process) or ``ray``.

    ``threads``: torch threads of this process (training, evaluation) and of each Ray worker. The
    default 1 is deliberate: on shared or busy machines multi-threaded PyTorch slows down by an
    order of magnitude when cores are oversubscribed; raise it on a dedicated machine.

    Ray only: ``address`` (null: start a private Ray here; ``auto``: the cluster ``ray start`` made on
    this machine; ``HOST:PORT`` or ``ray://HOST:PORT``), ``num_workers`` actors of ``cpus_per_worker``
    CPUs plus ``resources`` (e.g. ``{GPU: 1}`` or a custom node resource) each, ``max_retries``
    restarts of a worker that dies mid-evaluation.
    """

    kind: str = Field("local", description="local (this process) or ray (Ray workers; see docs/guide.md)")
    address: str | None = Field(None, description="ray: null starts a private Ray here (loopback only, token auth); "
                                                  "auto joins the cluster ray start made on this machine; HOST:PORT or"
                                                  " ray://HOST:PORT")
    num_workers: int = Field(2, ge=1, le=10_000, strict=True, description="ray: actors; each batch is dealt over them,"
                                                                          " one call per candidate")
    cpus_per_worker: float = Field(0.5, gt=0, le=1024, description="ray: CPUs reserved per worker (fractional)")
    resources: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict,
                                                                description="ray: extra resources per worker, e.g. "
                                                                            "{GPU: 1} (it then evaluates on its GPU)")
    threads: int = Field(1, ge=1, le=1024, strict=True, description="torch threads of this process and of each Ray "
                                                                    "worker; 1 is deliberate on shared machines")
    max_retries: int = Field(3, ge=0, le=100, strict=True, description="ray: restarts of a worker that dies "
                                                                       "mid-evaluation (its calls are retried)")

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        if value not in ("local", "ray"):
            raise ValueError(f"unknown executor {value!r}{nearest(value, ['local', 'ray'])}; expected 'local' or 'ray'")
        return value

    @field_validator("address")
    @classmethod
    def _address_form(cls, value: str | None) -> str | None:
        if value is not None and value != "auto":
            from nas.executors.ray_env import parse_address

            try:
                parse_address(value)
            except InputError as err:
                raise ValueError(err.detail) from None
        return value

    @field_validator("resources")
    @classmethod
    def _no_cpu_key(cls, value: dict[str, float]) -> dict[str, float]:
        if "CPU" in value:
            raise ValueError("set CPUs with executor.cpus_per_worker, not resources.CPU")
        return value

    @field_validator("address", "num_workers", "cpus_per_worker", "resources", "max_retries")
    @classmethod
    def _ray_only(cls, value: Any, info: ValidationInfo) -> Any:
        default = cls.model_fields[str(info.field_name)].get_default(call_default_factory=True)
        if info.data.get("kind") == "local" and value != default:  # config.yaml repeats defaults: those are fine
            raise ValueError("applies only with executor.kind: ray (this executor is local); remove it or set "
                             "kind: ray")
        return value

    def describe(self) -> str:
        """One line for ``qnas validate`` and the report."""
        if self.kind == "local":
            return f"local (this process, {self.threads} torch thread(s))"
        extra = "".join(f" + {k} {v:g}" for k, v in self.resources.items())
        return (f"ray at {self.address or 'a private Ray on this machine'}: {self.num_workers} workers × "
                f"{self.cpus_per_worker:g} CPU{extra}, {self.threads} thread(s) each")


class DeviceConfig(Section):
    """Where the supernet trains and evaluates: ``type`` (``auto``: CUDA when present, else the CPU), the CUDA
    ``index``, the ``precision`` (``auto``: bf16 autocast on CUDA, fp32 on the CPU) and ``torch.compile``.

    Checked against this machine before any work (:meth:`placement`): CUDA where none exists, an index out
    of range or fp16 on the CPU is one error naming the key and what the machine has.
    """

    type: Literal["auto", "cpu", "cuda"] = Field("auto", description="where the supernet trains and evaluates: auto "
                                                                     "(CUDA when present, else the CPU), cpu or cuda")
    index: int = Field(0, ge=0, le=1023, strict=True, description="the CUDA device")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="auto: bf16 autocast on CUDA, fp32 "
                                                                                   "on the CPU; fake quantization "
                                                                                   "always computes in fp32")
    compile: bool = Field(False, description="torch.compile the fake-quantization kernels (eager fallback)")

    def placement(self) -> Any:
        """The :class:`supernets.device.Placement` this section resolves to here (imports torch)."""
        from supernets.device import resolve_placement

        return resolve_placement(type=self.type, index=self.index, precision=self.precision, compile=self.compile)


class DistributedConfig(Section):
    """How many processes train the supernet (data-parallel, gradients averaged) and how they talk.

    ``backend: auto`` is NCCL on CUDA, gloo on the CPU; ``launcher: local`` spawns the processes on this
    machine, ``ray`` runs them as Ray Train workers on the cluster of ``executor.address`` (null: a private
    Ray here), rank 0 writing the checkpoint into the run folder, which must then be on storage every node
    mounts at the same path. Checked before any work: against this machine (too many processes for its CPUs
    or GPUs, NCCL without CUDA), or for ``ray`` against the cluster's CPUs (GPUs on CUDA). Only supernet
    training uses it; the search runs in the main process afterwards. A resume may change it (``--set
    distributed.processes=N``).
    ``sync_batch_norm``: BN statistics of the global batch (the weights of one process training it); false
    normalises each shard by itself, as plain DDP does: fewer collectives, different results.
    """

    processes: int = Field(1, ge=1, le=1024, strict=True, description="processes training the supernet, each on its "
                                                                      "shard of every batch (a resume may change it)")
    backend: Literal["auto", "gloo", "nccl"] = Field("auto", description="auto: NCCL on CUDA, gloo on the CPU")
    launcher: Literal["local", "ray"] = Field("local", description="local spawns the processes on this machine; ray "
                                                                   "runs them as Ray Train workers on the cluster of "
                                                                   "executor.address (the run folder on storage every "
                                                                   "node sees); one process trains here either way")
    sync_batch_norm: bool = Field(True, description="BN statistics over the global batch (as one process); false: per "
                                                    "shard, as plain DDP")


class OutputConfig(Section):
    """Where runs go (relative to the working directory) and how many subnets to export."""

    root: Path = Field(Path("runs"), description="where run folders are created (relative to the working directory)")
    export_top: int = Field(5, ge=0, strict=True, description="Pareto subnets written to subnets/, spread along the "
                                                              "front")


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class ExperimentConfig(Section):
    """What every experiment has, whatever its kind; each kind adds its own sections.

    ``name`` defaults to the config file's stem and names the run folder. A kind's model is a subclass
    (:attr:`nas.kinds.ExperimentKind.config_model`): a section the kind needs is a field without a
    default, one it may use a field defaulting to null; the sections of other kinds are not fields.
    """

    kind: str = Field("search", description="the experiment's procedure, a registered kind (nas/kinds); each adds its "
                                            "own sections (see below), and another kind's section is refused")
    name: str = Field("experiment", description="names the run folder (letters, digits, _ . -); default: the config "
                                                "file's stem")
    seed: int = Field(0, ge=0, strict=True, description="seeds the dataset split and, unless search.seed is set, the "
                                                        "searcher")
    dataset: DatasetConfig = Field(description="the data the subnets are for")
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig, description="where the expensive evaluations run")
    device: DeviceConfig = Field(default_factory=DeviceConfig, description="where the supernet trains and evaluates")
    distributed: DistributedConfig = Field(default_factory=DistributedConfig,
                                           description="how many processes train the supernet")
    output: OutputConfig = Field(default_factory=OutputConfig, description="where the run folder goes and what it "
                                                                           "exports")

    @field_validator("name")
    @classmethod
    def _folder_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("expected up to 100 letters, digits, '_', '.' or '-' (it names the run folder)")
        return value


C = TypeVar("C", bound=ExperimentConfig)


@dataclass(frozen=True)
class _Origin:
    """Where a config's values came from: the file, each key's line, the ``--set`` overrides."""

    source: Path
    lines: Mapping[str, int]
    overrides: Mapping[str, str]

    def error(self, field: str, message: str) -> InputError:
        """An InputError for ``field`` pointing at the ``--set`` or the file line it came from."""
        below = [t for k, t in self.overrides.items() if field == k or field.startswith((k + ".", k + "["))]
        above = [t for k, t in self.overrides.items() if k.startswith((field + ".", field + "["))]
        if below or (above and field not in self.lines):
            return InputError(message, source=f"--set {_clip((below or above)[0])}", field=field)
        line = self.lines.get(field)
        probe = field
        while line is None and ("." in probe or "[" in probe):
            probe = re.sub(r"(\.[^.\[]*|\[\d+\])$", "", probe)
            line = self.lines.get(probe)
        return InputError(message, source=self.source, field=field, line=line)


@dataclass(frozen=True)
class ConfigData(_Origin):
    """A config as read (:func:`read_config`), not yet validated: its mapping of sections."""

    data: dict[str, Any]


@dataclass(frozen=True)
class LoadedConfig(_Origin, Generic[C]):
    """A validated config (of its kind's model) and where its values came from (for errors found after
    validation)."""

    config: C


# ---- errors: one InputError from a ValidationError, YAML line numbers ----------------------------
def _clip(text: str, limit: int = 80) -> str:
    """``text`` on one line and at most ``limit`` characters (a ``--set`` may hold a whole list)."""
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."



def yaml_lines(root: yaml.Node | None, source: Path) -> dict[str, int]:
    """Dotted key path -> 1-based line of every key and list item of a composed document (see
    :func:`search_spaces.inputs.parse_yaml`, which bounds its size and depth); a key given twice is an error."""
    lines: dict[str, int] = {}

    def walk(node: yaml.Node, path: list[str | int]) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                key, line = str(key_node.value), key_node.start_mark.line + 1
                child = _dotted([*path, key])
                if key in seen:
                    raise InputError(f"key {key!r} appears twice (first on line {seen[key]})",
                                     source=source, field=child, line=line)
                seen[key], lines[child] = line, line
                walk(value_node, [*path, key])
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[_dotted([*path, i])] = item.start_mark.line + 1
                walk(item, [*path, i])

    if root is not None:
        walk(root, [])
    return lines


def _parse_override(text: str) -> tuple[list[str | int], Any]:
    key, sep, raw = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_]\w*(\.\w+)*", key.strip()):
        raise InputError("expected KEY=VALUE with a dotted key, e.g. search.budget=50", source=f"--set {_clip(text)}")
    try:
        value = parse_yaml(raw, source=f"--set {_clip(text)}")[0] if raw.strip() else None
    except InputError as err:
        raise InputError(f"cannot parse the value: {err.detail}", source=f"--set {_clip(text)}",
                         field=err.field) from None
    return [int(p) if p.isdigit() else p for p in key.strip().split(".")], value


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Apply ``a.b=c`` overrides (values parsed as YAML) to a copy of ``data``; returns it and the keys set."""
    out: dict[str, Any] = copy.deepcopy(dict(data))
    applied: dict[str, str] = {}
    for text in overrides:
        parts, value = _parse_override(text)
        node: Any = out
        for i, part in enumerate(parts[:-1]):
            here = ".".join(map(str, parts[: i + 1]))
            if isinstance(node, list) and isinstance(part, int) and part < len(node):
                node = node[part]
            elif isinstance(node, dict):
                if node.get(str(part)) is None:
                    node[str(part)] = {}
                node = node[str(part)]
            else:
                raise InputError(f"{here!r} is not a section", source=f"--set {_clip(text)}")
            if not isinstance(node, (dict, list)):
                raise InputError(f"{here!r} holds {_short(node)}, not a section", source=f"--set {_clip(text)}")
        last = parts[-1]
        if isinstance(node, list) and isinstance(last, int) and last < len(node):
            node[last] = value
        elif isinstance(node, dict):
            node[str(last)] = value
        else:
            raise InputError(f"cannot set {last!r} inside a list", source=f"--set {_clip(text)}")
        applied[_dotted(parts)] = text
    return out, applied


RESERVED_OPTIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("dataset", "options"): ("name", "root", "seed"),  # load_dataset(name, root=..., seed=..., **options)
    ("search_space", "options"): ("name", "source"),  # get_space(name, source=..., **options)
    ("search", "options"): ("name", "space", "objectives", "constraints", "seed", "storage_dir", "context"),
}
"""Keywords that qnas passes itself to the consumer of each free-form ``options`` mapping (get_searcher for
``search.options``); an option of that name would reach it twice."""


def _check_free_form(raw: ConfigData) -> None:
    """Checks no model can make: numbers anywhere (options are free-form and reach library code that assumes
    finite sizes) and option names that collide with what qnas passes itself."""
    data = raw.data
    bad = find_bad_number(data)
    if bad is not None:
        what = "a finite number (.inf and .nan are not allowed)" if isinstance(bad[1], float) else \
            f"a number of magnitude at most 2**53 ({MAX_INT})"
        raise raw.error(_dotted(bad[0]), f"got {_short(bad[1])}; expected {what}")
    for (section, key), reserved in RESERVED_OPTIONS.items():
        options = data.get(section, {}).get(key) if isinstance(data.get(section), dict) else None
        clash = [name for name in reserved if isinstance(options, dict) and name in options]
        if clash:
            raise raw.error(f"{section}.{key}.{clash[0]}", f"{clash[0]!r} is set by qnas itself, not an option "
                                                          f"(reserved here: {', '.join(reserved)}); remove it")


def read_config(path: str | Path, overrides: Sequence[str] = ()) -> ConfigData:
    """Read the YAML config at ``path`` and apply the ``--set`` overrides; every problem is one InputError.

    The file goes through :func:`search_spaces.inputs.read_text` and :func:`~search_spaces.inputs.parse_yaml`
    (size, encoding, alias and nesting limits) before anything else looks at it; ``name`` defaults to the
    file's stem. What no model can check (:func:`_check_free_form`) is checked here; the rest is
    :func:`validate_config`'s, against the kind's model."""
    source = Path(path).expanduser().resolve()
    if not source.exists():
        raise InputError(f"config file not found: {source}")
    data, root = parse_yaml(read_text(source, what="config", max_bytes=MAX_CONFIG_BYTES), source=source)
    if data is None:
        raise InputError("the config is empty; expected a mapping of sections: dataset and those of the "
                         "experiment's kind (docs/config.md)", source=source)
    lines = yaml_lines(root, source)
    if not isinstance(data, dict):
        raise InputError(f"expected a mapping of sections, got {type(data).__name__}", source=source)
    data, applied = apply_overrides(data, overrides)
    data.setdefault("name", source.stem)
    raw = ConfigData(source=source, lines=lines, overrides=applied, data=data)
    _check_free_form(raw)
    return raw


def validate_config(raw: ConfigData, model: type[C], *, absent: Mapping[str, str] | None = None,
                    check_files: bool = True) -> LoadedConfig[C]:
    """Validate ``raw`` against ``model`` (a kind's :class:`ExperimentConfig`); the first problem is one
    InputError naming the file line or ``--set``. ``absent``: the message for a required top-level section
    that is missing or null (reported only when nothing else is wrong; see
    :func:`~nas.config_errors.translate_validation_error`)."""
    try:
        config = model.model_validate(raw.data, context={"base_dir": raw.source.parent, "check_files": check_files})
    except ValidationError as err:
        field, message = translate_validation_error(err, model, absent)
        raise raw.error(field, message) from None
    return LoadedConfig(source=raw.source, lines=raw.lines, overrides=raw.overrides, config=config)


def config_to_yaml(config: ExperimentConfig) -> str:
    """The resolved config (defaults filled, paths absolute) as YAML that
    :func:`nas.kinds.load_experiment` reads back."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, default_flow_style=None)


def config_diff(stored: ExperimentConfig, given: ExperimentConfig) -> list[str]:
    """``key: stored -> given`` lines for every leaf that differs (empty when equal)."""
    a, b = _flatten(stored.model_dump(mode="json")), _flatten(given.model_dump(mode="json"))
    return [f"{key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}"
            for key in sorted(set(a) | set(b)) if a.get(key, "<absent>") != b.get(key, "<absent>")]


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: data}
