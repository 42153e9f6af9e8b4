"""``fhir-cart --help`` (and ``fhir-cart CMD ... --help``) from a kept copy of typer's own
rendering, so a repeated help request does not load typer and rich (issue 24: about 0.3 s of
imports and rendering against about 0.05 s for the kept copy).

The first time a help request meets a set of conditions, typer renders it as always and
:class:`Tee` keeps, beside what it writes to the terminal, a copy of exactly those
characters; the copy is stored in the user's cache folder under a key of everything the
rendering can depend on (:func:`help_key`):

- the arguments, the program name and how Python was started (click names the program from
  ``sys.argv[0]`` and ``__main__``);
- the environment, whole but for the few variables a shell changes on its own (``PWD``,
  ``OLDPWD``, ``SHLVL``, ``_``): rich and typer read ``COLUMNS``, ``LINES``, ``TERM``,
  ``COLORTERM``, ``NO_COLOR``, ``FORCE_COLOR``, ``TTY_COMPATIBLE``, ``TERMINAL_WIDTH`` and
  more, and a variable read by a later version is covered too;
- the terminal: the size of standard input, output and error (rich takes the first that is a
  terminal), whether output and error are terminals, their encodings;
- the code: Python's version, and the path, size and modification time of every file of
  every module loaded when typer rendered it (fhir_cart, typer, rich, pydantic, the standard
  library: :func:`module_files`), checked each time the copy is used: an upgrade or an edit
  renders anew.

Only a plain help request (command names, then ``--help``) is answered from the cache, and a
rendering is kept only if it ended with exit code 0 and wrote nothing to standard error. Any
doubt (no copy, a copy for other conditions, an unreadable or foreign file) falls back to
typer. ``FHIR_CART_HELP_CACHE=off`` turns the cache off; the folder is
``$XDG_CACHE_HOME/fhir-cart/help`` (``~/.cache/fhir-cart/help`` by default).

Standard library only, and little of it (``os``, ``hashlib``): a kept rendering is served
before anything else loads; writing one imports ``tempfile`` and ``logging`` as well.
"""

from __future__ import annotations

import hashlib
import os
import sys

TYPE_CHECKING = False  # not typing's (about 15 ms to import): a kept help is served without it
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from pathlib import Path
    from typing import TextIO

__all__ = [
    "KEEP",
    "Tee",
    "answer_help",
    "cache_folder",
    "help_key",
    "is_help_request",
    "module_files",
    "read_help",
    "stamps",
    "terminal_state",
    "write_help",
]

KEEP = 64
"""Most kept renderings; the oldest go when a new one is written past this."""
_IGNORED_ENV = frozenset({"PWD", "OLDPWD", "SHLVL", "_"})
_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
_MAGIC = "fhir-cart help v1 "


def is_help_request(argv: Sequence[str]) -> bool:
    """``--help`` after nothing but command names (``map --out --help`` is no help request:
    ``--help`` is the value of ``--out`` there)."""
    return bool(argv) and argv[-1] == "--help" and all(_is_name(a) for a in argv[:-1])


def _is_name(word: str) -> bool:
    return word[:1].isalpha() and word[:1].islower() and set(word) <= _NAME_CHARACTERS


def cache_folder(env: Mapping[str, str]) -> str | None:
    """Where renderings are kept, or None when ``FHIR_CART_HELP_CACHE`` is ``off``/``0``."""
    if env.get("FHIR_CART_HELP_CACHE", "").strip().lower() in ("off", "0", "false", "no"):
        return None
    base = env.get("XDG_CACHE_HOME") or ""
    if not base:
        home = env.get("HOME") or ""
        if not home:
            return None
        base = os.path.join(home, ".cache")
    return os.path.join(base, "fhir-cart", "help")


def module_files(modules: Iterable[object]) -> list[str]:
    """The files of the loaded modules (``sys.modules``): the code that took part in a
    rendering."""
    files = {getattr(m, "__file__", None) for m in modules}
    return sorted(f for f in files if isinstance(f, str))


Stamp = tuple[str, int, int]


def stamps(files: Iterable[str]) -> list[Stamp]:
    """Each file's path, size and modification time (-1, -1: missing)."""
    out: list[Stamp] = []
    for path in files:
        try:
            stat = os.stat(path)
        except OSError:
            out.append((path, -1, -1))
        else:
            out.append((path, stat.st_size, stat.st_mtime_ns))
    return out


def terminal_state(streams: Sequence[TextIO | None]) -> list[object]:
    """What rich reads of the terminal: each standard stream's size (or None), and of output
    and error whether they are terminals and their encodings."""
    state: list[object] = []
    for fd in (0, 1, 2):
        try:
            state.append(tuple(os.get_terminal_size(fd)))
        except (OSError, ValueError):
            state.append(None)
    for stream in streams:
        try:
            tty = stream.isatty() if stream is not None else None
        except ValueError:
            tty = None
        encoding = getattr(stream, "encoding", None)
        errors = getattr(stream, "errors", None)
        state.append((tty, encoding, errors))
    return state


def help_key(
    argv: Sequence[str],
    program: Sequence[object],
    env: Mapping[str, str],
    terminal: Sequence[object],
) -> str:
    """The key of one rendering: a digest of everything it can depend on (module
    docstring). Any difference gives another key."""
    parts: list[object] = [
        list(argv),
        list(program),
        sorted((k, v) for k, v in env.items() if k not in _IGNORED_ENV),
        list(terminal),
        sys.version,
    ]
    return hashlib.sha256(repr(parts).encode("utf-8", "surrogatepass")).hexdigest()


def read_help(folder: str | Path, key: str) -> str | None:
    """The kept rendering for ``key``, or None: none kept, unreadable, not ours, or a file
    of the code that rendered it has changed (another size or time, or gone)."""
    try:
        with open(os.path.join(folder, f"{key}.txt"), encoding="utf-8", newline="") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError):
        return None
    head, _, rest = text.partition("\n")
    count, _, rest = rest.partition("\n")
    if head != _MAGIC + key or not count.isdigit():
        return None
    lines = rest.split("\n", int(count))
    if len(lines) <= int(count):
        return None
    kept: list[Stamp] = []
    for line in lines[:-1]:
        path, _, numbers = line.rpartition("\t")
        path, _, size = path.rpartition("\t")
        try:
            kept.append((path, int(size), int(numbers)))
        except ValueError:
            return None
    if stamps(p for p, _, _ in kept) != kept:
        return None
    return lines[-1]


def write_help(folder: str | Path, key: str, code: Sequence[Stamp], text: str) -> None:
    """Keep ``text`` for ``key`` with the stamps of the code that rendered it (written whole
    or not at all; only the user can read the folder). Past :data:`KEEP` renderings, the
    oldest go."""
    if any("\n" in path or "\t" in path for path, _, _ in code):
        return  # a path this file format cannot hold: not kept
    import tempfile
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    header = [f"{_MAGIC}{key}", str(len(code)), *(f"{p}\t{s}\t{m}" for p, s, m in code)]
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=".help-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write("\n".join(header) + "\n" + text)
        os.replace(temporary, folder / f"{key}.txt")
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    kept = sorted(folder.glob("*.txt"), key=lambda p: p.stat().st_mtime_ns)
    for old in kept[:-KEEP]:
        old.unlink(missing_ok=True)


class Tee:
    """A text stream that writes through to ``stream`` and keeps a copy of what was
    written. It has no ``buffer``, so click and rich write text through :meth:`write`
    (nothing can reach the terminal past the copy)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        written = self._stream.write(text)  # click probes with bytes: TypeError, not kept
        self.parts.append(text)
        return written

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:
        return self._stream.encoding

    @property
    def errors(self) -> str | None:
        return self._stream.errors

    @property
    def closed(self) -> bool:
        return self._stream.closed

    def text(self) -> str:
        return "".join(self.parts)


def program_state() -> list[object]:
    """How click will name the program: ``sys.argv[0]`` and the ``__main__`` module."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return [
        sys.argv[0] if sys.argv else None,
        getattr(main, "__package__", None),
        getattr(spec, "name", None),
    ]


def current_key(argv: Sequence[str]) -> str:
    """:func:`help_key` for this process."""
    return help_key(
        argv,
        program_state(),
        os.environ,
        terminal_state([sys.stdout, sys.stderr]),
    )


def answer_help(argv: Sequence[str], run: Callable[[list[str]], int]) -> int:
    """Answer the help request ``argv`` from the kept rendering for this process's key, or
    ``run`` it (typer) and keep what it wrote. The exit code is ``run``'s, or 0 when the kept
    rendering is written (a rendering is kept only when typer's exit code was 0)."""
    folder = cache_folder(os.environ)
    if folder is None:
        return run(list(argv))
    key = current_key(argv)
    text = read_help(folder, key)
    if text is not None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return 0
    out, err = sys.stdout, sys.stderr
    tee_out, tee_err = Tee(out), Tee(err)
    sys.stdout, sys.stderr = tee_out, tee_err
    try:
        code = run(list(argv))
    finally:
        sys.stdout, sys.stderr = out, err
    if code == 0 and tee_out.parts and not tee_err.parts:
        try:
            write_help(
                folder, key, stamps(module_files(list(sys.modules.values()))), tee_out.text()
            )
        except OSError as exc:  # a speed-up only: the help was shown all the same
            import logging

            logging.getLogger(__name__).debug("help not kept in %s: %s", folder, exc)
    return code
