"""Selectors matched against the modules of the built model."""

from __future__ import annotations

import difflib
import fnmatch

from torch import nn

from ..recipe import Selector, SelectorList
from .problem import Problem

RESERVED = ("all", "head", "backbone")


class ModelIndex:
    """The modules and parameters of a model, and which parameters each module owns."""

    def __init__(self, model: nn.Module, head_path: str):
        self.modules = dict(model.named_modules())
        self.params = [name for name, _ in model.named_parameters()]
        self.numel = {name: p.numel() for name, p in model.named_parameters()}
        self.head_path = head_path
        self.head = self.under(head_path)

    def under(self, path: str) -> set[str]:
        """Parameters of the module at path and of everything in it."""
        if path == "":
            return set(self.params)
        prefix = path + "."
        return {p for p in self.params if p.startswith(prefix)}

    def closest(self, text: str, n: int = 3) -> list[str]:
        """Module paths like text, those as deep as text first."""
        paths = [p for p in self.modules if p]
        depth = text.count(".")
        level = [p for p in paths if p.count(".") == depth]
        return difflib.get_close_matches(text, level, n=n, cutoff=0.5) or difflib.get_close_matches(
            text, paths, n=n, cutoff=0.6
        )

    def top_level(self) -> list[str]:
        return [p for p in self.modules if p and "." not in p]


class SelectorResolver:
    def __init__(self, index: ModelIndex, groups: dict[str, set[str]] | None = None):
        self.index = index
        self.groups = groups if groups is not None else {}

    def params(self, selectors: SelectorList) -> set[str]:
        include = set().union(*(self.one(s) for s in selectors.include))
        exclude = set().union(*(self.one(s) for s in selectors.exclude)) if selectors.exclude else set()
        return include - exclude

    def one(self, selector: Selector) -> set[str]:
        index = self.index
        if selector.kind == "name":
            if selector.text == "all":
                return set(index.params)
            if selector.text == "head":
                return set(index.head)
            if selector.text == "backbone":
                return set(index.params) - index.head
            if selector.text in self.groups:
                return set(self.groups[selector.text])
            return self._module(selector.text)
        if selector.kind == "path":
            return self._module(selector.text)
        if selector.kind == "glob":
            return self._glob(selector.text)
        return self._children(selector)

    def _module(self, path: str) -> set[str]:
        if path not in self.index.modules or path == "":
            raise self._nothing(path, f"no module '{path}' in the model")
        return self.index.under(path)

    def _glob(self, pattern: str) -> set[str]:
        matched = [p for p in self.index.modules if p and fnmatch.fnmatchcase(p, pattern)]
        if not matched:
            raise self._nothing(pattern.replace("*", "").replace("?", ""), f"'{pattern}' matches no module")
        return set().union(*(self.index.under(p) for p in matched))

    def _children(self, selector: Selector) -> set[str]:
        container = self._container(selector.text)
        children = [name for name, _ in container.named_children()]
        if selector.kind == "index":
            if not -len(children) <= selector.index < len(children):
                raise Problem(
                    f"index {selector.index} is out of range: '{selector.text}' has {len(children)} children",
                    hint=f"use an index from {-len(children)} to {len(children) - 1}",
                )
            chosen = [children[selector.index]]
        else:
            chosen = children[slice(selector.start, selector.stop, selector.step)]
            if not chosen:
                raise Problem(
                    f"'{selector}' selects no children: '{selector.text}' has {len(children)}",
                    hint=f"children are numbered 0 to {len(children) - 1}, or from the end -1 to -{len(children)}",
                )
        prefix = f"{selector.text}." if selector.text else ""
        return set().union(*(self.index.under(prefix + name) for name in chosen))

    def _container(self, path: str) -> nn.Module:
        if path not in self.index.modules:
            raise self._nothing(path, f"no module '{path}' in the model")
        module = self.index.modules[path]
        if not any(True for _ in module.children()):
            raise Problem(f"'{path}' has no children to slice", hint=f"it is a {type(module).__name__}")
        return module

    def _nothing(self, text: str, message: str) -> Problem:
        close = self.index.closest(text)
        if close:
            notes = (f"closest module paths: {', '.join(close)}",) if len(close) > 1 else ()
            return Problem(message, hint=f"did you mean '{close[0]}'?", notes=notes)
        top = self.index.top_level()
        return Problem(message, notes=(f"the model's top-level modules: {', '.join(top)}",))
