"""The web page of `metricls serve` (GET /): a self-contained HTML form that calls POST /tag;
with "explain" ticked, each tag lists its evidence (nearest items with it, shared words)."""

from __future__ import annotations

import html


def page(name: str, vector_dim: int | None, max_k: int) -> str:
    """A textarea, k, threshold and a button that calls /tag; no external assets."""
    hint = (f"One JSON array of {vector_dim} numbers per line" if vector_dim
            else "One text per line")
    return (_PAGE.replace("{{NAME}}", html.escape(name))
            .replace("{{HINT}}", html.escape(hint))
            .replace("{{MAXK}}", str(max_k))
            .replace("{{VECTORS}}", "true" if vector_dim else "false"))


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>metricls: {{NAME}}</title>
<style>
body{font:15px/1.4 system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem}
textarea{width:100%;height:9rem;font:inherit;box-sizing:border-box}
form p{display:flex;gap:1rem;align-items:center}
li{margin:.6rem 0}.text{color:#555}.tag{display:inline-block;margin:.15rem .3rem .15rem 0;
padding:.1rem .45rem;border-radius:.8rem;background:#e8eef8}.tag b{font-weight:600}
#status.error{color:#b00}.why{margin:.1rem 0 .4rem 1rem;font-size:13px;color:#333}
.why b{font-weight:600}
</style></head>
<body>
<h1>metricls <small>{{NAME}}</small></h1>
<form id="form" action="tag" method="post">
<label for="texts">{{HINT}}</label>
<textarea id="texts" name="texts" required></textarea>
<p><label>k <input id="k" name="k" type="number" min="1" max="{{MAXK}}" value="5"></label>
<label>threshold <select id="threshold" name="threshold">
<option value="">none (k best)</option><option value="tuned">tuned per label</option>
</select></label>
<label><input id="explain" name="explain" type="checkbox"> explain</label>
<button type="submit">Tag</button></p>
</form>
<p id="status" role="status"></p>
<ol id="out"></ol>
<script>
const VECTORS = {{VECTORS}};
const $ = (id) => document.getElementById(id);
function show(lines, data) {
  $("out").replaceChildren(...data.tags.map((row, i) => {
    const li = document.createElement("li");
    const text = document.createElement("div");
    text.className = "text";
    text.textContent = lines[i].slice(0, 200);
    li.append(text);
    for (const t of row) {
      const tag = document.createElement("span");
      tag.className = "tag";
      const name = document.createElement("b");
      name.textContent = t.label;
      tag.append(name, " " + t.score.toFixed(3));
      li.append(tag);
      if (t.neighbours) li.append(why(t));
    }
    return li;
  }));
}
function why(t) {
  const box = document.createElement("div");
  box.className = "why";
  const head = document.createElement("b");
  head.textContent = t.label;
  const near = t.neighbours.map((n) => n.id + " (" + n.similarity.toFixed(2) + ")");
  box.append(head, ": cosine " + t.similarity.toFixed(3) + ", vote " + t.vote.toFixed(3) +
             "; nearest items with it: " + (near.join(", ") || "none") +
             (t.terms.length ? "; shared words: " + t.terms.join(" ") : ""));
  if (t.description) {
    const d = document.createElement("div");
    d.textContent = t.description.slice(0, 200);
    box.append(d);
  }
  return box;
}
async function tag(event) {
  if (event) event.preventDefault();
  const status = $("status");
  const lines = $("texts").value.split("\\n").filter((s) => s.trim());
  const body = {k: Number($("k").value), threshold: $("threshold").value || null};
  if ($("explain").checked) { body.explain = true; body.threshold = null; }
  try {
    if (VECTORS) body.vectors = lines.map((s) => JSON.parse(s)); else body.texts = lines;
  } catch (err) {
    status.className = "error";
    status.textContent = "each line must be a JSON array of numbers";
    return;
  }
  status.className = "";
  status.textContent = "tagging...";
  try {
    const response = await fetch("tag", {method: "POST", body: JSON.stringify(body),
                                          headers: {"Content-Type": "application/json"}});
    const data = await response.json();
    if (!response.ok) throw new Error(response.status + ": " + data.detail);
    status.textContent = lines.length + " tagged in " + data.took_ms.toFixed(1) + " ms";
    show(lines, data);
  } catch (err) {
    status.className = "error";
    status.textContent = "error " + err.message;
  }
}
$("form").addEventListener("submit", tag);
const params = new URLSearchParams(location.search);
$("explain").checked = params.has("explain");
if (params.get("text")) { $("texts").value = params.get("text"); tag(); }
</script>
</body></html>
"""
