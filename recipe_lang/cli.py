"""The `ftr` command line."""

from __future__ import annotations

import argparse
import gc
import os
import sys
import types

# Only what every command needs: each command imports the rest (Lark, Pydantic,
# torch) itself, so that `ftr fmt` and `ftr check --syntax` load no more than they use.
from . import __version__, load, read_source
from .diagnostics import RecipeError, UsageError

NO_DATA_HELP = "open neither the data nor weight files (for recipes checked away from them)"


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    # ftr's own models need no Pydantic plugins, and looking for them reads the
    # metadata of every installed package (a tenth of `ftr check --syntax`);
    # set the variable empty to have plugins loaded.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    _skip_plugin_discovery()
    collecting = gc.isenabled()
    if args.command == "fmt" or (args.command == "check" and args.syntax):
        # parsing only: bounded work whose first run imports the parser and Pydantic and
        # builds the recipe's models, long-lived objects the cyclic collector would walk
        # again and again (a fifth of `ftr check --syntax`); it waits for the command's end
        gc.disable()
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("ftr: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `ftr predict ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        if collecting:
            gc.enable()


def _skip_plugin_discovery() -> None:
    """With every plugin disabled, Pydantic's plugin loader finds none, yet importing it
    imports importlib.metadata (and email, csv, zipfile): a twentieth of `ftr check --syntax`.
    A stand-in that finds none in the same way takes its place."""
    if os.environ["PYDANTIC_DISABLE_PLUGINS"] != "__all__" or "pydantic.plugin._loader" in sys.modules:
        return
    loader = types.ModuleType("pydantic.plugin._loader")
    loader.get_plugins = lambda: ()
    sys.modules["pydantic.plugin._loader"] = loader


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ftr", description="Check, plan, run and compile fine-tuning recipes.")
    parser.add_argument("--version", action="version", version=f"ftr {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser("check", help="find every mistake in recipes")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.add_argument("--syntax", action="store_true", help="stop before building the model (no torch)")
    check.add_argument(
        "--no-data",
        action="store_true",
        help=NO_DATA_HELP,
    )
    check.add_argument("-q", "--quiet", action="store_true", help="print nothing for a recipe that is fine")
    _add_set(check)
    check.set_defaults(run=_check)

    fmt = commands.add_parser("fmt", help="rewrite recipes in canonical form")
    fmt.add_argument("files", nargs="+", metavar="FILE", help="recipe files, or - for standard input")
    fmt.add_argument("--check", action="store_true", help="only report files that would change")
    fmt.set_defaults(run=_fmt)

    plan = commands.add_parser("plan", help="show what trains at each epoch, and how fast")
    plan.add_argument("file", metavar="FILE")
    plan.add_argument("--json", action="store_true", help="print the resolved plan as JSON")
    plan.add_argument(
        "--no-data",
        action="store_true",
        help=NO_DATA_HELP,
    )
    _add_set(plan)
    plan.set_defaults(run=_plan)

    run = commands.add_parser("run", help="train a recipe on the PyTorch runtime")
    run.add_argument("file", metavar="FILE")
    run.add_argument("--out", metavar="DIR", help="run folder (default: the recipe's output, runs/<name>)")
    run.add_argument("--resume", action="store_true", help="continue the run in the folder from its last checkpoint")
    run.add_argument("--overwrite", action="store_true", help="replace a run already in the folder")
    run.add_argument("--quiet", action="store_true", help="no progress bars: one plain line per epoch")
    run.add_argument("--device", metavar="DEVICE", help="cpu, cuda, cuda:1, mps (default: cuda > mps > cpu)")
    run.add_argument(
        "--nproc",
        type=_processes,
        metavar="N",
        help="train in N processes on this machine, through torchrun: batch_size is their global batch "
        "(CPU: gloo; CUDA: one GPU each)",
    )
    run.add_argument(
        "--logger",
        choices=["tensorboard"],
        help="also write each epoch's metrics for TensorBoard, into the run folder's tensorboard/",
    )
    _add_set(run)
    run.set_defaults(run=_run)

    compile_ = commands.add_parser("compile", help="write a standalone training script (torch and torchvision only)")
    compile_.add_argument("file", metavar="FILE")
    compile_.add_argument("-o", "--output", metavar="SCRIPT", default="-", help="the script to write (default: stdout)")
    _add_set(compile_)
    compile_.set_defaults(run=_compile)

    compare = commands.add_parser("compare", help="the final and best metrics of runs, side by side")
    compare.add_argument("runs", nargs="+", metavar="RUN", help="run folders")
    compare.add_argument(
        "--mean",
        action="store_true",
        help="one row per recipe name: mean ± sample standard deviation of its runs (e.g. over seeds)",
    )
    compare.set_defaults(run=_compare)

    predict = commands.add_parser("predict", help="a trained run's predictions on new images or texts")
    predict.add_argument("run_folder", metavar="RUN", help="a run folder (ftr run's or a compiled script's)")
    predict.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="image files or folders; text: files of lines, CSV or JSON lines"
    )
    _add_model_choice(predict)
    predict.add_argument("--top", type=_positive, metavar="K", help="labels per input (default 1); detection: boxes")
    predict.add_argument("--format", choices=("csv", "jsonl"), default="csv", dest="fmt")
    predict.add_argument("-o", "--output", metavar="FILE", help="write here (default: standard output)")
    predict.add_argument("--column", metavar="NAME", help="text: the CSV column or JSON key (default: the recipe's)")
    predict.add_argument(
        "--threshold", type=float, metavar="P", help="detection: the lowest score reported (default 0.5)"
    )
    predict.add_argument("--draw", metavar="DIR", help="detection: copies of the images with their boxes, in DIR")
    predict.add_argument("--batch-size", type=_positive, default=32, metavar="N")
    predict.add_argument("--device", metavar="DEVICE", default="cpu", help="cpu (default), cuda, cuda:1, mps")
    predict.set_defaults(run=_predict)

    evaluate = commands.add_parser("evaluate", help="a trained run's metrics, per class, on its val or other data")
    evaluate.add_argument("run_folder", metavar="RUN", help="a run folder (ftr run's or a compiled script's)")
    evaluate.add_argument(
        "source",
        nargs="?",
        metavar="SOURCE",
        help="data as a recipe writes it ('imagefolder(\"data/test\")'), or a folder or file; default: the run's val",
    )
    _add_model_choice(evaluate)
    evaluate.add_argument("-o", "--output", metavar="DIR", help="write metrics.json, per_class.csv, ... here")
    evaluate.add_argument("--worst", type=_positive, default=10, metavar="N", help="mistakes listed (default 10)")
    evaluate.add_argument("--device", metavar="DEVICE", default="cpu", help="cpu (default), cuda, cuda:1, mps")
    evaluate.set_defaults(run=_evaluate)

    export = commands.add_parser("export", help="a trained run's model as a folder that needs no ftr")
    export.add_argument("run_folder", metavar="RUN", help="a run folder (ftr run's or a compiled script's)")
    export.add_argument("-o", "--output", metavar="DIR", required=True, help="the folder to write")
    _add_model_choice(export)
    export.add_argument("--format", choices=("onnx",), dest="fmt", help="onnx: add model.onnx, checked by onnxruntime")
    export.add_argument("--overwrite", action="store_true", help="replace DIR if it holds files")
    export.set_defaults(run=_export, device=None)

    report = commands.add_parser("report", help="one HTML page of runs' curves, thaw events, plan and recipe")
    report.add_argument("runs", nargs="+", metavar="RUN", help="run folders; several are overlaid")
    report.add_argument("-o", "--output", metavar="FILE", help="the page to write (default: RUN/report.html)")
    report.set_defaults(run=_report_runs)

    merge = commands.add_parser("merge", help="average the weights of runs (model soups, WiSE-FT) into a run folder")
    merge.add_argument("run_folders", nargs="+", metavar="RUN", help="runs of one recipe's starting point")
    merge.add_argument("-o", "--output", metavar="OUT", required=True, help="the run folder to write")
    merge.add_argument(
        "--greedy", action="store_true", help="add a run only if the soup's held-out score does not drop"
    )
    merge.add_argument(
        "--wise", type=_fraction, metavar="A", help="one run: A x its weights + (1 - A) x its starting weights"
    )
    merge.add_argument(
        "--bn",
        choices=("average", "recompute"),
        default="average",
        help="BatchNorm statistics: averaged (default) or recomputed over the first run's train data",
    )
    _add_model_choice(merge)
    merge.add_argument("--overwrite", action="store_true", help="replace OUT if it holds files")
    merge.set_defaults(run=_merge, device=None)

    _add_suggest(commands)

    schema = commands.add_parser("schema", help="print the JSON Schema of recipes")
    schema.set_defaults(run=_schema)

    lsp = commands.add_parser("lsp", help="run the language server on stdin and stdout (for editors)")
    lsp.set_defaults(run=_lsp)
    return parser


def _add_suggest(commands) -> None:
    suggest = commands.add_parser(
        "suggest", help="measure on the data and write the recipe back with lr or freeze changed"
    )
    kinds = suggest.add_subparsers(dest="kind", required=True, metavar="lr|freeze")
    lr = kinds.add_parser("lr", help="a learning-rate range test: the recipe's lr line scaled")
    lr.add_argument("file", metavar="RECIPE")
    lr.add_argument("-o", "--output", metavar="NEW", help="the recipe to write (default: standard output)")
    lr.add_argument("--epoch", type=_positive, default=1, metavar="N", help="test what trains at epoch N (default 1)")
    lr.add_argument("--steps", type=_at_least_two, default=100, metavar="N", help="steps of the ramp (default 100)")
    lr.add_argument("--plot", metavar="PNG", help="the curve (default: NEW.lr.png, or RECIPE's name.lr.png here)")
    lr.add_argument("--device", metavar="DEVICE", default="cpu", help="cpu (default), cuda, cuda:1, mps")
    lr.set_defaults(run=_suggest)
    freeze = kinds.add_parser("freeze", help="relative gradient norms per block: the recipe's freeze lines")
    freeze.add_argument("file", metavar="RECIPE")
    freeze.add_argument("-o", "--output", metavar="NEW", help="the recipe to write (default: standard output)")
    freeze.add_argument("--batches", type=_positive, default=8, metavar="N", help="train batches measured (default 8)")
    freeze.add_argument(
        "--fraction", type=float, default=0.5, metavar="F", help="train blocks at F of the largest RGN or more (0.5)"
    )
    freeze.add_argument("--device", metavar="DEVICE", default="cpu", help="cpu (default), cuda, cuda:1, mps")
    freeze.set_defaults(run=_suggest)


def _processes(text: str) -> int:
    try:
        return _positive(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"a number of processes is a whole number >= 1, not '{text}'") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"a whole number >= 1, not '{text}'")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"a number from 0 to 1, not '{text}'")
    return value


def _at_least_two(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 2:
        raise argparse.ArgumentTypeError(f"a whole number >= 2, not '{text}'")
    return value


def _add_model_choice(parser) -> None:
    parser.add_argument(
        "--model",
        choices=("best", "final"),
        dest="which",
        help="best.pt or model.pt (default: best.pt when the run kept one)",
    )


def _add_set(parser):
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override a statement, e.g. train.epochs=3 (repeatable)",
    )


def _status(error: RecipeError) -> int:
    """2 for a command-line mistake (a malformed or unknown --set), 1 for a recipe's."""
    return 2 if isinstance(error, UsageError) else 1


def _report(error: RecipeError) -> int:
    """Print the diagnostics; return the exit status."""
    print(error.render(), file=sys.stderr)
    return _status(error)


def _warn(recipe) -> None:
    for warning in recipe.warnings:
        print(warning.render(recipe.source, recipe.filename), file=sys.stderr)


def _check(args) -> int:
    status = 0
    for file in args.files:
        try:
            recipe = load(file, args.overrides)
            checked = "syntax and values (--syntax: the model is not checked)"
            if not args.syntax:
                from .resolve import resolve
                from .resolve.table import check_summary

                checked = check_summary(resolve(recipe, data=not args.no_data, weights_file=not args.no_data))
            _warn(recipe)
        except RecipeError as error:
            status = max(status, _report(error))
            continue
        if not args.quiet:
            print(f"{file}: ok: {checked}")
    return status


def _plan(args) -> int:
    from .resolve import resolve
    from .resolve.table import plan_table

    try:
        recipe = load(args.file, args.overrides)
        plan = resolve(recipe, data=not args.no_data, weights_file=not args.no_data)
    except RecipeError as error:
        return _report(error)
    _warn(recipe)
    print(plan.model_dump_json(indent=2) if args.json else plan_table(plan))
    return 0


def _run(args) -> int:
    from runtime.world import World

    try:
        world = World.from_env()
    except ValueError as error:
        print(f"ftr run: error: {error}", file=sys.stderr)
        return 2
    if args.device:
        from runtime.device import device_error

        problem = device_error(args.device)
        if problem:
            print(f"ftr run: error: {problem}", file=sys.stderr)
            return 2
    if args.logger:
        from runtime.loggers import missing_tensorboard

        problem = missing_tensorboard()
        if problem:
            print(f"ftr run: error: {problem}", file=sys.stderr)
            return 1
    if args.nproc is not None:
        if world.launched:
            print(
                "ftr run: error: --nproc starts torchrun itself; a process that torchrun started takes no --nproc",
                file=sys.stderr,
            )
            return 2
        if args.nproc > 1:
            return _launch(args)

    from runtime.distributed import Distributed, Stopped, as_worker
    from runtime.run import RunError, RunRequest, interrupted_message, run

    request = RunRequest(
        args.file, args.out, tuple(args.overrides), args.resume, args.overwrite, args.quiet, args.device, args.logger
    )
    try:
        if world.launched:
            as_worker()
        summary = run(request, Distributed(world))
    except RecipeError as error:
        if world.main:  # every process resolves the same recipe
            _report(error)
        return _status(error)
    except RunError as error:
        if world.main or error.local:
            where = f" (process {world.rank} of {world.size})" if error.local and world.distributed else ""
            print(f"ftr run: error{where}: {error}", file=sys.stderr)
        return 1
    except Stopped:
        if world.main:
            print(f"ftr run: {interrupted_message(request, world, 'stopped')}", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        if world.main:
            print(f"ftr run: {interrupted_message(request, world)}", file=sys.stderr)
        return 130
    except Exception as error:
        from runtime.distributed import lost_peers

        if not (world.distributed and lost_peers(error)):
            raise
        print(
            f"ftr run: process {world.rank} of {world.size} stops: another process of the run stopped "
            "(its message says why)",
            file=sys.stderr,
        )
        return 1
    if not args.quiet and world.main:
        print(f"{summary['status']}: {summary['epochs']} epochs in {summary['seconds']:.1f}s", file=sys.stderr)
    return 0


def _launch(args) -> int:
    """`ftr run --nproc N`: check what can be checked without torch, then start N
    processes of this same command (less --nproc) through torchrun."""
    from runtime.world import batch_error

    try:
        recipe = load(args.file, args.overrides)
    except RecipeError as error:
        return _report(error)
    if recipe.train.pseudo_label is not None:
        span = recipe.keyword_spans.get(("train", "pseudo_label"))
        where = f" ({args.file}:{span.line}:{span.column})" if span else ""
        print(
            f"ftr run: error: --nproc {args.nproc}: pseudo_label{where} takes one process; "
            "run without --nproc, or remove pseudo_label",
            file=sys.stderr,
        )
        return 1
    split = batch_error(recipe.data.batch_size, args.nproc)
    if split:
        print(f"ftr run: error: {split}", file=sys.stderr)
        return 1
    worker = ["run", args.file]
    worker += ["--out", args.out] if args.out else []
    worker += [flag for flag, on in (("--resume", args.resume), ("--overwrite", args.overwrite)) if on]
    worker += ["--quiet"] if args.quiet else []
    worker += ["--device", args.device] if args.device else []
    worker += ["--logger", args.logger] if args.logger else []
    for override in args.overrides:
        worker += ["--set", override]

    from runtime.distributed import launch, too_few_gpus

    gpus = too_few_gpus(args.nproc, args.device)
    if gpus:
        print(f"ftr run: error: {gpus}", file=sys.stderr)
        return 1
    return launch(worker, args.nproc)


def _compile(args) -> int:
    """Resolve against the model, never the data or weight files: scripts run elsewhere."""
    from templates.compiler import CompileError, compile_plan

    from .files import atomic_write_text
    from .resolve import resolve

    try:
        recipe = load(args.file, args.overrides)
        plan = resolve(recipe, data=False, weights_file=False)
    except RecipeError as error:
        return _report(error)
    _warn(recipe)
    try:
        script = compile_plan(plan, recipe.source, recipe.filename, tuple(args.overrides))
    except CompileError as error:
        print(f"ftr compile: error: {error}", file=sys.stderr)
        return 1
    if args.output == "-":
        sys.stdout.write(script)
        return 0
    try:
        atomic_write_text(args.output, script, executable=True)
    except OSError as error:
        print(f"ftr compile: error: cannot write {args.output}: {error.strerror or error}", file=sys.stderr)
        return 1
    print(f"wrote {args.output} ({script.count(chr(10))} lines)", file=sys.stderr)
    return 0


def _compare(args) -> int:
    from runtime.compare import CompareError, compare_table, mean_table

    try:
        print((mean_table if args.mean else compare_table)(args.runs))
    except CompareError as error:
        print(f"ftr compare: error: {error}", file=sys.stderr)
        return 1
    return 0


def _open_run(args, command: str):
    """The trained run of args.run_folder, or None after printing why not."""
    from runtime.trained import RunOpenError, open_run

    if args.device:
        from runtime.device import device_error

        problem = device_error(args.device)
        if problem:
            print(f"ftr {command}: error: {problem}", file=sys.stderr)
            return None
    try:
        return open_run(args.run_folder, args.which)
    except RunOpenError as error:
        print(f"ftr {command}: error: {error.message}", file=sys.stderr)
        if error.hint:
            print(f"  help: {error.hint}", file=sys.stderr)
        return None


def _predict(args) -> int:
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        print(f"ftr predict: error: --threshold is a score between 0 and 1, not {args.threshold}", file=sys.stderr)
        return 2
    run = _open_run(args, "predict")
    if run is None:
        return 1
    if args.draw and not hasattr(run.task, "draw"):
        print(f"ftr predict: error: --draw draws boxes: {run.plan.task} runs have none to draw", file=sys.stderr)
        return 2
    from runtime.predict import PredictOptions, predict

    options = PredictOptions(
        top=args.top,
        fmt=args.fmt,
        output=args.output,
        batch_size=args.batch_size,
        device=args.device,
        column=args.column,
        threshold=args.threshold,
        progress=sys.stderr.isatty(),
        draw=args.draw,
    )
    try:
        summary = predict(run, args.inputs, options)
    except OSError as error:
        print(f"ftr predict: error: cannot write '{args.output}': {error.strerror or error}", file=sys.stderr)
        return 1
    for given, reason in summary.skipped.items():
        print(f"ftr predict: skipped {given}: {reason}", file=sys.stderr)
    skipped = f", skipped {len(summary.skipped)}" if summary.skipped else ""
    print(
        f"ftr predict: {summary.predicted} predicted with {run.model_file}{skipped}"
        + (f"; wrote {args.output}" if args.output else ""),
        file=sys.stderr,
    )
    return 1 if summary.predicted == 0 else 0


def _evaluate(args) -> int:
    run = _open_run(args, "evaluate")
    if run is None:
        return 1
    from runtime import evaluate
    from runtime.evaluation_data import EvaluateError

    from .resolve.problem import Problem

    try:
        source = evaluate.data_source(run, args.source)
        result = evaluate.evaluate(run, source, args.device, args.worst, progress=sys.stderr.isatty())
        written = evaluate.write_folder(args.output, run, result) if args.output else []
    except RecipeError as error:
        return _report(error)
    except EvaluateError as error:
        print(f"ftr evaluate: error: {error.message}", file=sys.stderr)
        if error.hint:
            print(f"  help: {error.hint}", file=sys.stderr)
        return 1
    except (Problem, ValueError) as error:  # the data's own checks (runtime datasets)
        print(f"ftr evaluate: error: {error}", file=sys.stderr)
        return 1
    print(evaluate.summary_text(run, result))
    for path, reason in result.skipped.items():
        print(f"ftr evaluate: skipped {path}: {reason}", file=sys.stderr)
    if written:
        print(f"ftr evaluate: wrote {', '.join(written)} in {args.output}", file=sys.stderr)
    return 0


def _export(args) -> int:
    """Refusals first (onnx missing, DIR taken), before the run is opened or anything written."""
    from runtime.export import ExportError, check_target, export

    if args.fmt == "onnx":
        from runtime.export_onnx import missing

        problem = missing()
        if problem:
            print(problem, file=sys.stderr)
            return 1
    try:
        check_target(args.output, args.overwrite)
    except ExportError as error:
        return _export_error(error)
    run = _open_run(args, "export")
    if run is None:
        return 1
    try:
        summary = export(run, args.output, onnx=args.fmt == "onnx", overwrite=args.overwrite)
    except ExportError as error:
        return _export_error(error)
    except OSError as error:
        print(f"ftr export: error: cannot write '{args.output}': {error.strerror or error}", file=sys.stderr)
        return 1
    if summary.onnx is not None:
        from runtime.export_onnx import ATOL, RTOL

        check = summary.onnx
        if check.fallback:
            print(f"ftr export: torch.export cannot export this model ({check.fallback})", file=sys.stderr)
            print("ftr export: model.onnx written by the TorchScript exporter instead", file=sys.stderr)
        print(f"ftr export: model.onnx ({check.exporter}) against onnxruntime on {check.inputs}:", file=sys.stderr)
        print(f"  {check.figures()} (within rtol {RTOL:g}, atol {ATOL:g})", file=sys.stderr)
    print(f"ftr export: wrote {summary.folder} ({', '.join(summary.files)}) from {run.model_file}", file=sys.stderr)
    if summary.onnx_failure:
        print(f"ftr export: error: no model.onnx: {summary.onnx_failure}", file=sys.stderr)
        print("  help: the other files are written; predict.py runs the model without ONNX", file=sys.stderr)
        return 1
    return 0


def _export_error(error) -> int:
    print(f"ftr export: error: {error.message}", file=sys.stderr)
    if error.hint:
        print(f"  help: {error.hint}", file=sys.stderr)
    return 1


def _report_runs(args) -> int:
    if len(args.runs) > 1 and not args.output:
        print("ftr report: error: several runs need -o FILE.html: the page belongs to no one run", file=sys.stderr)
        return 2
    from runtime.report import ReportError, missing_matplotlib, write_report

    problem = missing_matplotlib()
    if problem:
        print(problem, file=sys.stderr)
        return 1
    try:
        written = write_report(args.runs, args.output)
    except ReportError as error:
        print(f"ftr report: error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {written}", file=sys.stderr)
    return 0


def _merge(args) -> int:
    from runtime.merge import MergeError, check_out, merge
    from runtime.trained import RunOpenError, open_run

    try:
        check_out(args.output, args.overwrite)
        runs = [open_run(folder, args.which) for folder in args.run_folders]
        say = lambda text: print(text, file=sys.stderr)  # noqa: E731
        about = merge(runs, args.output, "greedy" if args.greedy else "uniform", args.wise, args.bn, say)
    except (MergeError, RunOpenError) as error:
        print(f"ftr merge: error: {error.message}", file=sys.stderr)
        if error.hint:
            print(f"  help: {error.hint}", file=sys.stderr)
        return 1
    held = ", ".join(f"{k} {v:.4f}" for k, v in about["held_out"].items()) or "no val data to measure it on"
    kept = about.get("kept", about["runs"])
    print(f"ftr merge: wrote {args.output} ({about['method']} of {len(kept)} run(s): {held})", file=sys.stderr)
    return 0


def _suggest(args) -> int:
    from runtime.device import device_error
    from runtime.suggest.measuring import SuggestError

    command = f"ftr suggest {args.kind}"
    problem = device_error(args.device)
    if problem:
        print(f"{command}: error: {problem}", file=sys.stderr)
        return 2
    if args.kind == "lr":
        from runtime.suggest.lr import LrRequest, suggest_lr

        suggest, request = suggest_lr, LrRequest(args.file, args.output, args.epoch, args.steps, args.plot, args.device)
    else:
        from runtime.suggest.freeze import FreezeRequest, suggest_freeze

        suggest, request = (
            suggest_freeze,
            FreezeRequest(args.file, args.output, args.batches, args.fraction, args.device),
        )
    try:
        suggestion = suggest(request)
    except RecipeError as error:
        return _report(error)
    except SuggestError as error:
        print(f"{command}: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"{command}: error: cannot write the new recipe or its curve: {error.strerror or error}", file=sys.stderr)
        return 1
    if not args.output:
        sys.stdout.write(suggestion.text)
    for line in suggestion.summary(args.output):
        print(f"{command}: {line}", file=sys.stderr)
    return 0


def _schema(args) -> int:
    import json

    from .recipe import Recipe

    print(json.dumps(Recipe.model_json_schema(), indent=2))
    return 0


def _lsp(args) -> int:
    try:
        from .editor.language_server import serve
    except ModuleNotFoundError as error:
        if error.name not in ("pygls", "lsprotocol"):
            raise
        print("ftr lsp: the language server needs pygls: pip install 'ftr[lsp]'", file=sys.stderr)
        return 2
    return serve()


def _fmt(args) -> int:
    from .files import atomic_write_text
    from .formatter import format_text

    changed = failed = False
    for file in args.files:
        try:
            source = sys.stdin.read() if file == "-" else read_source(file)
            formatted = format_text(source, "<stdin>" if file == "-" else file)
        except RecipeError as error:
            _report(error)
            failed = True
            continue
        if file == "-":
            if not args.check:
                sys.stdout.write(formatted)
            changed |= formatted != source
        elif formatted != source:
            changed = True
            if args.check:
                print(f"would reformat {file}", file=sys.stderr)
            else:
                atomic_write_text(file, formatted)
                print(f"reformatted {file}", file=sys.stderr)
    if failed:
        return 1
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
