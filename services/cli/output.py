"""How CLI commands print: JSON for scripts (``--json``), aligned text for people."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any


def emit(data: Mapping[str, Any] | Sequence[Mapping[str, Any]], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, indent=2, default=str))
        return
    rows = [data] if isinstance(data, Mapping) else list(data)
    for index, row in enumerate(rows):
        if index:
            print()
        width = max((len(key) for key in row), default=0)
        for key, value in row.items():
            if isinstance(value, (list, tuple)):
                value = " ".join(str(item) for item in value)
            print(f"{key.ljust(width)}  {value}")
