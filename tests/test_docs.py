"""The Python examples of README.md and docs/user-guide.md run as written and print what they say.

An example that needs the reader's own files (``"haadf.dm4"``, a finished run's study) says so
with the comment ``<!-- example: needs your files -->`` on the line before its code fence;
it is compiled but not run.  Every other example is run in an empty folder.  Where a ``print``
line's comment states values as ``label value, label value`` (``# False 0.949, True 0.994``),
the printed lines starting with those labels must show them, to within 0.01 (floating point
differs between CPU models, and a chip can land differently).  The other guides' examples are
run by the tests of their features (test_series, test_training, test_hyperspy, test_batch).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
NEEDS_FILES = "<!-- example: needs your files -->"
STATED = re.compile(r"#\s*((?:[\w\"'.-]+ -?\d+\.\d+)(?:,\s*[\w\"'.-]+ -?\d+\.\d+)*)\s*$")


def examples(path: Path) -> list[tuple[str, str, bool]]:
    """``(where, code, needs_files)`` for every ```python block of ``path``."""
    lines = path.read_text().splitlines()
    found = []
    for i, line in enumerate(lines):
        if line.strip() == "```python":
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            needs_files = i > 0 and lines[i - 1].strip() == NEEDS_FILES
            found.append((f"{path.name}:{i + 1}", "\n".join(lines[i + 1:end]) + "\n", needs_files))
    return found


def stated_values(code: str) -> dict[str, float]:
    """``{label: value}`` stated in the comments of the example's ``print`` lines."""
    stated = {}
    for line in code.splitlines():
        if "print(" in line and (match := STATED.search(line)):
            for pair in match.group(1).split(","):
                label, value = pair.split()
                stated[label] = float(value)
    return stated


EXAMPLES = [example for doc in ("README.md", "docs/user-guide.md") for example in examples(ROOT / doc)]


def test_the_examples_are_found_and_some_need_the_readers_files():
    assert len(EXAMPLES) >= 10
    assert any(needs for *_, needs in EXAMPLES) and not all(needs for *_, needs in EXAMPLES)
    assert stated_values('print(r, x)   # 1 0.953, auto 0.958\n') == {"1": 0.953, "auto": 0.958}
    assert stated_values('print(seg)    # Segmentation(4 communities)\n') == {}


@pytest.mark.parametrize("where, code, needs_files", EXAMPLES, ids=[where for where, *_ in EXAMPLES])
def test_every_example_runs_and_prints_what_it_says(where, code, needs_files, tmp_path, monkeypatch, capsys):
    compiled = compile(code, where, "exec")
    if needs_files:
        return  # compiled, so its syntax is checked; the reader's files are not here to run it
    monkeypatch.chdir(tmp_path)
    exec(compiled, {"__name__": "__doc_example__"})
    printed = {}
    for line in capsys.readouterr().out.splitlines():
        words = line.split()
        if words:
            printed.setdefault(words[0], words[1] if len(words) > 1 else "")
    for label, value in stated_values(code).items():
        assert label in printed, f"{where}: nothing printed for {label!r}"
        assert float(printed[label]) == pytest.approx(value, abs=0.01), f"{where}: {label}"
