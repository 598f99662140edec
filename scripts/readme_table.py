"""Replace the text between two markers of README.md: how benchmark scripts record their latest table."""

from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def write_section(name: str, text: str, readme: Path = README) -> None:
    """Put ``text`` between ``<!-- name:start -->`` and ``<!-- name:end -->`` (appended if absent)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    content = readme.read_text()
    block = f"{start}\n{text.strip()}\n{end}"
    if start in content and end in content:
        before, rest = content.split(start, 1)
        content = before + block + rest.split(end, 1)[1]
    else:
        content = content.rstrip() + "\n\n" + block + "\n"
    readme.write_text(content)
