"""Every "METHOD.md §N" the pack cites resolves inside the pack: the file exists and has section N."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CITATION = re.compile(r"([\w/]+\.md)((?:,? (?:and )?§\d+)+)")


def citations(root: Path = REPO):
    """(file, cited document, section numbers) for every citation in the pack's code and docs."""
    skip = {".git", "results", "node_modules", "__pycache__"}
    for path in sorted(root.rglob("*")):
        if path.suffix not in {".py", ".md"} or skip & set(path.relative_to(root).parts):
            continue
        for document, sections in CITATION.findall(path.read_text(encoding="utf-8", errors="replace")):
            yield path, document, [int(n) for n in re.findall(r"\d+", sections)]


def resolve(document: str, root: Path = REPO) -> Path | None:
    """The cited document inside the pack: as written, or under docs/."""
    for candidate in (root / document, root / "docs" / document, root / "docs" / Path(document).name):
        if candidate.is_file():
            return candidate
    return None


def test_the_core_cites_the_method_page():
    cited = {(p.relative_to(REPO).as_posix(), d) for p, d, _ in citations()}
    assert ("eye_core/rearrange.py", "docs/METHOD.md") in cited


def test_every_citation_resolves_inside_the_pack():
    problems = []
    for path, document, sections in citations():
        target = resolve(document)
        if target is None:
            problems.append(f"{path.relative_to(REPO)} cites {document}, which the pack does not contain")
            continue
        headings = set(re.findall(r"^#+ (\d+)\.", target.read_text(encoding="utf-8"), flags=re.M))
        problems += [f"{path.relative_to(REPO)} cites {document} §{n}, which has no section {n}"
                     for n in sections if str(n) not in headings]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("text, found", [("see METHOD.md §3 and §8", False), ("docs/METHOD.md §4", True)])
def test_the_check_would_catch_a_dangling_citation(tmp_path, text, found):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "METHOD.md").write_text("## 4. AdaIN\n")
    (tmp_path / "module.py").write_text(f'"""{text}"""\n')
    [(_, document, sections)] = list(citations(tmp_path))
    target = resolve(document, tmp_path)
    ok = target is not None and all(f"## {n}." in target.read_text() for n in sections)
    assert ok is found
