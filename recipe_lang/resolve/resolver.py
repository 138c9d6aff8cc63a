"""Recipe to Plan: the model built on the meta device, every selector matched,
every parameter given one group, the trainable set of every epoch written out."""

from __future__ import annotations

import functools

from torch import nn

from ..diagnostics import Diagnostic, RecipeError
from ..recipe import Recipe
from ..validation_errors import span_for
from . import cache, data_check, from_run, layers, teacher, weights
from .plan import Classifier, Group, OptimizerGroup, Phase, Plan, ResolvedWeights, Teacher, TeacherModel
from .problem import Problem
from .selectors import ModelIndex, SelectorResolver
from .tasks import task_resolver

NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)
BATCHNORM_TYPES = (nn.modules.batchnorm._BatchNorm,)


def resolve(recipe: Recipe, data: bool = True, weights_file: bool = True) -> Plan:
    """Resolve a checked recipe against its model; raise RecipeError listing every problem.

    data=False skips the data checks (`--no-data`, `ftr compile`); weights_file=False
    skips opening a `weights file(...)`."""
    return _Resolution(recipe, data, weights_file).plan()


class _Resolution:
    def __init__(self, recipe: Recipe, data: bool, weights_file: bool):
        self.recipe = recipe
        self.check_data = data
        self.check_weights_file = weights_file
        self.diagnostics: list[Diagnostic] = []

    # --- reporting -------------------------------------------------------------

    def report(self, problem: Problem, *loc) -> None:
        span = span_for(tuple(loc), self.recipe.spans)
        self.diagnostics.append(Diagnostic(problem.message, span, problem.severity, problem.hint, problem.notes))

    def attempt(self, loc: tuple, function, *args, default=None):
        try:
            return function(*args)
        except Problem as problem:
            self.report(problem, *loc)
            return default

    def fail_if_errors(self) -> None:
        if any(d.is_error for d in self.diagnostics):
            raise RecipeError(self.recipe.warnings + self.diagnostics, self.recipe.source, self.recipe.filename)

    # --- the plan --------------------------------------------------------------

    def plan(self) -> Plan:
        recipe = self.recipe
        task = self.task = task_resolver(recipe.task, self)
        model = self.attempt(("model", "backbone"), task.build)
        self.fail_if_errors()
        backbone_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        classifier = task.head(model)
        self.fail_if_errors()
        model_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}  # the head in place
        resolved_weights = self.weights(backbone_shapes, model_shapes, classifier)
        index = ModelIndex(model, classifier.path)
        groups = self.groups(index)
        phases = self.phases(index)
        if not any(d.is_error for d in self.diagnostics):  # else these would be consequences
            self.judge(phases)
            self.rates(groups, phases)
        if recipe.train.layer_decay is not None:
            groups = self.decayed(groups, index)
        if recipe.model.head_init == "probe":
            self.attempt(("model", "head_init"), _probe_fits, recipe.model)
        classes = task.data_classes(classifier) if self.check_data else None
        if recipe.data.unlabeled is not None and self.check_data:
            self.attempt(("data", "unlabeled"), data_check.unlabeled_images, recipe.data.unlabeled.path)
        if classes is not None and resolved_weights.spec.kind == "run" and resolved_weights.loaded is not None:
            self.run_classes(resolved_weights.spec, classes)
        teacher_plan = self.teacher_of(classes, classifier)
        preprocess = task.preprocess(resolved_weights)
        if preprocess is not None:
            task.check_inputs(model, preprocess)
        self.fail_if_errors()
        blocked = task.cache_blockers(preprocess, index)
        if teacher_plan is not None:
            blocked = [*blocked, "distill: the teacher takes the images, not the features"]
        phases = [p.model_copy(update={"cache": cache.cached(p, index, blocked)}) for p in phases]
        recipe._warnings = recipe.warnings + self.diagnostics
        return Plan(
            name=recipe.name,
            seed=recipe.seed,
            output=recipe.output_dir,
            task=recipe.task,
            library=recipe.model.library,
            backbone=recipe.model.backbone_name,
            builder_kwargs=task.builder_kwargs(),
            weights=resolved_weights,
            head=recipe.model.head,
            classifier=classifier,
            total_params=sum(index.numel.values()),
            groups=groups,
            optimizer_groups=self.optimizer_groups(index, groups),
            phases=phases,
            classes=classes,
            data=recipe.data,
            preprocess=preprocess,
            optimizer=recipe.train.optimizer,
            schedule=recipe.train.schedule,
            train=recipe.train,
            evaluate=recipe.evaluate,
            cache_blockers=blocked,
            head_init=recipe.model.head_init,
            teacher=teacher_plan,
            warnings=[d.render(recipe.source, recipe.filename) for d in self.diagnostics],
            **task.plan_fields(),
        )

    # --- weights ---------------------------------------------------------------

    def weights(self, backbone_shapes: dict, model_shapes: dict, classifier: Classifier) -> ResolvedWeights:
        spec = self.recipe.model.weights
        backbone = self.recipe.model.backbone_name
        if spec.kind in ("default", "enum"):
            return self.task.pretrained(spec)
        if spec.kind == "run":
            return self.run_weights(spec, model_shapes)
        if spec.kind != "file" or not self.check_weights_file:
            return ResolvedWeights(spec=spec, file=getattr(spec, "path", None))
        state = self.attempt(("model", "weights"), weights.load_state_file, spec.path, spec.key, spec.strip)
        if state is None:
            return ResolvedWeights(spec=spec, file=spec.path)
        prefix = classifier.path + "." if classifier.replaced else None
        diff = weights.compare_keys(backbone_shapes, state, prefix)
        if not diff.is_clean():
            severity = "error" if spec.strict else "warning"
            self.report(
                Problem(
                    f"'{spec.path}' does not fit {backbone}",
                    severity=severity,
                    notes=diff.render(),
                    hint="fix key= or strip=, or add strict=false to load what fits" if spec.strict else None,
                ),
                "model",
                "weights",
            )
        left_out = set(diff.dropped_classifier) | set(diff.unexpected) | set(diff.counters)
        left_out |= {k for k, _, _ in diff.misshapen}
        return ResolvedWeights(
            spec=spec,
            ignored_keys=sorted(diff.dropped_classifier),
            file=spec.path,
            loaded=[k for k in state if k not in left_out],
            unexpected=diff.unexpected,
            misshapen=[k for k, _, _ in diff.misshapen],
            missing=diff.missing,
        )

    def enum_weights(self, spec, name_of=None) -> ResolvedWeights:
        """`weights default` or `"ENUM_MEMBER"`, named by `name_of(member)`: by default a
        torchvision builder's weights enum member (timm's backbones name their pinned tag)."""
        member = "default" if spec.kind == "default" else spec.member
        loc = ("model", "weights", "member") if spec.kind == "enum" else ("model", "weights")
        name_of = name_of or functools.partial(weights.enum_member, self.recipe.model.backbone_name)
        return ResolvedWeights(spec=spec, enum=self.attempt(loc, name_of, member))

    def run_weights(self, spec, model_shapes: dict) -> ResolvedWeights:
        """A finished run's weights, head included: they must fit this model exactly."""
        path = from_run.model_file(spec)
        if not self.check_weights_file:
            return ResolvedWeights(spec=spec, file=path)
        if self.attempt(("model", "weights", "path"), from_run.check_folder, spec, default=False) is False:
            return ResolvedWeights(spec=spec, file=path)
        run = self.attempt(("model", "weights", "path"), from_run.run_recipe, spec.path)
        if run is not None:
            failed = self.attempt(("model", "weights"), from_run.compare_models, spec, run, self.recipe, default=False)
            if failed is False:
                return ResolvedWeights(spec=spec, file=path)
        state = self.attempt(("model", "weights"), weights.load_state_file, path)
        if state is None:
            return ResolvedWeights(spec=spec, file=path)
        diff = weights.compare_keys(model_shapes, state, None)
        if not diff.is_clean():
            problem = Problem(
                f"'{path}' does not fit this recipe's model",
                notes=diff.render(),
                hint=from_run.backbone_only_hint(spec),
            )
            self.report(problem, "model", "weights")
        return ResolvedWeights(spec=spec, file=path, loaded=list(state), origin=from_run.origin(spec))

    def run_classes(self, spec, classes: list[str]) -> None:
        learned = self.attempt(("model", "weights", "path"), from_run.run_classes, spec.path)
        if learned is not None:
            self.attempt(("model", "weights"), from_run.compare_classes, spec, learned, classes)

    def teacher_of(self, classes: list[str] | None, classifier: Classifier | None = None):
        """teacher { run "..." }: its folder checked and its classes compared with the data's;
        teacher { backbone ... weights ... head ... }: built as model builds it (teacher_model)."""
        spec = self.recipe.teacher
        if spec is None:
            return None
        if spec.run is None:
            return self.teacher_model(spec, classes, classifier)
        if not self.check_weights_file:  # its recipe and classes where they can be read, no diagnostic
            try:
                return teacher.opened(spec.run, weights_file=False)
            except Problem:
                return teacher.unopened(spec.run)
        found = self.attempt(("teacher", "run", "path"), teacher.opened, spec.run)
        if found is None:
            return None
        head = self.recipe.model.head
        head_classes = head.classes if head is not None else None
        self.attempt(("teacher", "run"), teacher.compare_classes, found, classes, head_classes)
        return found

    def teacher_model(self, spec, classes: list[str] | None, student: Classifier | None):
        """The teacher given as in model: built by the model block's builders (the task's
        resolver, run on a copy of the recipe whose model is the teacher's), its weights the
        whole model, head included; its class count the student's."""
        model_spec = spec.model
        if model_spec is None:  # no backbone: reported when the recipe was read
            return None
        if model_spec.library not in ("torchvision", "timm"):
            self.report(
                Problem(
                    "a teacher is a torchvision or timm image classifier",
                    hint='write backbone NAME (torchvision) or timm("name")',
                ),
                "teacher",
                "backbone",
            )
            return None
        sub = _TeacherResolution(self, model_spec)
        task = task_resolver("classification", sub)
        model = sub.attempt(("model", "backbone"), task.build)
        if model is None:
            return None
        classifier = task.head(model)
        if classifier is None:
            return None
        model_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        resolved = self.teacher_weights(sub, model_spec, model_shapes, classifier)
        taught = _classes_of(model_spec.head, classifier)
        count = len(classes) if classes is not None else _classes_of(self.recipe.model.head, student)
        if count is not None and taught != count:
            what = "the student's data holds" if classes is not None else "the student's head has"
            self.report(
                Problem(
                    f"the teacher's head has {taught} classes, {what} {count}",
                    hint=f"give the teacher the student's classes: head linear(classes={count}), "
                    "with weights trained on them",
                ),
                *(("teacher", "head", "classes") if model_spec.head is not None else ("teacher", "backbone")),
            )
        if resolved is None:
            return None
        return Teacher(
            run=None,
            model=None,
            file=resolved.file,
            backbone=from_run._backbone(sub.recipe),
            head=from_run._head(sub.recipe),
            classes=None,
            architecture=TeacherModel(
                library=model_spec.library,
                backbone=model_spec.backbone_name,
                builder_kwargs=task.builder_kwargs(),
                weights=resolved,
                head=model_spec.head,
                classifier=classifier,
            ),
        )

    def teacher_weights(self, sub, model_spec, model_shapes: dict, classifier: Classifier):
        """file(...) or run(...) holding the whole teacher: a head that would start untrained
        is an error at the teacher's weights line."""
        spec = model_spec.weights
        hint = (
            'give weights file("...") holding the whole trained teacher, head included (a state dict of its '
            'model), or run("runs/name")'
        )
        at = ("teacher", "weights") if self.recipe.teacher.weights is not None else ("teacher", "backbone")
        if spec.kind == "none":
            message = (
                "a teacher with weights none would teach untrained logits"
                if self.recipe.teacher.weights is not None
                else "a teacher given as in model needs its weights: without them it is untrained"
            )
            self.report(Problem(message, hint=hint), *at)
            return None
        if spec.kind in ("default", "enum"):
            message = (
                f"the teacher's new head would start untrained: weights {spec.kind} load the backbone only"
                if model_spec.head is not None
                else f"a teacher from the builder's pretrained weights (weights {spec.kind}) is not built"
            )
            self.report(Problem(message, hint=hint), *at)
            return None
        if spec.kind == "run":
            return sub.run_weights(spec, model_shapes)
        if not self.check_weights_file:
            return ResolvedWeights(spec=spec, file=spec.path)
        state = self.attempt(at, weights.load_state_file, spec.path, spec.key, spec.strip)
        if state is None:
            return None
        diff = weights.compare_keys(model_shapes, state, None)
        if diff.is_clean():
            return ResolvedWeights(spec=spec, file=spec.path, loaded=list(state))
        head_keys = [k for k in diff.missing if k.startswith(classifier.path + ".")]
        if head_keys:
            problem = Problem(
                f"'{spec.path}' does not hold the teacher's head ({classifier.path}): it would start untrained",
                notes=diff.render(),
                hint=hint,
            )
        else:
            problem = Problem(f"'{spec.path}' does not fit the teacher's model", notes=diff.render(), hint=hint)
        self.report(problem, *at)
        return None

    # --- groups ----------------------------------------------------------------

    def groups(self, index: ModelIndex) -> list[Group]:
        recipe = self.recipe
        resolver = SelectorResolver(index)
        owner = {p: "head" for p in index.head}
        head_note = "new head" if recipe.model.head else "the builder's classifier"
        if recipe.model.weights.kind == "run":
            head_note = "the run's head"
        groups = [("head", f"{index.head_path} ({head_note})", set(index.head))]
        for name, selectors in recipe.groups.items():
            if name in index.modules:
                self.report(
                    Problem(
                        f"group '{name}' hides the module '{name}' in selectors",
                        severity="warning",
                        hint=f'rename the group; write "{name}" in quotes to mean the module',
                    ),
                    "groups",
                    name,
                )
            before = len(self.diagnostics)
            params = self.select(resolver, selectors, ("groups", name))
            shared = sorted(p for p in params if p in owner)
            if shared:
                others = sorted({owner[p] for p in shared})
                self.report(
                    Problem(
                        f"group '{name}' shares {len(shared)} parameters with {', '.join(others)}",
                        hint="a parameter belongs to one group; narrow one of them with except",
                        notes=(f"shared: {', '.join(shared[:5])}" + (" ..." if len(shared) > 5 else ""),),
                    ),
                    "groups",
                    name,
                )
            if not params and len(self.diagnostics) == before:
                self.report(
                    Problem(
                        f"group '{name}' covers no parameters",
                        severity="warning",
                        hint="it selects only modules without weights",
                    ),
                    "groups",
                    name,
                )
            for p in params:
                owner.setdefault(p, name)
            groups.append((name, str(selectors), params))
            resolver.groups[name] = params
        rest = {p for p in index.params if p not in owner}
        groups.append(("rest", "everything else", rest))
        resolver.groups["rest"] = rest
        self.resolver = resolver
        rates = recipe.train.lr
        return [
            Group(
                name=name,
                lr=rates.of(name) if rates else None,
                covers=covers,
                params=[p for p in index.params if p in params],
                numel=sum(index.numel[p] for p in params),
            )
            for name, covers, params in groups
        ]

    def decayed(self, groups: list[Group], index: ModelIndex) -> list[Group]:
        """layer_decay: each child of the container is its own group, at its recipe
        group's rate times factor ** (children above it)."""
        decay = self.recipe.train.layer_decay
        children = self.attempt(("train", "layer_decay", "over"), layers.children, index, decay.over)
        if children is None:
            return groups
        return layers.split(groups, children, decay.factor, index)

    def select(self, resolver: SelectorResolver, selectors, loc: tuple) -> set[str]:
        """The parameters of a selector list; each selector that fails is reported at its own position."""
        found: dict[str, set[str]] = {"include": set(), "exclude": set()}
        for part in ("include", "exclude"):
            for i, selector in enumerate(getattr(selectors, part)):
                params = self.attempt(loc + (part, i), resolver.one, selector, default=set())
                found[part] |= params
        return found["include"] - found["exclude"]

    # --- epochs ----------------------------------------------------------------

    def events(self):
        """(epoch, action, selector list or stage, loc, warmup) in the order they apply."""
        train = self.recipe.train
        events = [
            (e.epoch, e.action, e.selectors, ("train", "events", i), e.warmup) for i, e in enumerate(train.events)
        ]
        if train.gradually:
            g = train.gradually
            for i, stage in enumerate(g.stages):
                events.append((g.start + i * g.every, "unfreeze", stage, ("train", "gradually", "stages", i), 0.0))
        return sorted(events, key=lambda e: e[0])

    def phases(self, index: ModelIndex) -> list[Phase]:
        """The spans of epochs with the same trainable set."""
        train = self.recipe.train
        frozen = set()
        if train.freeze:
            frozen = self.select(self.resolver, train.freeze, ("train", "freeze"))
        trainable = set(index.params) - frozen
        self.warmups: dict[str, list[tuple[int, float]]] = {}
        by_epoch: dict[int, list] = {}
        for event in self.events():
            by_epoch.setdefault(event[0], []).append(event)
        phases, start, thawed, froze = [], 1, [], []
        for epoch in range(1, train.epochs + 1):
            if epoch in by_epoch:
                if epoch > 1:
                    phases.append(self.phase(index, start, epoch - 1, trainable, thawed, froze))
                start, thawed, froze = epoch, [], []
                for event in by_epoch[epoch]:
                    trainable = self.apply(event, trainable, thawed, froze)
        phases.append(self.phase(index, start, train.epochs, trainable, thawed, froze))
        return phases

    def judge(self, phases: list[Phase]) -> None:
        for phase in phases:
            if not phase.trainable:
                loc = ("train", "freeze") if phase.first == 1 else self.event_loc(phase.first)
                span = f"epochs {phase.first} to {phase.last}" if phase.last > phase.first else f"epoch {phase.first}"
                self.report(Problem(f"nothing trains in {span}", hint="leave some part unfrozen"), *loc)

    def event_loc(self, epoch: int) -> tuple:
        return next(e[3] for e in self.events() if e[0] == epoch)

    def apply(self, event, trainable: set[str], thawed: list, froze: list) -> set[str]:
        epoch, action, selectors, loc, warmup = event
        if hasattr(selectors, "include"):
            params = self.select(self.resolver, selectors, loc + ("selectors",))
            text = str(selectors)
        else:
            params = self.attempt(loc, self.resolver.one, selectors, default=set())
            text = str(selectors)
        if action == "unfreeze":
            if params and params <= trainable:
                self.report(
                    Problem(
                        f"'{text}' already trains at epoch {epoch}",
                        severity="warning",
                        hint="remove this line, or freeze it first",
                    ),
                    *loc,
                )
            for p in params - trainable:
                if warmup > 0:
                    self.warmups.setdefault(p, []).append((epoch, warmup))
            thawed.append(text)
            return trainable | params
        if params and not params & trainable:
            self.report(Problem(f"'{text}' is already frozen at epoch {epoch}", severity="warning"), *loc)
        froze.append(text)
        return trainable - params

    def phase(self, index: ModelIndex, first: int, last: int, trainable: set[str], thawed, froze) -> Phase:
        policy = self.recipe.train.batchnorm
        model_trainable = set(trainable)
        bn_eval = []
        for path, module in index.modules.items():
            if not isinstance(module, BATCHNORM_TYPES):
                continue
            own = {f"{path}.{name}" for name, _ in module.named_parameters()}
            if own and own & trainable:
                continue
            if policy == "trainable":
                model_trainable |= own
            elif policy == "eval":
                bn_eval.append(path)
        return Phase(
            first=first,
            last=last,
            trainable=[p for p in index.params if p in model_trainable],
            numel=sum(index.numel[p] for p in model_trainable),
            bn_eval=bn_eval,
            thawed=thawed,
            frozen=froze,
        )

    # --- rates and optimizer groups --------------------------------------------

    def rates(self, groups: list[Group], phases: list[Phase]) -> None:
        for group in groups:
            if group.lr is not None:
                continue
            members = set(group.params)
            training = [p for p in phases if members & set(p.trainable)]
            if training:
                self.report(
                    Problem(
                        f"group '{group.name}' trains from epoch {training[0].first} but has no rate",
                        hint=f"add {group.name}=... to lr, or give lr a default rate",
                        notes=self.rate_notes(group),
                    ),
                    "train",
                    "lr",
                )

    def rate_notes(self, group: Group) -> tuple[str, ...]:
        notes = [f"'{group.name}' covers {group.covers}"] if group.name != "rest" else []
        if self.recipe.train.batchnorm == "trainable":
            notes.append("batchnorm trainable trains the BatchNorm weights of frozen parts too")
        return tuple(notes)

    def optimizer_groups(self, index: ModelIndex, groups: list[Group]) -> list[OptimizerGroup]:
        train = self.recipe.train
        decay = getattr(train.optimizer, "weight_decay", 0.0)
        no_decay = self.no_decay(index)
        out = []
        for group in groups:
            if not group.params or group.lr is None:
                continue
            split: dict[tuple, list[str]] = {}
            for p in group.params:
                key = (p not in no_decay, tuple(self.warmups.get(p, ())))
                split.setdefault(key, []).append(p)
            for (decays, warmups), params in split.items():
                out.append(
                    OptimizerGroup(
                        group=group.name, params=params, weight_decay=decay if decays else 0.0, warmups=list(warmups)
                    )
                )
        return out

    def no_decay(self, index: ModelIndex) -> set[str]:
        kinds = set(self.recipe.train.no_weight_decay)
        out = set()
        if "bias" in kinds:
            out |= {p for p in index.params if p.rsplit(".", 1)[-1] == "bias"}
        if "norm" in kinds:
            for path, module in index.modules.items():
                if isinstance(module, NORM_TYPES):
                    out |= {f"{path}.{name}" if path else name for name, _ in module.named_parameters()}
        return out


def _probe_fits(model) -> None:
    """head_init probe fits a linear head: there must be one, and new."""
    if model.head is None or model.head.kind != "linear":
        what = "no head (the builder's own classifier stays)" if model.head is None else f"head {model.head.kind}(...)"
        raise Problem(
            f"head_init probe fits a linear head; this recipe has {what}",
            hint="write head linear(classes=N), or remove head_init",
        )


def _classes_of(head, classifier: Classifier | None) -> int | None:
    """The class count of a model: its new head's, else its builder's classifier's."""
    if head is not None:
        return head.classes
    return classifier.out_features if classifier is not None else None


class _TeacherResolution(_Resolution):
    """A teacher given as in model, resolved by the model block's code: its recipe is the
    student's with the teacher's model; what it reports at model goes to the teacher's lines."""

    def __init__(self, parent: _Resolution, model_spec):
        super().__init__(parent.recipe.model_copy(update={"model": model_spec}), False, parent.check_weights_file)
        self.parent = parent

    def report(self, problem: Problem, *loc) -> None:
        if loc and loc[0] == "model":
            loc = ("teacher", *loc[1:])
        self.parent.report(problem, *loc)
