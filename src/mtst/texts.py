"""What a text is, checked the same way wherever texts come in: files, arguments, HTTP requests, Python.

A text is a ``str`` that shows something once invisible characters are set aside (whitespace,
zero-width and format characters such as U+200B or a byte-order mark, control characters, combining
marks with nothing to combine with, Hangul fillers) and holds only valid Unicode: a lone surrogate
(from a byte that is not UTF-8 on a command line, or ``\\ud800`` in JSON) would break the tokenizer.

:func:`as_texts` is the Python API's boundary: one string is one text; a list or tuple of strings is
many; anything else (a DataFrame, a Series, a ``datasets`` object, a generator, a number) is refused
with one line naming what is accepted, before any work is done.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Any

# Categories that show nothing on their own: control, format (zero-width, BOM, direction marks),
# unassigned/private-use surrogates aside, separators, and combining marks (nothing to combine with).
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp", "Mn", "Me"})
# Letters and symbols that render as blanks (Hangul fillers, the blank braille pattern).
_BLANK_CHARACTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def is_visible(char: str) -> bool:
    """Whether one character shows something on its own."""
    return (
        not char.isspace() and char not in _BLANK_CHARACTERS and unicodedata.category(char) not in _INVISIBLE_CATEGORIES
    )


def text_problem(text: Any) -> str | None:
    """Why ``text`` cannot be embedded, or None. One rule for files, arguments, the server and Python."""
    if not isinstance(text, str):
        return f"not text ({type(text).__name__})"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"not valid Unicode (a lone surrogate or undecodable byte at character {exc.start})"
    if not any(is_visible(c) for c in unicodedata.normalize("NFKC", text)):
        return "empty text" if not text.strip() else "empty text (only invisible characters)"
    return None


def _kind(value: Any) -> str:
    cls = type(value)
    module = cls.__module__.split(".")[0]
    return cls.__name__ if module == "builtins" else f"{module}.{cls.__name__}"


def as_texts(texts: Any, name: str = "texts") -> tuple[list[str], bool]:
    """``(texts as a list, whether one string was given)``; the Python API's one input check.

    A ``str`` is one text. A list or tuple holds texts. Anything else is a :class:`TypeError` naming
    what is accepted; a text that is not one (empty, invisible, not a string) a :class:`ValueError`
    naming its index.
    """
    if isinstance(texts, str):
        items, single = [texts], True
    elif isinstance(texts, (list, tuple)):
        items, single = list(texts), False
    else:
        hint = ""
        if hasattr(texts, "columns") or hasattr(texts, "column_names"):
            hint = " (pass one column as a list, e.g. df['text'].tolist() or list(ds['text']))"
        elif hasattr(texts, "tolist"):
            hint = " (pass .tolist())"
        elif not isinstance(texts, (bytes, bytearray, dict, Sequence)) and hasattr(texts, "__iter__"):
            hint = " (pass list(...))"
        raise TypeError(f"{name}: expected a string or a list of strings, got {_kind(texts)}{hint}")
    for i, text in enumerate(items):
        problem = text_problem(text)
        if problem:
            where = name if single else f"{name}[{i}]"
            error = TypeError if not isinstance(text, str) else ValueError
            raise error(f"{where}: {problem}; a text is a string with at least one visible character")
    return items, single


def as_names(names: Any, name: str = "tasks") -> list[str] | None:
    """Task names given to the Python API: None (all), one name, or a list or tuple of names."""
    if names is None:
        return None
    if isinstance(names, str):
        return [names]
    if isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names):
        if not names:
            raise ValueError(f"{name}: an empty list names no task; give None for every task")
        return list(names)
    raise TypeError(f"{name}: expected a task name or a list of task names, got {_kind(names)}")
