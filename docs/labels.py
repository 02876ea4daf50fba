"""A Griffe extension: the API reference shows no "abstractmethod" label.

``daemon_db.DB`` is the front both engines subclass, so the methods each engine
does its own way (``stats``, ``backup``...) are abstract on it; but every DB a
caller holds has them all, and the reference documents them as plain methods.
"""

from __future__ import annotations

from typing import Any

import griffe


class NoAbstractLabel(griffe.Extension):
    def on_function_instance(self, *, func: griffe.Function, **kwargs: Any) -> None:
        func.labels.discard("abstractmethod")

    def on_attribute_instance(self, *, attr: griffe.Attribute, **kwargs: Any) -> None:
        attr.labels.discard("abstractmethod")  # a property is an attribute by then
