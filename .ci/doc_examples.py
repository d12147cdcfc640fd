#!/usr/bin/env python3
"""Fails when a public item of the crate has no example in its rustdoc.

Reads the rustdoc JSON of the library (`target/doc/topicbus.json`, made by
`.ci/doc.sh`) and walks what a user can reach: the crate root, its public
modules, what they re-export, the inherent methods and associated items
of every public type, and the items of every public trait. An item passes
when its own docs hold a code block (```). Enum variants and struct fields
need none; trait impls (Display, From, ...) are documented by their trait.

Usage: doc_examples.py [path/to/topicbus.json]
"""
import json
import sys

path = sys.argv[1] if len(sys.argv) > 1 else "target/doc/topicbus.json"
with open(path, encoding="utf-8") as f:
    doc = json.load(f)
index = doc["index"]

seen = set()
items = []  # (path, kind, has_example, file, line)


def visit(item_id, prefix):
    key = str(item_id)
    if key in seen or key not in index:
        return
    seen.add(key)
    item = index[key]
    if item.get("crate_id", 0) != 0:
        return  # another crate's item, re-exported
    inner = item["inner"]
    kind = next(iter(inner))
    name = item.get("name")
    here = f"{prefix}::{name}" if name else prefix
    span = item.get("span") or {}
    where = (span.get("filename", "?"), (span.get("begin") or [0])[0])
    has_example = "```" in (item.get("docs") or "")
    if kind == "module":
        for child in inner["module"]["items"]:
            visit(child, here)
    elif kind == "use":
        target = inner["use"].get("id")
        if target is not None:
            visit(target, prefix)
    elif kind in ("struct", "enum", "union", "trait"):
        items.append((here, kind, has_example, *where))
        body = inner[kind]
        if kind == "trait":
            for child in body["items"]:
                visit(child, here)
        for impl_id in body.get("impls", []):
            imp = index.get(str(impl_id), {}).get("inner", {}).get("impl")
            if not imp or imp.get("trait") or imp.get("blanket_impl") or imp.get("is_synthetic"):
                continue
            for child in imp["items"]:
                if index[str(child)].get("visibility") == "public":
                    visit(child, here)
    elif kind in ("function", "constant", "static", "type_alias", "macro", "assoc_const", "assoc_type"):
        items.append((here, kind, has_example, *where))


visit(doc["root"], "")
missing = [i for i in items if not i[2]]
for here, kind, _, file, line in sorted(missing, key=lambda i: (i[3], i[4])):
    print(f"{file}:{line}: {kind} {here.lstrip(':')} has no example")
print(f"{len(items)} public items, {len(items) - len(missing)} with an example")
if not items:
    sys.exit("no items found: has the rustdoc JSON format changed?")
sys.exit(1 if missing else 0)
