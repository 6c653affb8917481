"""The training configuration: typed dataclasses read from YAML, with ``key=value`` overrides.

Every key is checked: an unknown key or a value of the wrong type fails with a
`ConfigError` naming the key (``training.batch_size``) and the file. The resolved config is
written beside the run's outputs (`save_config`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path


class ConfigError(ValueError):
    """A config file or override is invalid (the message names the key)."""


@dataclass
class ModelConfig:
    """What is trained.

    Attributes:
        type: ``splade``, ``unicoil`` or ``inference-free``.
        base: the model to start from (a masked-LM name or directory; the bundled SPLADE-tiny).
        pooling: SPLADE pooling, ``max`` or ``sum`` (uniCOIL: aggregation of repeated pieces).
        query_weights: inference-free query side, ``idf`` (fixed) or ``learned``.
        idf_corpus: corpus the IDF is computed on (default: the training corpus).
    """

    type: str = "splade"
    base: str | None = None
    pooling: str = "max"
    query_max_length: int = 64
    doc_max_length: int = 256
    query_weights: str = "idf"
    idf_corpus: str | None = None


@dataclass
class DataConfig:
    """Training examples and the dev split.

    Attributes:
        train: a dataset id with a split (``beir/scifact/train``), a JSONL file of
            ``{query, positive, negatives?, scores?}`` or an MS MARCO-style triples TSV; or a
            list of them, trained on together (each keeps its own corpus).
        negatives: ``mined`` (hard negatives from our own index), ``given`` (from the file)
            or ``none`` (in-batch negatives only).
        num_negatives: hard negatives per query in each step.
        mining_model: the model whose index mines negatives (default: ``model.base``).
        mining_depth: ranks retrieved per query when mining.
        mining_skip: top ranks never used as negatives (likely unjudged positives).
        dev: a dataset id of a dev split (``beir/nfcorpus/dev``), or a list of them.
        dev_holdout: this many queries of each training source held out as its dev split
            (sources whose corpus has a dev split in ``dev`` keep all their queries). With
            several dev splits the model is chosen by their mean nDCG@10.
        cache_dir: mined negatives, teacher scores and mining indexes are cached here.
    """

    train: str | list[str] = "beir/scifact/train"
    negatives: str = "mined"
    num_negatives: int = 3
    mining_model: str | None = None
    mining_depth: int = 100
    mining_skip: int = 0
    dev: str | list[str] | None = None
    dev_holdout: int = 0
    cache_dir: str = "runs/cache"


@dataclass
class LossConfig:
    """The ranking loss.

    Attributes:
        kind: ``infonce``, ``marginmse`` or ``kl``.
        temperature: InfoNCE and KL temperature.
        in_batch_negatives: InfoNCE also scores the other queries' documents.
        teacher: ``ensemble`` (bundled dense MiniLM + bundled SPLADE, normalised, summed),
            ``file`` (scores given with the examples) or ``none``.
        teacher_scale: the ensemble's summed [0, 1] scores are multiplied by this so its
            margins live on the student's dot-product scale.
        distillation_weight: with ``kind: infonce``, add this times the KL divergence from the
            teacher over each query's group (labels and teacher together); 0: labels only.
        teacher_in_batch: the KL divergence is taken over every document of the batch, not only
            the query's own group (the reference's ``use_in_batch_negatives`` with ``kldiv``):
            the ensemble teacher scores each query against the other queries' documents too.
    """

    kind: str = "infonce"
    temperature: float = 1.0
    in_batch_negatives: bool = True
    teacher: str = "none"
    teacher_scale: float = 10.0
    distillation_weight: float = 0.0
    teacher_in_batch: bool = False


@dataclass
class RegularizerConfig:
    """Sparsity regularisers (lambda_q and lambda_d of the SPLADE papers).

    Attributes:
        query: ``flops``, ``l1`` or ``none`` (always none for inference-free models).
        document: ``flops``, ``l1``, ``idf_flops`` or ``none``.
        query_weight: lambda_q.
        document_weight: lambda_d.
        warmup_steps: T of the quadratic warm-up of both weights.
        threshold: vectors with at most this many active dimensions are left out (the l0
            mask of the reference inference-free recipe: documents already that short are not
            pushed further).
        min_idf: IDF floor of ``idf_flops``.
        per_group: document FLOPS taken separately for each position of a query's group
            (positives, first negatives, ...) and summed, as the reference implementation of
            Geng et al. does; otherwise over all documents of the batch at once.
    """

    query: str = "flops"
    document: str = "flops"
    query_weight: float = 0.0
    document_weight: float = 0.0
    warmup_steps: int = 0
    threshold: int | None = None
    min_idf: float = 0.1
    per_group: bool = False


@dataclass
class TrainingConfig:
    """The loop. ``batch_size`` counts queries; each brings its positive and negatives.

    ``query_weights_learning_rate``: the learning rate of an inference-free model's learned
    query weights (``model.query_weights: learned``); None: ``learning_rate``.
    """

    output_dir: str = "runs/train"
    seed: int = 42
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    learning_rate: float = 2e-5
    query_weights_learning_rate: float | None = None
    weight_decay: float = 0.01
    lr_warmup_steps: int = 0
    max_steps: int = 200
    logging_steps: int = 10
    save_steps: int = 100
    eval_steps: int = 0
    save_total_limit: int = 2
    eval_k: int = 100
    device: str = "cpu"


@dataclass
class ExperimentConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    regularizer: RegularizerConfig = field(default_factory=RegularizerConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)


CHOICES = {
    "model.type": ("splade", "unicoil", "inference-free"),
    "model.pooling": ("max", "sum"),
    "model.query_weights": ("idf", "learned"),
    "data.negatives": ("mined", "given", "none"),
    "loss.kind": ("infonce", "marginmse", "kl"),
    "loss.teacher": ("none", "file", "ensemble"),
    "regularizer.query": ("flops", "l1", "none"),
    "regularizer.document": ("flops", "l1", "idf_flops", "none"),
}
NON_NEGATIVE = ("loss.distillation_weight", "data.num_negatives", "data.mining_skip", "data.dev_holdout", "regularizer.query_weight",
                "regularizer.document_weight", "regularizer.warmup_steps", "training.lr_warmup_steps",
                "training.eval_steps", "training.save_total_limit", "training.weight_decay")
STRICTLY_POSITIVE = ("loss.temperature", "loss.teacher_scale", "training.learning_rate", "regularizer.min_idf")
POSITIVE = ("training.batch_size", "training.gradient_accumulation_steps", "training.max_steps",
            "training.logging_steps", "training.save_steps", "training.eval_k", "data.mining_depth",
            "model.query_max_length", "model.doc_max_length")


def load_config(path: str | Path | None, overrides: list[str] = ()) -> ExperimentConfig:
    """Read a YAML config (or start from defaults) and apply ``section.key=value`` overrides."""
    import yaml

    source = str(path) if path else "defaults"
    raw: dict = {}
    if path:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such config file") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: invalid YAML ({error})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or "." not in key:
            raise ConfigError(f"override {override!r}: expected section.key=value")
        section, _, name = key.partition(".")
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise ConfigError(f"override {override!r}: {section!r} is not a section")
        raw[section][name] = _Override(text)
    config = _build(ExperimentConfig, raw, "", source)
    _validate(config, source)
    return config


class _Override:
    """A command-line value: parsed as YAML, except that a string field takes the text as is
    (so ``model.base=2024`` or ``data.train=yes`` stay strings)."""

    def __init__(self, text: str) -> None:
        import yaml

        self.text = text
        try:
            self.parsed = yaml.safe_load(text) if text else None
        except yaml.YAMLError:
            self.parsed = text

    def value_for(self, allowed: tuple) -> object:
        if isinstance(self.parsed, list) and any(typing.get_origin(kind) is list for kind in allowed):
            return self.parsed
        if str in allowed and self.text not in ("", "null", "~"):
            return self.text
        return self.parsed


def _build(cls, raw: dict, prefix: str, source: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'config'} must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"{source}: unknown key {name!r} (known: {', '.join(sorted(fields))})")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            values[key] = _build(hint, value or {}, f"{name}.", source)
        else:
            values[key] = _check_type(value, hint, name, source)
    return cls(**values)


def _check_type(value, hint, name: str, source: str):
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if isinstance(value, _Override):
        value = value.value_for(allowed)
    if value is None and type(None) in allowed:
        return None
    for kind in allowed:
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is float and isinstance(value, str):  # YAML reads 2e-5 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind in (str, bool) and isinstance(value, kind):
            return value
        if typing.get_origin(kind) is list and isinstance(value, list) and value \
                and all(isinstance(item, str) and item for item in value):
            return list(value)
    names = " or ".join("null" if k is type(None) else _type_name(k) for k in allowed)
    raise ConfigError(f"{source}: key {name!r} must be {names}, got {value!r}")


def _type_name(kind) -> str:
    if typing.get_origin(kind) is list:
        return "a non-empty list of strings"
    return kind.__name__


def as_list(value: str | list[str] | None) -> list[str]:
    """A list-or-string config value (``data.train``, ``data.dev``) as a list."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _validate(config: ExperimentConfig, source: str) -> None:
    for key, choices in CHOICES.items():
        value = _get(config, key)
        if value not in choices:
            raise ConfigError(f"{source}: key {key!r} must be one of {choices}, got {value!r}")
    for keys, ok, rule in ((POSITIVE, lambda v: v >= 1, "at least 1"), (NON_NEGATIVE, lambda v: v >= 0, ">= 0"),
                           (STRICTLY_POSITIVE, lambda v: v > 0, "> 0")):
        for key in keys:
            if not ok(_get(config, key)):
                raise ConfigError(f"{source}: key {key!r} must be {rule}, got {_get(config, key)!r}")
    rate = config.training.query_weights_learning_rate
    if rate is not None and not rate > 0:
        raise ConfigError(f"{source}: key 'training.query_weights_learning_rate' must be > 0, got {rate!r}")
    threshold = config.regularizer.threshold
    if threshold is not None and threshold < 0:
        raise ConfigError(f"{source}: key 'regularizer.threshold' must be >= 0, got {threshold!r}")
    if config.loss.kind in ("marginmse", "kl") and config.loss.teacher == "none":
        raise ConfigError(f"{source}: key 'loss.teacher' must be 'ensemble' or 'file' for loss.kind={config.loss.kind!r}")
    if config.loss.distillation_weight > 0 and (config.loss.kind != "infonce" or config.loss.teacher == "none"):
        raise ConfigError(f"{source}: key 'loss.distillation_weight' needs loss.kind 'infonce' and a loss.teacher")
    if config.loss.teacher_in_batch and (config.loss.teacher != "ensemble" or config.loss.kind == "marginmse"
                                         or (config.loss.kind == "infonce" and config.loss.distillation_weight == 0)):
        raise ConfigError(f"{source}: key 'loss.teacher_in_batch' needs loss.teacher 'ensemble' (it scores any pair) "
                          "and a KL term (loss.kind 'kl', or 'infonce' with loss.distillation_weight > 0)")
    if config.loss.kind in ("marginmse", "kl") and config.data.num_negatives < 1:
        raise ConfigError(f"{source}: key 'data.num_negatives' must be at least 1 for distillation")
    if config.regularizer.document == "idf_flops" and config.model.type != "inference-free":
        raise ConfigError(f"{source}: key 'regularizer.document': idf_flops needs model.type 'inference-free'")


def _get(config: ExperimentConfig, key: str):
    section, name = key.split(".")
    return getattr(getattr(config, section), name)


def save_config(config: ExperimentConfig, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    import yaml

    Path(path).write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))
