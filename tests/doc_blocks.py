"""The fenced code blocks of README.md and docs/**/*.md, and the runner that executes them.

Every ``python`` block runs, page by page: a page's blocks share one namespace, in order (a later block may
use what an earlier one defined), and a failing block stops its page. An HTML comment right above a block
(invisible on GitHub and on the site) changes that:

* ``<!-- docs-test: skip (reason) -->``: not run; the reason is required (e.g. it needs a GPU or several
  processes);
* ``<!-- docs-test: requires module, other -->``: run only where the modules can be found (peers such as
  TFRS or open_clip; CI installs them);
* ``<!-- docs-test: setup`` ... ``-->``: hidden Python code run just before the block (inputs for fragments);
* ``<!-- docs-test: run -->``: a ``bash`` block that the tests run (shell blocks are otherwise skipped, and
  must say why with ``skip``).

Run as a script (``python doc_blocks.py PAGES.json``) it executes the pages listed in the JSON file and prints
one JSON line of results; the tests run one such process per group of pages (see :func:`group_of`).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import sys
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")
MARKER = re.compile(r"<!--\s*docs-test:\s*(?P<kind>skip|requires|setup|run)\b(?P<body>.*?)-->", re.S)
SHELL = ("bash", "sh", "shell", "console")


@dataclass
class Block:
    """One fenced block and what its markers say."""

    page: str
    line: int                       # 1-based line of the opening fence
    language: str
    code: str
    setup: str = ""
    skip: str | None = None         # the reason, when marked skip
    requires: list[str] = field(default_factory=list)
    run: bool = False               # a shell block marked run


def pages() -> list[Path]:
    """README.md and every Markdown page of docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def extract(path: Path) -> list[Block]:
    """The fenced blocks of one Markdown file, with the markers in the comments right above each."""
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    name = path.relative_to(ROOT).as_posix()
    blocks: list[Block] = []
    i = 0
    consumed_until = 0   # text before this offset belongs to earlier blocks
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line) + 1)
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match or not match.group("lang"):
            if match:   # an unlabelled fence: skip to its end
                i = _closing(lines, i, match.group("indent"))
            i += 1
            continue
        indent, language = match.group("indent"), match.group("lang")
        end = _closing(lines, i, indent)
        code = "\n".join(line[len(indent):] if line.startswith(indent) else line.lstrip()
                         for line in lines[i + 1:end])
        block = Block(page=name, line=i + 1, language=language, code=code + "\n")
        _apply_markers(block, text[consumed_until:offsets[i]])
        blocks.append(block)
        consumed_until = offsets[end + 1] if end + 1 < len(offsets) else len(text)
        i = end + 1
    return blocks


def _closing(lines: list[str], start: int, indent: str) -> int:
    for j in range(start + 1, len(lines)):
        if lines[j].strip() == "```":
            return j
    raise ValueError(f"unclosed code fence at line {start + 1}")


def _apply_markers(block: Block, before: str) -> None:
    """Read the markers of the comments that end right above the block (only blank lines between)."""
    tail = before.rstrip()
    while tail.endswith("-->"):
        start = tail.rfind("<!--")
        comment = tail[start:]
        marker = MARKER.fullmatch(comment)
        if marker is None:
            break
        kind, body = marker.group("kind"), marker.group("body")
        if kind == "skip":
            reason = body.strip().strip("()").strip()
            if not reason:
                raise ValueError(f"{block.page}:{block.line}: `docs-test: skip` needs a reason in parentheses")
            block.skip = reason
        elif kind == "requires":
            block.requires += [name.strip() for name in body.split(",") if name.strip()]
        elif kind == "setup":
            block.setup = body.strip("\n") + "\n" + block.setup
        else:
            block.run = True
        tail = tail[:start].rstrip()


FRAMEWORKS = {"tensorflow_recommenders": "tf-keras", "keras": "keras", "tensorflow": "tensorflow",
              "torch": "torch", "jax": "jax"}


def frameworks_of(code: str) -> set[str]:
    """The frameworks a piece of code imports (its import statements, read with ``ast``)."""
    found = set()
    for node in ast.walk(ast.parse(code)):
        names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        for name in names:
            parts = name.split(".")
            top = parts[1] if parts[0] == "recloss" and len(parts) > 1 else parts[0]   # recloss.torch imports torch
            if top in FRAMEWORKS:
                found.add(FRAMEWORKS[top])
    return found


def group_of(blocks: list[Block]) -> str:
    """The process a page's Python blocks run in: one per framework (``numpy`` for none, ``mixed`` for
    several); TensorFlow Recommenders' pages apart (``tf-keras``: they set ``TF_USE_LEGACY_KERAS`` before
    TensorFlow is imported)."""
    runnable = [b for b in blocks if b.language == "python" and b.skip is None]
    frameworks = set().union(*(frameworks_of(b.setup + b.code) for b in runnable)) if runnable else set()
    if "tf-keras" in frameworks:
        return "tf-keras"
    if frameworks == {"keras", "tensorflow"}:
        frameworks = {"keras"}
    return frameworks.pop() if len(frameworks) == 1 else ("numpy" if not frameworks else "mixed")


def required_modules() -> list[str]:
    """Every module named by a ``requires`` marker."""
    return sorted({m for path in pages() for b in extract(path) for m in b.requires})


def python_groups() -> dict[str, list[list[Block]]]:
    """``{group: [the runnable Python blocks of one page, ...]}`` over every page."""
    groups: dict[str, list[list[Block]]] = {}
    for path in pages():
        blocks = extract(path)
        runnable = [b for b in blocks if b.language == "python" and b.skip is None]
        if runnable:
            groups.setdefault(group_of(blocks), []).append(runnable)
    return groups


def run_pages(page_blocks: list[list[dict]]) -> list[dict]:
    """Execute pages of blocks (as dicts); each page in a fresh namespace, stopping at its first failure."""
    results = []
    for blocks in page_blocks:
        namespace: dict = {"__name__": "__main__"}
        failed = False
        for block in blocks:
            where = f"{block['page']}:{block['line']}"
            missing = [m for m in block["requires"] if importlib.util.find_spec(m) is None]
            if failed or missing:
                reason = "an earlier block of the page failed" if failed else f"needs {', '.join(missing)}"
                results.append({"where": where, "status": "skipped", "detail": reason})
                continue
            try:
                if block["setup"]:
                    exec(compile(block["setup"], f"{where} (setup)", "exec"), namespace)  # noqa: S102
                exec(compile(block["code"], where, "exec"), namespace)  # noqa: S102
                results.append({"where": where, "status": "passed", "detail": ""})
            except BaseException:  # noqa: BLE001 - reported, not swallowed
                failed = True
                results.append({"where": where, "status": "failed", "detail": traceback.format_exc(limit=8)})
    return results


def to_json(pages_blocks: list[list[Block]]) -> str:
    return json.dumps([[asdict(block) for block in blocks] for blocks in pages_blocks])


if __name__ == "__main__":
    try:   # triton before TensorFlow, as in tests/conftest.py: the other order aborts the process
        import triton  # noqa: F401
    except ImportError:
        pass
    print(json.dumps(run_pages(json.loads(Path(sys.argv[1]).read_text()))))
