"""`ftr lsp`: a language server on stdin/stdout (pygls).

Each open or change of a recipe is checked at once for syntax and model-free
mistakes; after a pause in typing the model-aware check runs in one background
thread (torch is imported there, once), and its diagnostics are published only
if the document has not changed since.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NoReturn

from lsprotocol import types as lsp
from pygls.lsp.server import LanguageServer

from .. import __version__
from ..diagnostics import Diagnostic, source_lines
from ..formatter import format_text
from .completion import complete
from .document_checks import model_check, syntax_check
from .hover import hover
from .positions import offset_of, point_of, span_to_range, whole_text_range

logger = logging.getLogger("ftr.lsp")
DEBOUNCE_SECONDS = float(os.environ.get("FTR_LSP_DEBOUNCE", "0.25"))
ITEM_KINDS = {
    "keyword": lsp.CompletionItemKind.Keyword,
    "option": lsp.CompletionItemKind.Property,
    "function": lsp.CompletionItemKind.Function,
    "value": lsp.CompletionItemKind.Value,
    "module": lsp.CompletionItemKind.Module,
    "group": lsp.CompletionItemKind.Variable,
}


@dataclass
class Checked:
    version: int | None
    model_check: asyncio.Task | None = None


class RecipeServer(LanguageServer):
    def __init__(self):
        super().__init__("ftr", __version__, text_document_sync_kind=lsp.TextDocumentSyncKind.Full)
        self.checked: dict[str, Checked] = {}
        self.outlines: dict[str, object] = {}  # uri -> the last model built for it
        self.model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ftr-model-check")
        self.shutdown_requested = False

    @property
    def encoding(self) -> str:
        return str(self.workspace.position_encoding or "utf-16")

    def publish(self, uri: str, version: int | None, text: str, diagnostics: list[Diagnostic]) -> None:
        lines = source_lines(text)
        converted = [_to_lsp(d, lines, self.encoding) for d in diagnostics]
        params = lsp.PublishDiagnosticsParams(uri=uri, version=version, diagnostics=converted)
        self.text_document_publish_diagnostics(params)

    def check(self, uri: str) -> None:
        document = self.workspace.get_text_document(uri)
        previous = self.checked.get(uri)
        if previous is not None and previous.model_check is not None:
            previous.model_check.cancel()
        state = self.checked[uri] = Checked(document.version)
        recipe, diagnostics = syntax_check(document.source, _filename(document))
        self.publish(uri, document.version, document.source, diagnostics)
        if recipe is not None:
            state.model_check = asyncio.ensure_future(self.check_model(uri, state, document.source, recipe))

    async def check_model(self, uri: str, state: Checked, text: str, recipe) -> None:
        try:
            await asyncio.sleep(DEBOUNCE_SECONDS)
            loop = asyncio.get_running_loop()
            work = functools.partial(model_check, recipe, self.outlines.get(uri))
            diagnostics, outline = await loop.run_in_executor(self.model_thread, work)
        except asyncio.CancelledError:
            return
        except Exception:
            logger.exception("the model check of %s failed", uri)
            return
        if outline is not None:
            self.outlines[uri] = outline
        if self.checked.get(uri) is state:  # else the text changed meanwhile: this result is stale
            self.publish(uri, state.version, text, diagnostics)

    def closed(self, uri: str) -> None:
        state = self.checked.pop(uri, None)
        self.outlines.pop(uri, None)
        if state is not None and state.model_check is not None:
            state.model_check.cancel()
        self.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri=uri, diagnostics=[]))


def _filename(document) -> str:
    return document.path or document.uri


def _to_lsp(diagnostic: Diagnostic, lines: list[str], encoding: str) -> lsp.Diagnostic:
    start, end = span_to_range(diagnostic.span, lines, encoding)
    message = diagnostic.message
    message += "".join(f"\n{note}" for note in diagnostic.notes)
    if diagnostic.hint:
        message += f"\nhelp: {diagnostic.hint}"
    severity = lsp.DiagnosticSeverity.Error if diagnostic.is_error else lsp.DiagnosticSeverity.Warning
    return lsp.Diagnostic(range=_range(start, end), message=message, severity=severity, source="ftr")


def _range(start, end) -> lsp.Range:
    return lsp.Range(start=lsp.Position(*start), end=lsp.Position(*end))


def guarded(default=None):
    """A handler whose exception is logged and answered with `default`: one bad
    request never ends the session."""

    def wrap(handler):
        @functools.wraps(handler)
        def run(server, params):
            try:
                return handler(server, params)
            except Exception:
                logger.exception("%s failed", handler.__name__)
                return default

        return run

    return wrap


server = RecipeServer()


@server.feature(lsp.SHUTDOWN)
def _shutdown(ls: RecipeServer, params) -> None:
    ls.shutdown_requested = True


@server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
@guarded()
def did_open(ls: RecipeServer, params: lsp.DidOpenTextDocumentParams):
    ls.check(params.text_document.uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
@guarded()
def did_change(ls: RecipeServer, params: lsp.DidChangeTextDocumentParams):
    ls.check(params.text_document.uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_SAVE)
@guarded()
def did_save(ls: RecipeServer, params: lsp.DidSaveTextDocumentParams):
    ls.check(params.text_document.uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
@guarded()
def did_close(ls: RecipeServer, params: lsp.DidCloseTextDocumentParams):
    ls.closed(params.text_document.uri)


@server.feature(lsp.TEXT_DOCUMENT_COMPLETION, lsp.CompletionOptions(trigger_characters=[" ", ".", "(", ","]))
@guarded(default=[])
def completion(ls: RecipeServer, params: lsp.CompletionParams):
    uri = params.text_document.uri
    text = ls.workspace.get_text_document(uri).source
    offset = offset_of(text, params.position.line, params.position.character, ls.encoding)
    items, prefix = complete(text, offset, ls.outlines.get(uri))
    replaced = _range(point_of(text, offset - len(prefix), ls.encoding), point_of(text, offset, ls.encoding))
    return lsp.CompletionList(is_incomplete=False, items=[_completion_item(item, replaced) for item in items])


def _completion_item(item, replaced: lsp.Range) -> lsp.CompletionItem:
    docs = lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value=item.documentation) if item.documentation else None
    return lsp.CompletionItem(
        label=item.label,
        kind=ITEM_KINDS[item.kind],
        detail=item.detail,
        documentation=docs,
        text_edit=lsp.TextEdit(range=replaced, new_text=item.insert or item.label),
    )


@server.feature(lsp.TEXT_DOCUMENT_HOVER)
@guarded()
def on_hover(ls: RecipeServer, params: lsp.HoverParams):
    uri = params.text_document.uri
    text = ls.workspace.get_text_document(uri).source
    offset = offset_of(text, params.position.line, params.position.character, ls.encoding)
    found = hover(text, offset, ls.outlines.get(uri))
    if found is None:
        return None
    markdown, (start, end) = found
    return lsp.Hover(
        contents=lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value=markdown),
        range=_range(point_of(text, start, ls.encoding), point_of(text, end, ls.encoding)),
    )


@server.feature(lsp.TEXT_DOCUMENT_FORMATTING)
@guarded(default=[])
def formatting(ls: RecipeServer, params: lsp.DocumentFormattingParams):
    from ..diagnostics import RecipeError

    document = ls.workspace.get_text_document(params.text_document.uri)
    text = document.source
    try:
        formatted = format_text(text, _filename(document))
    except RecipeError:
        return []  # the diagnostics already say why
    if formatted == text:
        return []
    return [lsp.TextEdit(range=_range(*whole_text_range(text, ls.encoding)), new_text=formatted)]


def serve() -> NoReturn:
    """Serve on stdio until the editor's `exit` (or the end of its input); then end the
    process at once: 0 after a `shutdown` request, 1 without one, as LSP asks (pygls
    itself exits 0 either way). With torch imported, the interpreter's own teardown
    takes seconds, and a model check may still be running; the server has nothing
    left to write, so neither is waited for."""
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="ftr lsp: %(levelname)s: %(message)s")
    server.start_io()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(ValueError, OSError):  # pygls closes stdout at exit
            stream.flush()
    os._exit(0 if server.shutdown_requested else 1)
