"""Regenerate the README's config reference from the pydantic models (`make docs`)."""
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.config import reference  # noqa: E402

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- config-ref:start -->", "<!-- config-ref:end -->"


def render(text: str) -> str:
    return re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: f"{START}\n{reference()}\n{END}", text, flags=re.S)


if __name__ == "__main__":
    README.write_text(render(README.read_text()))
