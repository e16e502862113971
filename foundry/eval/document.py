"""A report as a list of blocks, written as Markdown (images linked) and as one self-contained HTML file
(images embedded as data URIs, no scripts, no network).

Usage::

    doc = Document("Pipeline report")
    doc.heading("Evaluation").text("Success rates with Wilson 95% intervals.")
    doc.table(["task", "vla"], [["push", "0.50 [0.30, 0.70] (10/20)"]]).image("plots/success.png", "success")
    doc.code("python experiments/pipeline.py pipeline")
    doc.write("runs/pipeline")      # -> report.md, report.html (image paths relative to that directory)
"""

from __future__ import annotations

import base64
import dataclasses
import html
import os
import tempfile
from pathlib import Path


@dataclasses.dataclass
class Document:
    title: str
    blocks: list[tuple] = dataclasses.field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> Document:
        self.blocks.append(("heading", level, text))
        return self

    def text(self, text: str) -> Document:
        self.blocks.append(("text", text))
        return self

    def code(self, text: str) -> Document:
        self.blocks.append(("code", text))
        return self

    def table(self, header: list[str], rows: list[list[str]]) -> Document:
        if bad := [r for r in rows if len(r) != len(header)]:
            raise ValueError(f"table rows must have {len(header)} cells like the header; got {bad[0]}")
        self.blocks.append(("table", list(header), [list(r) for r in rows]))
        return self

    def image(self, path: str, alt: str) -> Document:
        """`path` relative to the directory the document is written to."""
        self.blocks.append(("image", path, alt))
        return self

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for kind, *args in self.blocks:
            if kind == "heading":
                out += ["#" * args[0] + " " + args[1], ""]
            elif kind == "text":
                out += [args[0], ""]
            elif kind == "code":
                out += ["```", args[0], "```", ""]
            elif kind == "table":
                header, rows = args
                cell = lambda c: str(c).replace("|", "\\|").replace("\n", " ")
                out += ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
                out += ["| " + " | ".join(map(cell, r)) + " |" for r in rows] + [""]
            elif kind == "image":
                out += [f"![{args[1]}]({args[0]})", ""]
        return "\n".join(out)

    def html(self, base_dir: str | Path) -> str:
        """HTML with every image read from `base_dir` / path and embedded."""
        e = html.escape
        body = [f"<h1>{e(self.title)}</h1>"]
        for kind, *args in self.blocks:
            if kind == "heading":
                body.append(f"<h{args[0]}>{e(args[1])}</h{args[0]}>")
            elif kind == "text":
                body.append(f"<p>{e(args[0])}</p>")
            elif kind == "code":
                body.append(f"<pre>{e(args[0])}</pre>")
            elif kind == "table":
                header, rows = args
                head = "".join(f"<th>{e(str(c))}</th>" for c in header)
                trs = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
            elif kind == "image":
                data = base64.b64encode((Path(base_dir) / args[0]).read_bytes()).decode()
                body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{e(args[1])}">'
                            f"<figcaption>{e(args[1])}</figcaption></figure>")  # fmt: skip
        style = (
            "body{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}"
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
            "pre{background:#f5f5f5;padding:1em;overflow-x:auto;white-space:pre-wrap}img{max-width:100%}"
        )
        return (
            f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{e(self.title)}</title>'
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
        )

    def write(self, directory: str | Path, name: str = "report") -> tuple[Path, Path]:
        """Write `name`.md and `name`.html into `directory`, each atomically; returns their paths."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for suffix, text in ((".md", self.markdown()), (".html", self.html(directory))):
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}-", suffix=suffix)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, directory / f"{name}{suffix}")
            paths.append(directory / f"{name}{suffix}")
        return paths[0], paths[1]
