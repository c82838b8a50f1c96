#!/usr/bin/env bash
# The layer check: no module of src/ imports a module above it. LAYERS is
# the one place the layer order is written down (docs/architecture.md
# explains it): bottom first, and a module may import only the modules
# listed before it. A module's submodules count as the module
# (src/middleware/retry/mod.rs is `middleware`). Imports are `crate::x`
# paths and the names of `use crate::{x, y::z}`; comments, strings and
# `#[cfg(test)]` items (test modules, inline or in their own files) are
# not looked at. Fails, naming file, line and both modules, for each
# upward import, and for a top-level module of src/ missing from LAYERS.
set -euo pipefail
cd "$(dirname "$0")/.."

LAYERS=(
    clock timer task woken context headers idle drain backoff accept spiffe config runtime path_normalize http1 http2
    request_match
    error outcome telemetry request_head upgrade body svc consul etcd tls client
    resend balance outlier health endpoint health_check discovery middleware upstream forward
    routing stack tcp http_connection transparent server live admin
    registration reload app demo tap_cli
)

exec python3 - "${LAYERS[@]}" <<'PY'
import re
import sys
from pathlib import Path

layers = sys.argv[1:]
rank = {name: i for i, name in enumerate(layers)}
src = Path("src")
roots = {"lib", "main"}  # the crate roots declare modules, they are none

# Comments, strings and char literals, blanked before looking for imports
# (their newlines kept, so line numbers stay right).
NOISE = re.compile(
    r"//[^\n]*"
    r"|/\*.*?\*/"
    r'|b?r(#*)".*?"\1'
    r'|b?"(?:\\.|[^"\\])*"'
    r"|b?'(?:\\.|[^'\\])'",
    re.S,
)
CFG_TEST = re.compile(r"#\[cfg\(test\)\]")
TEST_MOD_FILE = re.compile(r"#\[cfg\(test\)\]\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;")
CRATE_PATH = re.compile(r"(?<![\w$])crate::(\w+)")
CRATE_GROUP = re.compile(r"(?<![\w$])crate::\{")


def blank(text):
    return re.sub(r"[^\n]", " ", text)


def without_test_items(code):
    """`code` with every `#[cfg(test)]` item blanked: up to its `;`, or
    through the block its first `{` opens."""
    out = list(code)
    for attr in CFG_TEST.finditer(code):
        i, depth = attr.end(), 0
        while i < len(code):
            c = code[i]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    break
            elif c == ";" and depth == 0:
                break
            i += 1
        out[attr.start() : i + 1] = blank(code[attr.start() : i + 1])
    return "".join(out)


def group_names(code, start):
    """The top-level names of the `use crate::{...}` group opening at `start`."""
    names, depth, name_start = [], 0, True
    for m in re.finditer(r"[{},]|\w+", code[start:]):
        token = m.group()
        if token == "{":
            depth += 1
            name_start = depth == 1
        elif token == "}":
            depth -= 1
            if depth == 0:
                break
        elif token == ",":
            name_start = depth == 1
        elif name_start:
            names.append((token, start + m.start()))
            name_start = False
    return names


def module_of(path):
    parts = path.relative_to(src).parts
    return parts[0] if len(parts) > 1 else Path(parts[0]).stem


def test_only_files(path, code):
    """Files of the `#[cfg(test)] mod x;` declared in `path`."""
    here = path.parent if path.name == "mod.rs" else path.with_suffix("")
    files = set()
    for m in TEST_MOD_FILE.finditer(code):
        files.add(here / f"{m.group(1)}.rs")
        files.update((here / m.group(1)).rglob("*.rs"))
    return files


problems = []
top_level = {module_of(p) for p in src.iterdir() if p.suffix == ".rs" or p.is_dir()}
for module in sorted(top_level - roots - set(rank)):
    problems.append(f"src/{module}: top-level module missing from LAYERS in scripts/layers.sh")

files = sorted(src.rglob("*.rs"))
codes = {path: NOISE.sub(lambda m: blank(m.group()), path.read_text()) for path in files}
test_files = set().union(*(test_only_files(p, c) for p, c in codes.items()))
for path in files:
    module = module_of(path)
    if module in roots or path in test_files or module not in rank:
        continue
    code = without_test_items(codes[path])
    imports = [(m.group(1), m.start(1)) for m in CRATE_PATH.finditer(code)]
    for group in CRATE_GROUP.finditer(code):
        imports += group_names(code, group.end() - 1)
    for imported, at in sorted(imports, key=lambda i: i[1]):
        if imported in rank and rank[imported] > rank[module]:
            line = code.count("\n", 0, at) + 1
            problems.append(f"{path}:{line}: {module} imports {imported}, a higher layer")

if problems:
    print("\n".join(problems))
    print(f"layers: {len(problems)} problem(s); the order is LAYERS in scripts/layers.sh")
    sys.exit(1)
print(f"layers: {len(files)} files, no upward import")
PY
