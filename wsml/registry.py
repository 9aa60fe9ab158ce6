"""One name -> object registry for losses, backbones, data set adapters and callbacks (timm-style).

Names are matched after one normalisation (:func:`normalise`: case, surrounding blanks, ``_`` read as ``-``), so
``small-cnn`` = ``small_cnn`` and ``LL_R`` = ``ll-r``; lists and messages show names as they were registered. An
entry may be lazy (``"package.module:attribute"``, imported on first use, so optional dependencies are only needed
by what uses them), have aliases, or, with a name ending in ``:``, stand for a family (``timm:<model>``). An
unknown name is a ValueError listing the choices.

    LOSSES = Registry("loss")

    @LOSSES.register("ll-r", aliases=("large-loss-rejection",))
    class LargeLossRejection(...): ...

    LOSSES.get("LL_R")  # -> LargeLossRejection
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar, Optional


def normalise(name: str) -> str:
    """The key a name is matched by: stripped, lower case, ``_`` read as ``-``."""
    return str(name).strip().lower().replace("_", "-")


class Registry:
    """A table of named entries of one ``kind`` ("loss", "backbone", "data set", "callback")."""

    every: ClassVar[list[Registry]] = []  # all registries (the tests restore them after registering test entries)

    def __init__(self, kind: str, hint: str = ""):
        self.kind, self.hint = kind, hint  # hint: appended to the unknown-name message
        self._entries: dict[str, tuple[str, Any]] = {}  # key -> (name as registered, object or "module:attr")
        self._aliases: dict[str, str] = {}  # key of an alias -> key of its entry
        Registry.every.append(self)

    def register(self, name: str, obj: Any = None, *, aliases: tuple[str, ...] = (), lazy: Optional[str] = None
                 ) -> Any:
        """Register ``obj`` (returned), or the ``lazy`` "module:attr", or, used as a decorator, the decorated object
        under ``name`` and ``aliases``. A name or alias already taken is a ValueError (unregister first to replace
        an entry)."""

        def add(target: Any) -> Any:
            key = normalise(name)
            keys = [normalise(a) for a in aliases]
            for k in (key, *keys):
                taken = self._aliases.get(k, k if k in self._entries else None)
                if taken is not None:
                    raise ValueError(f"{self.kind} name {k!r} is already registered for "
                                     f"{self._entries[taken][0]!r}")
            self._entries[key] = (name.strip(), target)
            self._aliases.update({k: key for k in keys})
            return target

        if lazy is not None:
            add(lazy)
            return lambda x: x
        return add if obj is None else add(obj)

    def unregister(self, name: str) -> None:
        """Remove an entry and its aliases (no error when absent)."""
        key = self._key(name)
        self._entries.pop(key, None)
        self._aliases = {a: k for a, k in self._aliases.items() if k != key}

    def available(self) -> list[str]:
        """Registered names, sorted; a family is written ``prefix:<name>``."""
        names = [n for n, _ in self._entries.values()]
        return sorted(n for n in names if not n.endswith(":")) + sorted(f"{n}<name>" for n in names
                                                                        if n.endswith(":"))

    def aliases(self) -> list[str]:
        return sorted(self._aliases)

    def resolve(self, name: str) -> str:
        """The registered name that ``name`` (any spelling, or an alias) means; ValueError listing the choices."""
        return self._entries[self._known_key(name)][0]

    def get(self, name: str) -> Any:
        """The object registered as ``name`` (a lazy entry is imported now)."""
        return self._load(self._known_key(name))

    def _known_key(self, name: str) -> str:
        key = self._key(name)
        if key not in self._entries:
            raise ValueError(self._unknown(name))
        return key

    def get_family(self, name: str) -> Optional[tuple[Any, str]]:
        """``(object, rest)`` when ``name`` is ``<family>:<rest>`` of a registered family, else None; the rest keeps
        its spelling (``timm:resnet18`` -> the ``timm:`` builder and ``"resnet18"``)."""
        prefix, sep, rest = str(name).strip().partition(":")
        key = normalise(prefix + sep)
        if not sep or key not in self._entries:
            return None
        if not rest:
            raise ValueError(f"{self.kind} {name!r}: give a model name after {self._entries[key][0]!r}, "
                             f"e.g. '{self._entries[key][0]}resnet18'")
        return self._load(key), rest

    def __contains__(self, name: str) -> bool:
        return self._key(name) in self._entries

    def __getitem__(self, name: str) -> Any:
        """The entry as registered: the object, or for a lazy one its "module:attr" string (not imported)."""
        return self._entries[self._key(name)][1]

    def snapshot(self) -> tuple[dict, dict]:
        return dict(self._entries), dict(self._aliases)

    def restore(self, state: tuple[dict, dict]) -> None:
        self._entries, self._aliases = dict(state[0]), dict(state[1])

    def _key(self, name: str) -> str:
        if not isinstance(name, str):
            raise ValueError(f"{self.kind} name must be a string, got {type(name).__name__}")
        key = normalise(name)
        return self._aliases.get(key, key)

    def _load(self, key: str) -> Any:
        name, target = self._entries[key]
        if isinstance(target, str):
            target = import_target(target, f"{self.kind} {name!r}")
        return target

    def _unknown(self, name: str) -> str:
        aliases = self.aliases()
        return (f"unknown {self.kind} {name!r}; available: {', '.join(self.available()) or 'none'}"
                + (f" (aliases: {', '.join(aliases)})" if aliases else "") + self.hint)


def import_target(target: str, what: str) -> Any:
    """The attribute named by ``"package.module:attribute"``; ValueError naming ``what`` when it cannot be had."""
    module, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise ValueError(f"{what}: cannot import {target!r} ({e})") from None
