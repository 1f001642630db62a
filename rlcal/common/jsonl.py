"""One JSONL line to a JSON value, with the errors every rlcal loader gives for bad lines (`rlcal score`'s
predictions, the QA loader's pre-check, `rlcal singleton-rate`'s mentions).

    from rlcal.common.jsonl import BLANK, parse_line
    value = parse_line(raw_bytes, lineno, where="preds.jsonl line 3")   # BLANK for an empty line

Bytes that are not UTF-8, invalid JSON and JSON nested too deeply for Python's parser are each an `RlcalError`
"{where}: ..." (a UTF-8 byte-order mark on line 1 is dropped). Checking what the value must be is the caller's.
"""

from __future__ import annotations

import json
from typing import Any

from rlcal.common.errors import RlcalError

BLANK: Any = object()  # what parse_line returns for a line of whitespace (a JSON `null` line is None)


def parse_line(raw: bytes, lineno: int, where: str) -> Any:
    """The JSON value on one line, or BLANK; RlcalError naming `where` for a bad line (module docstring)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RlcalError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if lineno == 1:
        text = text.removeprefix("\ufeff")
    if not text.strip():
        return BLANK
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RlcalError(f"{where}: invalid JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:  # `[[[[...` thousands deep: Python's parser gives up, which is bad input too
        raise RlcalError(f"{where}: JSON nested too deeply") from None
