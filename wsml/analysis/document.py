"""A tiny document model rendered as Markdown (PNG files beside it) or self-contained HTML (base64 PNGs)."""

from __future__ import annotations

import base64
import html
import math
import shutil
from pathlib import Path
from typing import Any

from wsml._types import PathLike


def fmt(value: Any, digits: int = 2) -> str:
    """A table cell: numbers rounded, NaN/None as '–'."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


class Document:
    """Ordered blocks: ("h", level, text), ("p", text), ("table", header, rows), ("img", path, caption)."""

    def __init__(self, title: str):
        self.title = title
        self.blocks: list[tuple] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("h", level, text))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, header: list[str], rows: list[list[Any]]) -> None:
        self.blocks.append(("table", header, [[fmt(v) for v in r] for r in rows]))

    def image(self, path: PathLike, caption: str = "") -> None:
        self.blocks.append(("img", Path(path), caption))

    def write(self, out: PathLike) -> Path:
        """Write ``out``: ``.html`` → one self-contained file; anything else → Markdown with PNGs beside it."""
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() in (".html", ".htm"):
            out.write_text(self._html(), encoding="utf-8")
        else:
            out.write_text(self._markdown(out), encoding="utf-8")
        return out

    def _markdown(self, out: Path) -> str:
        lines = [f"# {self.title}", ""]
        asset_dir = out.parent / (out.stem + "_files")
        for b in self.blocks:
            if b[0] == "h":
                lines += ["#" * b[1] + " " + b[2], ""]
            elif b[0] == "p":
                lines += [b[1], ""]
            elif b[0] == "table":
                header, rows = b[1], b[2]
                lines.append("| " + " | ".join(header) + " |")
                lines.append("|" + "|".join("---" for _ in header) + "|")
                lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
                lines.append("")
            elif b[0] == "img":
                src: Path = b[1]
                asset_dir.mkdir(exist_ok=True)
                dst = asset_dir / src.name
                i = 1
                while dst.exists() and dst.resolve() != src.resolve():
                    dst = asset_dir / f"{src.stem}_{i}{src.suffix}"
                    i += 1
                if dst.resolve() != src.resolve():
                    shutil.copyfile(src, dst)
                lines += [f"![{b[2]}]({asset_dir.name}/{dst.name})", ""]
                if b[2]:
                    lines += [f"*{b[2]}*", ""]
        return "\n".join(lines)

    def _html(self) -> str:
        e = html.escape
        parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'>", f"<title>{e(self.title)}</title>",
                 "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
                 "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}th{background:#eee}"
                 "figure{margin:10px 0}figcaption{font-size:90%;color:#444}</style></head><body>",
                 f"<h1>{e(self.title)}</h1>"]
        for b in self.blocks:
            if b[0] == "h":
                parts.append(f"<h{b[1] + 0}>{e(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                parts.append(f"<p>{e(b[1])}</p>")
            elif b[0] == "table":
                parts.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in b[1]) + "</tr>")
                parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in b[2]]
                parts.append("</table>")
            elif b[0] == "img":
                data = base64.b64encode(b[1].read_bytes()).decode("ascii")
                parts.append(f"<figure><img src='data:image/png;base64,{data}' alt='{e(b[2])}'>"
                             f"<figcaption>{e(b[2])}</figcaption></figure>")
        parts.append("</body></html>")
        return "\n".join(parts)
