"""The resolved plan: every decision of a recipe made once, as plain data.

Both back ends (the runtime and the compiled script) read only this. Nothing
downstream interprets a selector, a default or a preset again.
"""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, ConfigDict, Field

from ..recipe import DataSpec, EvaluateSpec, Head, Normalize, Optimizer, Schedule, TrainSpec, Transform, Weights


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Classifier(Frozen):
    """Where the head goes, and what reaches it."""

    path: str = Field(description="module path of the classifier (replaced when the recipe has a head)")
    in_features: int
    out_features: int = Field(description="the builder's own class count")
    adapter: str = Field(description="'none', or 'pool_flatten' (AdaptiveAvgPool2d+Flatten before the head)")
    replaced: bool


class ResolvedWeights(Frozen):
    spec: Weights
    enum: str | None = Field(None, description="the torchvision enum member, e.g. ResNet50_Weights.IMAGENET1K_V2")
    ignored_keys: list[str] = Field([], description="keys of a weight file that are not loaded (the old classifier)")
    file: str | None = Field(None, description="the file loaded: file(...)'s path, or run(...)'s model.pt or best.pt")
    loaded: list[str] | None = Field(None, description="the keys loaded; None when the file was not opened")
    unexpected: list[str] = Field([], description="keys of the file the model lacks, not loaded (strict=false)")
    misshapen: list[str] = Field([], description="keys whose shape differs from the model's, not loaded (strict=false)")
    missing: list[str] = Field([], description="keys of the model the file lacks: left as built (strict=false)")
    origin: str | None = Field(None, description="run(...): the file's epoch and metric, from summary.json")


class Preprocess(Frozen):
    """The image pipeline: decode to RGB, ToImage, transforms, ToDtype(float32), Normalize."""

    train: list[Transform]
    eval: list[Transform]
    mean: list[float] | None = Field(description="None: no normalisation")
    std: list[float] | None


class Group(Frozen):
    """A named part of the model (`head`, a user group, or `rest`)."""

    name: str
    lr: float | None = Field(description="base rate; None only for a group that never trains")
    covers: str = Field(description="what it is made of: the group's selectors as a recipe writes them")
    params: list[str]
    numel: int


class OptimizerGroup(Frozen):
    """One torch param group, created at step 0 and never rebuilt.

    A recipe group is split by weight decay and by thaw warmup, so that a
    ramp can apply to exactly the parameters it thaws."""

    group: str
    params: list[str]
    weight_decay: float
    warmups: list[tuple[int, float]] = Field([], description="(epoch, epochs): rate ramps 0->1 from that epoch")


class Phase(Frozen):
    """A span of epochs in which the same parameters train."""

    first: int
    last: int
    trainable: list[str]
    numel: int = Field(description="number of trainable values")
    bn_eval: list[str] = Field(description="BatchNorm modules kept in eval mode in this span")
    thawed: list[str] = Field([], description="what thawed at the start of this span, as written")
    frozen: list[str] = Field([], description="what froze at the start of this span, as written")
    cache: bool = Field(False, description="the head trains on features computed once at the span's start")


class Teacher(Frozen):
    """The model `distill` learns from: frozen, in eval mode, fed the student's batch. A
    finished run (`run`), or built as a `model` block builds it (`architecture`)."""

    run: str | None = Field(description="the run folder; None: the teacher is given as in model")
    model: str | None = Field(description="final or best: which of its models; None: given as in model")
    file: str = Field(description="the file its weights come from: model.pt or best.pt, or weights file(...)'s")
    backbone: str | None = Field(description="what it trained, as its recipe writes it; None: not opened")
    head: str | None = Field(description="its head, as its recipe writes it; None: not opened")
    classes: list[str] | None = Field(description="the classes it learned, in index order (classes.json)")
    architecture: TeacherModel | None = Field(
        None, description="given as in model: what builds it, as the plan's own model fields say it"
    )

    @property
    def described(self) -> str:
        """For ftr plan and the compiled script: where the teacher comes from."""
        what = f"{self.backbone}, head {self.head}" if self.backbone else "not opened"
        if self.architecture is None:
            return f"run {self.run} ({what})"
        return f"as in model: {what}"


class TeacherModel(Frozen):
    """A teacher given as in model: the plan's model fields, for it (the back ends build it
    as they build a trained run's model: the architecture, then its whole state, strict)."""

    library: str = Field(description="who builds the backbone: torchvision or timm")
    backbone: str = Field(description="the builder's name or timm's model name")
    builder_kwargs: dict
    weights: ResolvedWeights = Field(description="file(...) or run(...): the whole teacher, head included")
    head: Head | None
    classifier: Classifier
    task: str = "classification"


class Plan(Frozen):
    format: int = 1
    name: str
    seed: int
    output: str
    task: str = "classification"
    library: str = Field("torchvision", description="who builds the backbone: torchvision, timm or hf")
    backbone: str = Field(description="the builder's name, timm's model name, or the Hugging Face folder or id")
    builder_kwargs: dict
    weights: ResolvedWeights
    head: Head | None
    classifier: Classifier
    total_params: int
    groups: list[Group]
    optimizer_groups: list[OptimizerGroup]
    phases: list[Phase]
    classes: list[str] | None = Field(description="class names, when the data could be read")
    data: DataSpec
    preprocess: Preprocess
    optimizer: Optimizer
    schedule: Schedule
    train: TrainSpec
    evaluate: EvaluateSpec
    cache_blockers: list[str] = Field([], description="why no span trains on cached features")
    head_init: str = Field("default", description="probe: the linear head fitted on frozen features before epoch 1")
    pool: str | None = Field(None, description="text: how token states become the head's vector")
    max_length: int | None = Field(None, description="text: tokens kept of each text")
    teacher: Teacher | None = Field(None, description="distill: the model the student learns from")
    warnings: list[str] = []

    @property
    def epochs(self) -> int:
        return self.train.epochs

    def group(self, name: str) -> Group:
        return next(g for g in self.groups if g.name == name)

    def phase_of(self, epoch: int) -> Phase:
        return next(p for p in self.phases if p.first <= epoch <= p.last)

    def reported_rates(self) -> dict[str, int]:
        """{recipe group: index of the optimizer group whose rate metrics.jsonl logs as lr/<group>}.

        A group split by weight decay and thaw warmup reports its first optimizer
        group without a warmup (the group's scheduled rate), else its first."""
        reported: dict[str, int] = {}
        for i, og in enumerate(self.optimizer_groups):
            first = reported.get(og.group)
            if first is None or (self.optimizer_groups[first].warmups and not og.warmups):
                reported[og.group] = i
        return reported

    def digest(self) -> str:
        """A hash of every decision: a checkpoint of another plan is refused on resume.

        Fields added after format 1 stay out while they hold their defaults, so
        that a plan of an older recipe hashes as it did before they existed (its
        checkpoints resume, its compiled scripts are unchanged)."""
        left_out: dict = {"warnings": True}
        left_out |= {name: True for name in TASK_FIELDS if getattr(self, name) == Plan.model_fields[name].default}
        for block, fields in ADDED_FIELDS.items():
            spec = getattr(self, block)
            at_default = {name: True for name, default in fields.items() if getattr(spec, name) == default}
            if at_default:
                left_out[block] = at_default
        for source in ("train", "val"):
            if getattr(getattr(self.data, source), "text", "absent") is None:
                left_out.setdefault("data", {})[source] = {"text": True}
        return hashlib.sha256(self.model_dump_json(exclude=left_out).encode()).hexdigest()[:16]


# fields added to the plan after format 1, left out of the digest at their defaults
TASK_FIELDS = ("task", "library", "pool", "max_length", "head_init", "teacher")
# statements the language gained after format 1, with their defaults
ADDED_FIELDS = {
    "data": {"max_length": None, "group_by_length": False, "unlabeled": None},
    "train": {"layer_decay": None, "pseudo_label": None, "distill": None},
}

IMAGENET = Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
