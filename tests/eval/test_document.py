"""Report documents: Markdown and self-contained HTML from the same blocks; loss-curve plots."""

import base64

import pytest
from PIL import Image

from foundry.eval.document import Document
from foundry.eval.report import plot_curves


def test_markdown_and_html_hold_the_same_content(tmp_path):
    png = plot_curves({"train": [(0, 3.0), (10, 2.0), (20, float("nan"))], "val": [(10, 2.5)]}, tmp_path / "p/l.png")
    assert Image.open(png).size == (640, 360)
    doc = Document("Title").heading("Stage <a>").text("x | y").table(["k", "v"], [["a|b", "1"]]).code("cmd --x")
    md_path, html_path = doc.image("p/l.png", "curves").write(tmp_path)
    md = md_path.read_text()
    assert md.startswith("# Title\n") and "## Stage <a>" in md and "| a\\|b | 1 |" in md and "![curves](p/l.png)" in md
    html = html_path.read_text()
    assert "<h2>Stage &lt;a&gt;</h2>" in html and "<td>a|b</td>" in html and "<pre>cmd --x</pre>" in html
    data = html.split("data:image/png;base64,")[1].split('"')[0]
    assert base64.b64decode(data) == png.read_bytes()  # embedded, not linked
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p", "report.html", "report.md"]  # no temporaries left
    with pytest.raises(ValueError, match="2 cells like the header"):
        Document("t").table(["a", "b"], [["only one"]])
