"""The typed recipe: what a `.ftr` file says, as Pydantic v2 models.

Every function-like value of the language (a transform, a head, a data source,
an optimizer, ...) is a model with a `kind` tag; its other fields, in the order
declared here, are the function's positional parameters. Defaults are those of
`language.md`.
"""

import functools
import operator
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from .quoting import quote


class Strict(BaseModel):
    # Validators are built at the first validation, not at import: one for the
    # Recipe and one for each function a recipe calls, not one for every model.
    # (So defaults that are models are made with model_construct, which builds none.)
    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)


def _tagged(*members):
    return Annotated[functools.reduce(operator.or_, members), Field(discriminator="kind")]


Size = Annotated[int, Field(ge=1)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Pair = Annotated[list[float], Field(min_length=2, max_length=2)]
Triple = Annotated[list[float], Field(min_length=3, max_length=3)]


# --- selectors -----------------------------------------------------------------


class Selector(Strict):
    """One selector: a name (group, `head`, `backbone`, `all` or a module path),
    a dotted module path, a glob on dotted paths, or a slice/index of a container."""

    kind: Literal["name", "path", "glob", "slice", "index"]
    text: str = Field(description="the name, path or glob; for slice/index, the container's path")
    start: int | None = None
    stop: int | None = None
    step: int | None = None
    index: int | None = None

    def __str__(self) -> str:
        """The selector as a recipe would write it."""
        if self.kind == "name":
            return self.text
        if self.kind == "path" and _DOTTED.fullmatch(self.text):
            return self.text
        if self.kind in ("path", "glob"):
            return quote(self.text)
        base = self.text if _DOTTED.fullmatch(self.text) or _NAME.fullmatch(self.text) else quote(self.text)
        if self.kind == "index":
            return f"{base}[{self.index}]"
        part = lambda n: "" if n is None else str(n)  # noqa: E731
        step = f":{self.step}" if self.step is not None else ""
        return f"{base}[{part(self.start)}:{part(self.stop)}{step}]"


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)+")


class SelectorList(Strict):
    """`A, B except C, D`: everything A or B covers minus everything C or D covers."""

    include: list[Selector] = Field(min_length=1)
    exclude: list[Selector] = []

    def __str__(self) -> str:
        text = ", ".join(map(str, self.include))
        return text + (" except " + ", ".join(map(str, self.exclude)) if self.exclude else "")


# --- model ---------------------------------------------------------------------


class NoWeights(Strict):
    kind: Literal["none"] = "none"


class DefaultWeights(Strict):
    kind: Literal["default"] = "default"


class EnumWeights(Strict):
    kind: Literal["enum"] = "enum"
    member: str = Field(description="a member of the builder's torchvision weights enum, e.g. IMAGENET1K_V2")


class FileWeights(Strict):
    kind: Literal["file"] = "file"
    path: str = Field(description="a local checkpoint, loaded with weights_only=True")
    key: str | None = Field(None, description="take this sub-dictionary of the file")
    strip: str | None = Field(None, description="remove this prefix from every key")
    strict: bool = Field(True, description="missing, unexpected or misshapen keys are errors")


class RunWeights(Strict):
    kind: Literal["run"] = "run"
    path: str = Field(description="a run folder written by `ftr run` or a compiled script")
    model: Literal["best", "final"] = Field("final", description="final: its model.pt; best: its best.pt")


Weights = _tagged(NoWeights, DefaultWeights, EnumWeights, FileWeights, RunWeights)


class LinearHead(Strict):
    kind: Literal["linear"] = "linear"
    classes: Size
    dropout: float = Field(0.0, ge=0, lt=1)
    at: str | None = Field(None, description="the module the head replaces, when it cannot be found")


class MlpHead(Strict):
    kind: Literal["mlp"] = "mlp"
    classes: Size
    hidden: Size | Annotated[list[Size], Field(min_length=1)] = 512
    dropout: float = Field(0.0, ge=0, lt=1)
    activation: Literal["relu", "gelu"] = "relu"
    at: str | None = None

    @property
    def hidden_sizes(self) -> list[int]:
        return [self.hidden] if isinstance(self.hidden, int) else list(self.hidden)


class DetectionHead(Strict):
    kind: Literal["detection"] = "detection"
    classes: Size = Field(description="foreground classes; ftr adds the background slot")


Head = _tagged(LinearHead, MlpHead, DetectionHead)


class TimmBackbone(Strict):
    """`timm("convnext_tiny")`: a model timm.create_model builds."""

    kind: Literal["timm"] = "timm"
    name: str = Field(min_length=1, description="a timm.list_models() name")


class HfBackbone(Strict):
    """`hf("models/all-MiniLM-L6-v2")`: a Hugging Face encoder and its tokenizer."""

    kind: Literal["hf"] = "hf"
    path: str = Field(min_length=1, description="a local model folder, or a hub id where the network allows")


BACKBONES = (TimmBackbone, HfBackbone)
LIBRARIES = ("torchvision", "timm", "hf")


class ModelSpec(Strict):
    backbone: str | _tagged(*BACKBONES) = Field(
        description="a torchvision model builder: of torchvision.models (e.g. resnet50), or of "
        "torchvision.models.detection with task detection (e.g. fasterrcnn_resnet50_fpn); "
        'timm("name") for a timm model; hf("folder-or-id") for a Hugging Face encoder'
    )
    weights: Weights = NoWeights.model_construct()
    head: Head | None = Field(None, description="replaces the classifier; without it the builder's own stays")
    min_size: Size | None = Field(None, description="task detection: the detector's own resize, its shorter side")
    max_size: Size | None = Field(None, description="task detection: the longest side the detector's resize allows")
    head_init: Literal["default", "probe"] = Field(
        "default",
        description="the new linear head's starting weights: as built (default), or fitted before the first "
        "epoch by multinomial logistic regression on the frozen backbone's features of the train images "
        "(probe: LP-FT, linear probing then fine-tuning)",
    )
    pool: Literal["cls", "mean", "last"] = Field(
        "mean",
        description="task text_classification: how token states become one vector "
        "(the first token, the mean over the attention mask, the last non-padding token)",
    )

    @property
    def library(self) -> str:
        """Who builds the backbone: torchvision, timm or hf."""
        return "torchvision" if isinstance(self.backbone, str) else self.backbone.kind

    @property
    def backbone_name(self) -> str:
        """The builder's name, timm's model name, or the Hugging Face folder or id."""
        if isinstance(self.backbone, str):
            return self.backbone
        return self.backbone.name if self.backbone.kind == "timm" else self.backbone.path


# --- data ----------------------------------------------------------------------


class ImageFolderSource(Strict):
    kind: Literal["imagefolder"] = "imagefolder"
    path: str


class CsvSource(Strict):
    kind: Literal["csv"] = "csv"
    path: str
    root: str | None = Field(None, description="folder the image column is relative to")
    image: str = "file"
    label: str = "label"
    text: str | None = Field(None, description="task text_classification: the column of the text")


class JsonlSource(Strict):
    kind: Literal["jsonl"] = "jsonl"
    path: str = Field(description="one JSON object a line")
    text: str = Field("text", description="the key of the text")
    label: str = Field("label", description="the key of the label")


class SyntheticSource(Strict):
    kind: Literal["synthetic"] = "synthetic"
    classes: Size
    count: Size = 64
    size: Size = 32


class TorchvisionSource(Strict):
    kind: Literal["torchvision"] = "torchvision"
    name: str = Field(description="a dataset class of torchvision.datasets, e.g. CIFAR10")
    root: str = "data"
    download: bool = False


class VocSource(Strict):
    kind: Literal["voc"] = "voc"
    path: str = Field(description="a Pascal VOC folder: Annotations/, JPEGImages/, ImageSets/Main/")
    split: str = Field("trainval", description="the image list ImageSets/Main/<split>.txt")
    classes: Annotated[list[str], Field(min_length=1)] | None = Field(
        None, description="the class names in label order; default: the sorted names in the split's annotations"
    )


class CocoSource(Strict):
    kind: Literal["coco"] = "coco"
    path: str = Field(description="a COCO detection annotations file (.json)")
    images: str = Field(description="the folder the file's image names are relative to")


class Split(Strict):
    kind: Literal["split"] = "split"
    fraction: float = Field(gt=0, lt=1, description="stratified, seeded hold-out taken from train")


SOURCES = (ImageFolderSource, CsvSource, JsonlSource, SyntheticSource, TorchvisionSource, VocSource, CocoSource)
Source = _tagged(*SOURCES)
ValSource = _tagged(*SOURCES, Split)

ImageSize = Size | Annotated[list[Size], Field(min_length=2, max_length=2)]


Interpolation = Literal["bilinear", "bicubic", "nearest"]


class Resize(Strict):
    kind: Literal["resize"] = "resize"
    size: ImageSize = Field(description="an int resizes the shorter side")
    interpolation: Interpolation = "bilinear"


class CenterCrop(Strict):
    kind: Literal["center_crop"] = "center_crop"
    size: ImageSize


class RandomResizedCrop(Strict):
    kind: Literal["random_resized_crop"] = "random_resized_crop"
    size: ImageSize
    scale: Pair = [0.08, 1.0]
    ratio: Pair = [3 / 4, 4 / 3]
    interpolation: Interpolation = "bilinear"


class HFlip(Strict):
    kind: Literal["hflip"] = "hflip"
    p: Fraction = 0.5


class VFlip(Strict):
    kind: Literal["vflip"] = "vflip"
    p: Fraction = 0.5


class Rotate(Strict):
    kind: Literal["rotate"] = "rotate"
    degrees: float = Field(ge=0)


class ColorJitter(Strict):
    kind: Literal["color_jitter"] = "color_jitter"
    brightness: float = Field(0.0, ge=0)
    contrast: float = Field(0.0, ge=0)
    saturation: float = Field(0.0, ge=0)
    hue: float = Field(0.0, ge=0, le=0.5)


class Grayscale(Strict):
    kind: Literal["grayscale"] = "grayscale"
    channels: Literal[1, 3] = 3


class TrivialAugment(Strict):
    kind: Literal["trivial_augment"] = "trivial_augment"


class RandAugment(Strict):
    kind: Literal["rand_augment"] = "rand_augment"
    n: Annotated[int, Field(ge=0)] = 2
    m: Annotated[int, Field(ge=0, le=30)] = 9


class RandomErasing(Strict):
    kind: Literal["random_erasing"] = "random_erasing"
    p: Fraction = 0.5


TRANSFORMS = (
    Resize,
    CenterCrop,
    RandomResizedCrop,
    HFlip,
    VFlip,
    Rotate,
    ColorJitter,
    Grayscale,
    TrivialAugment,
    RandAugment,
    RandomErasing,
)
Transform = _tagged(*TRANSFORMS)


class UnlabeledImages(Strict):
    """`unlabeled images("dir")`: every image under the folder, at any depth; a label a
    class folder gives is never trained on (it only measures the pseudo-labels)."""

    kind: Literal["images"] = "images"
    path: str


class Normalize(Strict):
    mean: Triple
    std: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=3, max_length=3)]


class DataSpec(Strict):
    train: Source
    val: ValSource | None = Field(None, description="without it, nothing is validated")
    batch_size: Size = 32
    eval_batch_size: Size | None = Field(None, description="defaults to batch_size")
    workers: Annotated[int, Field(ge=0)] = 0
    train_transforms: list[Transform] = []
    eval_transforms: list[Transform] | Literal["weights"] = []
    normalize: Literal["imagenet", "none", "weights"] | Normalize = "imagenet"
    skip_bad_images: bool = Field(False, description="skip and count unreadable images instead of stopping")
    max_length: Size | None = Field(None, description="task text_classification: tokens kept of each text")
    group_by_length: bool = Field(
        False, description="task text_classification: batches of texts of similar length, in a seeded order"
    )
    unlabeled: UnlabeledImages | None = Field(None, description="images without labels, for pseudo_label")


# --- train ---------------------------------------------------------------------


class Sgd(Strict):
    kind: Literal["sgd"] = "sgd"
    momentum: float = Field(0.0, ge=0)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0)


class Adam(Strict):
    kind: Literal["adam"] = "adam"
    betas: Annotated[list[Annotated[float, Field(ge=0, lt=1)]], Field(min_length=2, max_length=2)] = [0.9, 0.999]
    weight_decay: float = Field(0.0, ge=0)
    eps: float = Field(1e-8, gt=0)


class AdamW(Strict):
    kind: Literal["adamw"] = "adamw"
    betas: Annotated[list[Annotated[float, Field(ge=0, lt=1)]], Field(min_length=2, max_length=2)] = [0.9, 0.999]
    weight_decay: float = Field(0.01, ge=0)
    eps: float = Field(1e-8, gt=0)


class RmsProp(Strict):
    kind: Literal["rmsprop"] = "rmsprop"
    alpha: float = Field(0.99, gt=0, lt=1)
    momentum: float = Field(0.0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    eps: float = Field(1e-8, gt=0)


Optimizer = _tagged(Sgd, Adam, AdamW, RmsProp)


class Constant(Strict):
    kind: Literal["constant"] = "constant"


class StepSchedule(Strict):
    kind: Literal["step"] = "step"
    every: Size = Field(description="epochs between decays")
    gamma: float = Field(0.1, gt=0)


class Cosine(Strict):
    kind: Literal["cosine"] = "cosine"
    warmup: float = Field(0.0, ge=0, description="epochs of linear warmup (fractions allowed)")
    min_lr: Fraction = Field(0.0, description="the floor, as a fraction of each group's rate")


class LinearSchedule(Strict):
    kind: Literal["linear"] = "linear"
    warmup: float = Field(0.0, ge=0)


class OneCycle(Strict):
    kind: Literal["onecycle"] = "onecycle"
    pct_start: float = Field(0.3, gt=0, lt=1)


Schedule = _tagged(Constant, StepSchedule, Cosine, LinearSchedule, OneCycle)

Rate = Annotated[float, Field(gt=0)]


class Rates(Strict):
    """`lr X`, `lr a=X, b=Y` or `lr X, a=Y`."""

    default: Rate | None = Field(None, description="the rate of every group not named")
    groups: dict[str, Rate] = {}

    def of(self, group: str) -> float | None:
        return self.groups.get(group, self.default)


class ThawEvent(Strict):
    epoch: Size
    action: Literal["freeze", "unfreeze"]
    selectors: SelectorList
    warmup: float = Field(0.0, ge=0, description="epochs over which a thawed part's rate ramps up")


class Gradual(Strict):
    """`unfreeze gradually A, B, C from epoch N every K`."""

    stages: list[Selector] = Field(min_length=1)
    start: Size
    every: Size


class LayerDecay(Strict):
    """`layer_decay 0.8, over=encoder.layer`: each child of the container trains at
    `factor` times the rate of the child above it; the last child keeps its group's rate."""

    factor: float = Field(gt=0, le=1, description="the rate of a child over that of the child above it")
    over: str = Field(min_length=1, description="a container module whose children are the layers")


class PseudoLabel(Strict):
    """`pseudo_label threshold=0.95, weight=1, start=4`: from epoch `start`, each epoch
    begins by predicting the unlabeled images; those predicted with a probability of at
    least `threshold` train in that epoch under their predicted class. With
    `balanced=true` each class has its own threshold (FlexMatch's class-wise
    thresholds, see runtime/pseudo_labels.py)."""

    threshold: float = Field(0.95, gt=0, le=1, description="the least top probability a pseudo-label needs")
    weight: float = Field(1.0, ge=0, description="the pseudo-labelled images' loss over the labelled ones'")
    start: Size = Field(1, description="the first epoch that uses pseudo-labels")
    balanced: bool = Field(
        False, description="class-wise thresholds (FlexMatch): threshold scaled down for the classes seldom selected"
    )


class Distill(Strict):
    """`distill temperature=T, alpha=A` (Hinton et al. 2015): the loss is
    A * T^2 * KL(teacher || student, both softened at T) + (1 - A) * the task's loss."""

    temperature: float = Field(4.0, gt=0, description="the softmax temperature of both models' logits")
    alpha: Fraction = Field(0.5, description="the weight of the teacher's term; 1 - alpha weighs the labels'")


class TrainSpec(Strict):
    epochs: Annotated[int, Field(ge=1, le=100_000)]
    optimizer: Optimizer = AdamW.model_construct()
    lr: Rates | None = None
    schedule: Schedule = Constant.model_construct()
    freeze: SelectorList | None = Field(None, description="frozen at the start of epoch 1")
    events: list[ThawEvent] = Field([], description="`at epoch N freeze|unfreeze ...` lines")
    gradually: Gradual | None = None
    layer_decay: LayerDecay | None = Field(None, description="layer-wise rate decay over a container's children")
    batchnorm: Literal["eval", "train", "trainable"] = "eval"
    no_weight_decay: list[Literal["bias", "norm"]] = []
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    clip_grad_norm: float | None = Field(None, gt=0)
    accumulate: Size = 1
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    cache: bool = Field(True, description="train the head on features computed once where that changes no number")
    channels_last: bool = Field(False, description="images and convolution weights in NHWC memory layout")
    compile: bool = Field(False, description="run the model through torch.compile")
    pseudo_label: PseudoLabel | None = Field(
        None, description="unlabeled images trained on under their confident predictions"
    )
    distill: Distill | None = Field(None, description="learn from the teacher's logits as well as the labels")


# --- evaluate ------------------------------------------------------------------


class LossMetric(Strict):
    kind: Literal["loss"] = "loss"


class AccuracyMetric(Strict):
    kind: Literal["accuracy"] = "accuracy"


class TopK(Strict):
    kind: Literal["top_k"] = "top_k"
    k: Size


class MacroF1(Strict):
    kind: Literal["macro_f1"] = "macro_f1"


class MapMetric(Strict):
    """COCO mAP over IoU 0.50:0.95."""

    kind: Literal["map"] = "map"


class Map50Metric(Strict):
    """AP at IoU 0.5."""

    kind: Literal["map50"] = "map50"


class Map75Metric(Strict):
    """AP at IoU 0.75."""

    kind: Literal["map75"] = "map75"


METRICS = (LossMetric, AccuracyMetric, TopK, MacroF1, MapMetric, Map50Metric, Map75Metric)
Metric = _tagged(*METRICS)


def metric_key(metric) -> str:
    """The name a metric is logged under, without `val_`: loss, accuracy, top5, macro_f1, map, map50, map75."""
    return f"top{metric.k}" if metric.kind == "top_k" else metric.kind


class EarlyStop(Strict):
    patience: Size
    metric: str | None = Field(None, description="defaults to the `best` metric")
    min_delta: float = Field(0.0, ge=0)


class EvaluateSpec(Strict):
    metrics: list[Metric] = Field(
        [LossMetric.model_construct(), AccuracyMetric.model_construct()],
        description="measured on val; without it loss, accuracy (loss, map with task detection)",
    )
    every: Size = Field(1, description="evaluate every N epochs (and always after the last)")
    best: str | None = Field(None, description="keep the best model by this metric")
    early_stop: EarlyStop | None = None

    @property
    def metric_keys(self) -> list[str]:
        return [metric_key(m) for m in self.metrics]

    @property
    def stop_metric(self) -> str | None:
        """The metric early stopping watches: its own `metric=`, else `best`."""
        if self.early_stop is None:
            return None
        return self.early_stop.metric or self.best


# --- teacher -------------------------------------------------------------------


class TeacherSpec(Strict):
    """`teacher { run "runs/big" }`: a finished run whose model teaches the student; or
    `teacher { backbone ...  weights ...  head ... }`: a model built as `model` builds it,
    whose weights hold all of it, head included."""

    run: RunWeights | None = Field(
        None, description='`run "folder"` (model=final | best): the teacher\'s model and classes'
    )
    backbone: str | _tagged(*BACKBONES) | None = Field(None, description="as in model: the teacher's builder")
    weights: Weights | None = Field(None, description="as in model: they must hold the whole teacher, head included")
    head: Head | None = Field(None, description="as in model: the teacher's head; its classes are the student's")

    @property
    def model(self) -> ModelSpec | None:
        """The model-like form as a `model` block with these statements; None for `run`."""
        if self.backbone is None:
            return None
        fields = {"backbone": self.backbone, "head": self.head}
        if self.weights is not None:
            fields["weights"] = self.weights
        return ModelSpec(**fields)


# --- recipe --------------------------------------------------------------------

Task = Literal["classification", "detection", "text_classification"]

# what a task measures when `metrics` is not written (the others: loss, accuracy)
TASK_METRICS = {"detection": (LossMetric, MapMetric)}


class Recipe(Strict):
    name: str = Field(min_length=1, description='`recipe "name"`: names the run')
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0
    output: str | None = Field(None, description="run directory; defaults to runs/<name>")
    task: Task = Field("classification", description="what the model does: what its head, data and metrics may be")
    model: ModelSpec
    teacher: TeacherSpec | None = Field(None, description="the model `distill` learns from")
    data: DataSpec
    groups: dict[str, SelectorList] = {}
    train: TrainSpec
    evaluate: EvaluateSpec = EvaluateSpec.model_construct()

    _spans: dict = PrivateAttr(default_factory=dict)
    _keyword_spans: dict = PrivateAttr(default_factory=dict)
    _source: str = PrivateAttr(default="")
    _filename: str = PrivateAttr(default="<recipe>")
    _warnings: list = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _task_metrics(self):
        defaults = TASK_METRICS.get(self.task)
        if defaults and "metrics" not in self.evaluate.model_fields_set:
            metrics = [metric.model_construct() for metric in defaults]
            self.evaluate = self.evaluate.model_copy(update={"metrics": metrics})
        return self

    @property
    def output_dir(self) -> str:
        return self.output if self.output is not None else f"runs/{self.name}"

    @property
    def spans(self) -> dict:
        """Source position of every value, keyed by its path in the model."""
        return self._spans

    @property
    def keyword_spans(self) -> dict:
        """Source position of each statement's keyword, keyed like `spans`: ("model", "min_size")."""
        return self._keyword_spans

    @property
    def source(self) -> str:
        return self._source

    @property
    def filename(self) -> str:
        return self._filename

    @property
    def warnings(self) -> list:
        """Diagnostics that do not stop the recipe."""
        return self._warnings


FUNCTION_FAMILIES = {
    "backbone": list(BACKBONES),
    "weights": [NoWeights, DefaultWeights, EnumWeights, FileWeights, RunWeights],
    "head": [LinearHead, MlpHead, DetectionHead],
    "data source": list(SOURCES),
    "validation source": [*SOURCES, Split],
    "transform": list(TRANSFORMS),
    "optimizer": [Sgd, Adam, AdamW, RmsProp],
    "schedule": [Constant, StepSchedule, Cosine, LinearSchedule, OneCycle],
    "metric": list(METRICS),
    "unlabeled source": [UnlabeledImages],
}
