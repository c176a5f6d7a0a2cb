"""The quick-start in docs/engine.md runs as written."""

from __future__ import annotations

import re

from tests.engine.conftest import REPO


def test_quick_start_runs() -> None:
    text = (REPO / "docs" / "engine.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S)
    assert code is not None
    namespace: dict = {}
    exec(compile(code.group(1), "docs/engine.md", "exec"), namespace)
    engine = namespace["engine"]
    assert len(engine.history) == 1 and engine.history[0].receipt.entries[0].rule_name == "pos/step"
