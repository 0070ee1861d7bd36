"""The self-contained ``GET /docs`` page: an HTML reference rendered from the OpenAPI document (no CDN, no JS)."""

from __future__ import annotations

import html
import json
from typing import Any

from backend.api.fieldtypes import NUMERIC_STRING_PATTERN


def _num(value: float) -> str:
    """A bound as people write it: 30, 0.01, 9223372036854775807 (not 9.22337e+18)."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _resolve(doc: dict, node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        target: Any = doc
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def _type_text(doc: dict, schema: dict) -> str:
    schema = _resolve(doc, schema)
    if "anyOf" in schema:
        parts = []
        for option in schema["anyOf"]:
            option = _resolve(doc, option)
            if option.get("type") == "string" and option.get("pattern") == NUMERIC_STRING_PATTERN:
                parts.append("numeric string")
            else:
                parts.append(_type_text(doc, option))
        return " | ".join(dict.fromkeys(parts))
    if "const" in schema:
        return json.dumps(schema["const"])
    kind = schema.get("type", "any")
    text = " | ".join(kind) if isinstance(kind, list) else kind
    if "enum" in schema:
        text += " — one of " + ", ".join(json.dumps(v) for v in schema["enum"] if v is not None)
    if "format" in schema:
        text += f" ({schema['format']})"
    return text


def _constraints(schema: dict) -> str:
    found: list[str] = []
    options = [schema] + list(schema.get("anyOf", []))
    for option in options:
        for key, label in (("minimum", "min"), ("maximum", "max"), ("maxLength", "max length")):
            if key in option and f"{label} {_num(option[key])}" not in found:
                found.append(f"{label} {_num(option[key])}")
    return ", ".join(found)


def _schema_table(doc: dict, schema: dict) -> str:
    schema = _resolve(doc, schema)
    props = schema.get("properties") or {}
    if not props:
        return f"<p><code>{html.escape(_type_text(doc, schema))}</code></p>"
    required = set(schema.get("required", []))
    rows = []
    for name, prop in props.items():
        prop = _resolve(doc, prop)
        default = json.dumps(prop["default"]) if "default" in prop else ""
        example = json.dumps(prop["examples"][0]) if prop.get("examples") else ""
        rows.append(
            "<tr>"
            f"<td><code>{html.escape(name)}</code>{' <strong>required</strong>' if name in required else ''}</td>"
            f"<td>{html.escape(_type_text(doc, prop))}</td>"
            f"<td>{html.escape(_constraints(prop))}</td>"
            f"<td><code>{html.escape(default)}</code></td>"
            f"<td><code>{html.escape(example)}</code></td>"
            f"<td>{html.escape(prop.get('description', ''))}</td>"
            "</tr>")
    return ("<table><thead><tr><th>field</th><th>type</th><th>bounds</th><th>default</th><th>example</th>"
            "<th>meaning</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _paragraphs(text: str) -> str:
    out = []
    for block in text.strip().split("\n\n"):
        block = block.strip()
        if block.startswith("### "):
            out.append(f"<h3>{html.escape(block[4:].splitlines()[0])}</h3>")
            rest = "\n".join(block.splitlines()[1:]).strip()
            if rest:
                out.append(f"<p>{html.escape(rest)}</p>")
        elif block.startswith("- "):
            items = "".join(f"<li>{html.escape(item.strip())}</li>" for item in block.split("\n- "))
            out.append(f"<ul>{items.replace('<li>- ', '<li>', 1)}</ul>")
        else:
            out.append(f"<p>{html.escape(block)}</p>")
    return "\n".join(out)


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;
color:#1d1d1f;line-height:1.45}
h1{margin-bottom:.2rem} h2{border-bottom:1px solid #ddd;padding-bottom:.3rem;margin-top:2.5rem}
.op{border:1px solid #ddd;border-radius:6px;padding:.6rem 1rem;margin:1rem 0}
.method{display:inline-block;min-width:3.5rem;font-weight:700;color:#fff;border-radius:4px;padding:.1rem .5rem;
text-align:center;margin-right:.5rem} .get{background:#2b7bb9} .post{background:#2f9e44}
table{border-collapse:collapse;width:100%;font-size:.9rem;margin:.5rem 0} th,td{border:1px solid #e3e3e3;
padding:.3rem .5rem;vertical-align:top;text-align:left} th{background:#f6f6f6} code{background:#f3f3f3;
padding:0 .2rem;border-radius:3px} .muted{color:#666}
"""



def _operations(doc: dict):
    """Every operation of the document: (path, method, operation, its page anchor, path-level parameters)."""
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            anchor = f"{method}-{path}".replace("/", "-").replace("{", "").replace("}", "")
            yield path, method, op, anchor, item.get("parameters", [])

def render_html(doc: dict) -> str:
    """A self-contained HTML reference of the document: routes, fields, types, defaults, errors."""
    info = doc["info"]
    parts = [
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">",
        f"<title>{html.escape(info['title'])} API reference</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(info['title'])} API</h1>",
        f"<p class=\"muted\">version {html.escape(info['version'])} · OpenAPI {html.escape(doc['openapi'])} · "
        "machine-readable document: <a href=\"openapi.json\"><code>/openapi.json</code></a></p>",
        _paragraphs(info.get("description", "")),
        "<h2>Routes</h2><ul>",
    ]
    for path, method, op, anchor, _ in _operations(doc):
        parts.append(f"<li><a href=\"#{html.escape(anchor)}\"><code>{method.upper()} {html.escape(path)}</code></a>"
                     f" — {html.escape(op.get('summary', ''))}</li>")
    parts.append("</ul>")
    for path, method, op, anchor, shared_params in _operations(doc):
        parts.append(f"<div class=\"op\" id=\"{html.escape(anchor)}\"><h3><span class=\"method {method}\">"
                     f"{method.upper()}</span><code>{html.escape(path)}</code></h3>")
        parts.append(f"<p><strong>{html.escape(op.get('summary', ''))}</strong></p>")
        if op.get("description"):
            parts.append(f"<p>{html.escape(op['description'])}</p>")
        params = [_resolve(doc, p) for p in shared_params + op.get("parameters", [])]
        if params:
            parts.append("<h4>Parameters</h4><ul>")
            for p in params:
                parts.append(f"<li><code>{html.escape(p['name'])}</code> (in {p['in']}): "
                             f"{html.escape(p.get('description', ''))}</li>")
            parts.append("</ul>")
        body = op.get("requestBody")
        if body:
            for media, content in body["content"].items():
                schema = _resolve(doc, content["schema"])
                parts.append(f"<h4>Request body (<code>{html.escape(media)}</code>)</h4>")
                parts.append(_schema_table(doc, schema))
                if schema.get("examples"):
                    parts.append("<p>Example:</p><pre><code>"
                                 f"{html.escape(json.dumps(schema['examples'][0], indent=2))}</code></pre>")
        parts.append("<h4>Responses</h4>")
        for status, response in op["responses"].items():
            response = _resolve(doc, response)
            parts.append(f"<p><strong>{html.escape(status)}</strong> — {html.escape(response['description'])}</p>")
            for media, content in (response.get("content") or {}).items():
                ref = content["schema"].get("$ref", "")
                if ref.endswith("/Error") and status != "200":
                    parts.append("<p class=\"muted\"><code>{\"error\": \"…\", \"code\": \"…\"}</code></p>")
                elif media == "application/json":
                    parts.append(_schema_table(doc, content["schema"]))
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)
