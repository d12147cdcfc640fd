#!/usr/bin/env python3
"""The declared MSRV (`rust-version` in Cargo.toml) is not below what the
crate's own dependencies declare: walks the resolved graph from topicbus
through normal and build dependencies (every feature on, Linux, not the
loom-only ones) and fails if any needs a newer Rust than we claim. Only the
one toolchain is installable here, so this is the MSRV check CI can run:
it catches a claim the dependency graph already contradicts."""
import json
import subprocess
import sys

meta = json.loads(subprocess.check_output([
    "cargo", "metadata", "--format-version", "1", "--all-features",
    "--filter-platform", "x86_64-unknown-linux-gnu",
]))
packages = {p["id"]: p for p in meta["packages"]}
nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
root = next(p for p in meta["packages"] if p["name"] == "topicbus")

def version(v):
    return tuple(int(x) for x in v.split(".")[:3]) + (0,) * (3 - len(v.split(".")[:3]))

claimed = version(root["rust_version"])
seen, stack, worst = set(), [root["id"]], []
while stack:
    pid = stack.pop()
    if pid in seen:
        continue
    seen.add(pid)
    for dep in nodes[pid]["deps"]:
        kinds = [k for k in dep["dep_kinds"]
                 if k["kind"] in (None, "build") and k.get("target") != "cfg(topicbus_loom)"]
        if kinds:
            stack.append(dep["pkg"])
    p = packages[pid]
    if pid != root["id"] and p.get("rust_version") and version(p["rust_version"]) > claimed:
        worst.append(f'{p["name"]} {p["version"]} needs Rust {p["rust_version"]}')

if worst:
    print(f'rust-version {root["rust_version"]} is below what dependencies need:')
    print("\n".join(sorted(worst)))
    sys.exit(1)
print(f'rust-version {root["rust_version"]}: no dependency (of {len(seen) - 1}) needs more')
