"""Checks every node runs on its inputs before it loads or encodes anything (our addition).

Each check raises :class:`~.errors.P3SInputError` with a message that names the input, says
what is wrong and what to do, quotes at most :data:`EXCERPT_CHARS` characters of the given
value and never names a path on the server.

* :func:`text_length`: prompts and word lists, before they are tokenized;
* :func:`finite`, :func:`in_range`, :func:`window`: numbers (NaN and infinity pass ComfyUI's
  own min/max check, ``nan < min`` being false, so they are refused here);
* :func:`model_file_name`: a file name to save under a models folder, checked fully up front
  (characters, reserved device names on any OS, empty stem, length, extension);
* :func:`parse_json`: JSON (or the Python form ComfyUI makes of a JSON object sent to a STRING
  input) with a size and a nesting-depth limit, into the pack's own error.
"""

from __future__ import annotations

import ast
import json
import math
import numbers
import re
from collections.abc import Callable

from .errors import P3SInputError

EXCERPT_CHARS = 60
"""Quoted values are cut to this many characters."""
MAX_JSON_CHARS = 1_000_000
"""Longest JSON text read (1 MB holds tens of thousands of points)."""
MAX_JSON_DEPTH = 32
"""Deepest nesting of lists and objects read (the pack's formats need at most 4)."""
MAX_PROMPT_CHARS = 20_000
"""Longest prompt or caption text read (about 4000 CLIP tokens; tokenizing is slow beyond)."""
MAX_WORDS_CHARS = 1_000
"""Longest list of words to look up in a prompt."""
MAX_NAME_CHARS = 200
"""Longest file name accepted, sub-folders included (file systems allow 255 bytes a part)."""
MAX_PART_BYTES = 255

# Windows refuses these as file names whatever the extension ("con.safetensors" too); a file
# with such a name cannot be shared with Windows users, so they are refused on every OS.
_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {f"{kind}{n}" for kind in ("COM", "LPT") for n in [*"123456789¹²³"]}
_FORBIDDEN_CHARS = set('<>:"|?*')


def excerpt(value: object, limit: int = EXCERPT_CHARS) -> str:
    """``repr(value)``, cut to ``limit`` characters with the full length noted."""
    text = value if isinstance(value, str) else repr(value)
    shown = repr(text) if isinstance(value, str) else text
    if len(shown) <= limit:
        return shown
    return f"{shown[:limit]}... ({len(text)} characters)"


def bounded(value: object, max_string: int = 300, max_items: int = 64, depth: int = 8) -> object:
    """A JSON-able copy of ``value`` for display: long strings cut (their length said), long lists
    and dicts shortened (how many more said), nesting below ``depth`` levels left out."""
    if isinstance(value, str):
        return value if len(value) <= max_string else f"{value[:max_string]}... ({len(value)} characters)"
    if isinstance(value, dict | list | tuple) and depth <= 0:
        return f"... ({type(value).__name__} nested too deep to show)"
    if isinstance(value, dict):
        items = list(value.items())
        out = {bounded(str(k), max_string): bounded(v, max_string, max_items, depth - 1) for k, v in items[:max_items]}
        if len(items) > max_items:
            out["..."] = f"{len(items) - max_items} more entries"
        return out
    if isinstance(value, list | tuple):
        out = [bounded(v, max_string, max_items, depth - 1) for v in value[:max_items]]
        if len(value) > max_items:
            out.append(f"... {len(value) - max_items} more items")
        return out
    return value


def finite(name: str, value: object) -> float:
    """``value`` as a float; NaN, infinity and non-numbers are refused naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise P3SInputError(f"{name} is {excerpt(value)}, not a number: give a number.")
    if not math.isfinite(value):
        raise P3SInputError(f"{name} is {value}: give a finite number (NaN and infinity have no meaning here).")
    return float(value)


def in_range(name: str, value: object, low: float | None = None, high: float | None = None) -> float:
    """A finite ``value`` with ``low <= value <= high`` (either bound may be None)."""
    number = finite(name, value)
    if (low is not None and number < low) or (high is not None and number > high):
        bounds = f"[{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}]"
        raise P3SInputError(f"{name} is {number:g}, outside {bounds}: give a value in that range.")
    return number


def all_finite(**values: object) -> None:
    """:func:`finite` on each keyword (its name is the input's)."""
    for name, value in values.items():
        finite(name, value)


def valid_unicode(name: str, value: str) -> str:
    """``value`` when every character is valid Unicode; a lone surrogate (``\\udcff``, from a JSON
    escape) cannot be tokenized or written to a file name, so it is refused naming ``name``."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise P3SInputError(
            f"{name} holds {value[error.start]!r} at character {error.start + 1}, which is not a valid Unicode "
            "character (a lone surrogate): retype the text, or send it as UTF-8."
        ) from None
    return value


def text_length(name: str, value: object, max_chars: int) -> str:
    """``value`` as valid text of at most ``max_chars`` characters (checked before it is tokenized)."""
    if not isinstance(value, str):
        raise P3SInputError(f"{name} must be text, not {type(value).__name__}.")
    valid_unicode(name, value)
    if len(value) > max_chars:
        raise P3SInputError(
            f"{name} is {excerpt(value)}; at most {max_chars} characters are read: give a shorter text."
        )
    return value


def window(start: object, end: object, start_name: str = "start_percent", end_name: str = "end_percent") -> None:
    """Both in [0, 1] and ``start <= end`` (a non-empty window of denoising progress)."""
    a, b = in_range(start_name, start, 0.0, 1.0), in_range(end_name, end, 0.0, 1.0)
    if a > b:
        raise P3SInputError(
            f"{start_name} ({a:g}) is after {end_name} ({b:g}): the window is empty. Set {start_name} <= "
            f"{end_name} (0 = first step, 1 = last step)."
        )


def model_file_name(name: object, input_name: str, extension: str) -> str:
    """A relative file name below a models folder, ``/``-separated, ending in ``extension``.

    Refused, naming ``input_name``: a non-string or empty name; absolute paths, drives and
    ``..``; control characters (NUL, newline, ...) and ``<>:"|?*``; a part that is a reserved
    device name (``con``, ``nul``, ``com1``, ... with any extension), starts with a dot or ends
    with a dot or space; an empty stem; more than :data:`MAX_NAME_CHARS` characters or a part
    over :data:`MAX_PART_BYTES` bytes; another extension. A name without an extension gets
    ``extension``.
    """
    fix = f"give a name such as 'p3s/subject{extension}' (relative to the models folder)"
    if not isinstance(name, str) or not name.strip():
        raise P3SInputError(f"{input_name} is empty: {fix}.")
    valid_unicode(input_name, name)
    parts = name.replace("\\", "/").split("/")
    if parts[-1].strip() in ("", "."):
        raise P3SInputError(f"{input_name} {excerpt(name)} names a folder, not a file: {fix}.")
    if name.startswith(("/", "\\")) or (len(parts[0]) >= 2 and parts[0][1] == ":") or ".." in parts:
        raise P3SInputError(
            f"{input_name} {excerpt(name)} points outside the models folder: {fix}, without a leading '/', "
            "a drive or '..'."
        )
    bad = sorted({c for c in name if ord(c) < 32 or ord(c) == 127 or c in _FORBIDDEN_CHARS})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise P3SInputError(f"{input_name} {excerpt(name)} contains {shown}, which file names cannot hold: {fix}.")
    parts = [part for part in parts if part not in ("", ".")]
    if not parts:
        raise P3SInputError(f"{input_name} {excerpt(name)} has no file name: {fix}.")
    if not parts[-1].lower().endswith(extension.lower()):
        if "." in parts[-1].lstrip(".") and not parts[-1].endswith("."):
            given = parts[-1].rsplit(".", 1)[1]
            raise P3SInputError(
                f"{input_name} {excerpt(name)} ends in '.{excerpt(given, 16)[1:-1]}': these files are {extension} "
                f"(ComfyUI lists only those); end the name in {extension} or leave the extension out."
            )
        parts[-1] += extension
    if parts[-1][: -len(extension)] == "":
        raise P3SInputError(f"{input_name} {excerpt(name)} has an empty file name before {extension}: {fix}.")
    for part in parts:
        if part.split(".")[0].strip().upper() in _RESERVED:
            raise P3SInputError(
                f"{input_name} {excerpt(name)} uses {part.split('.')[0]!r}, a reserved device name on Windows "
                f"(CON, PRN, AUX, NUL, COM1-9, LPT1-9): {fix}."
            )
        if part.startswith(".") or part.endswith((".", " ")) or part != part.strip():
            raise P3SInputError(
                f"{input_name} {excerpt(name)} has a part {excerpt(part, 24)} that starts with a dot or space or "
                f"ends with a dot or space (hidden, or changed by Windows): {fix}."
            )
        if len(part.encode()) > MAX_PART_BYTES:
            raise P3SInputError(
                f"{input_name} {excerpt(name)} has a part of {len(part.encode())} bytes; file systems allow "
                f"{MAX_PART_BYTES}: give a shorter name."
            )
    joined = "/".join(parts)
    if len(joined) > MAX_NAME_CHARS:
        raise P3SInputError(
            f"{input_name} {excerpt(name)} is {len(joined)} characters long; at most {MAX_NAME_CHARS} are "
            "accepted: give a shorter name."
        )
    return joined


def nesting_depth(text: str) -> int:
    """Deepest nesting of ``[``/``{`` in JSON or Python-literal text (brackets in strings ignored)."""
    # Strings (double- or single-quoted, with escapes) are removed first; what is left is counted.
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', "", text)
    depth = deepest = 0
    for match in re.finditer(r"[\[\]{}]", stripped):
        depth += 1 if match.group() in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def parse_json(
    text: object,
    what: str,
    expected: str,
    max_chars: int = MAX_JSON_CHARS,
    max_depth: int = MAX_JSON_DEPTH,
    accept: Callable[[object], bool] = lambda data: isinstance(data, (dict, list)),
) -> object:
    """Parse ``text`` (JSON) for the input ``what``; ``expected`` describes the format in errors.

    Already-parsed lists and dicts (API users calling with objects) pass through. When JSON
    fails and the text is the Python form of a dict or list (ComfyUI turns a JSON object sent
    to a STRING input into ``str(dict)``), that form is read as a literal (our addition). Text
    over ``max_chars`` characters or nested deeper than ``max_depth`` is refused before parsing.
    """
    if isinstance(text, (dict, list)):
        text = json.dumps(text)
    if not isinstance(text, str):
        raise P3SInputError(f"{what} must be text ({expected}), not {type(text).__name__}.")
    if len(text) > max_chars:
        raise P3SInputError(
            f"{what} is {len(text)} characters long; at most {max_chars} are read: give only what the format "
            f"needs ({expected})."
        )
    depth = nesting_depth(text)
    if depth > max_depth:
        raise P3SInputError(
            f"{what} is nested {depth} levels deep; at most {max_depth} are read ({expected}): {excerpt(text)}."
        )
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        message = f"{exc.msg} at line {exc.lineno}, column {exc.colno}"
    except (RecursionError, ValueError) as exc:  # very long numbers and the like
        message = type(exc).__name__
    stripped = text.strip()
    if stripped[:1] in "[{" and "'" in stripped:
        try:
            data = ast.literal_eval(stripped)
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
            data = None
        if data is not None and accept(data):
            return data
    raise P3SInputError(f"{what} is not valid JSON ({message}): {excerpt(text)}. Expected {expected}.")
