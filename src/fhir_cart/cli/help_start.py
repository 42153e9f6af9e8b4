"""``--help`` without the modules it never uses: typer's help formatter
(``typer.rich_utils``) imports ``rich.markdown`` (markdown-it) and ``rich.traceback``
(pygments) when it loads, for help written in Markdown and for pretty tracebacks; fhir_cart's
help is plain text and its errors are printed as messages. Those two imports were about a
quarter of ``fhir-cart --help``'s time (benchmarks/bench_startup.py).

:func:`load_help_formatter` imports the formatter with stand-ins for those two modules
that import the real ones the first time they are used, then takes the stand-ins away
again, so any later ``import rich.markdown`` gets the real module. When either is loaded
already, nothing is done.
"""

from __future__ import annotations

import sys
import types
from typing import Any

__all__ = ["load_help_formatter"]


class _Markdown:
    """``rich.markdown.Markdown``, imported when one is made."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        from rich.markdown import Markdown

        return Markdown(*args, **kwargs)


class _Traceback:
    """``rich.traceback.Traceback``, imported when one is made."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        from rich.traceback import Traceback

        return Traceback(*args, **kwargs)

    @classmethod
    def from_exception(cls, *args: Any, **kwargs: Any) -> Any:
        from rich.traceback import Traceback

        return Traceback.from_exception(*args, **kwargs)


def _stand_in(name: str, **names: Any) -> types.ModuleType:
    module = types.ModuleType(name, "a stand-in while typer's help formatter loads")
    for key, value in names.items():
        setattr(module, key, value)
    return module


def load_help_formatter() -> None:
    """Import ``typer.rich_utils`` without importing ``rich.markdown`` and
    ``rich.traceback`` (see the module docstring)."""
    held = ("typer.rich_utils", "rich.markdown", "rich.traceback")
    if any(name in sys.modules for name in held):
        return
    stand_ins = {
        "rich.markdown": _stand_in("rich.markdown", Markdown=_Markdown),
        "rich.traceback": _stand_in("rich.traceback", Traceback=_Traceback),
    }
    sys.modules.update(stand_ins)
    try:
        import typer.rich_utils  # noqa: F401  # loaded here, with the stand-ins
    finally:
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
