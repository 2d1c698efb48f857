"""Imports flow one way: the layer table in BUILD.md ("Layout") against every
import in cmm_jax/ and datasets/, those inside functions included."""

import ast
import os
import re

import pytest

from conftest import REPO

PACKAGES = ("cmm_jax", "datasets")
TABLE_LINE = re.compile(r"^(?P<layer>[a-z_]+)?\s+(?P<path>[\w/]+\.py)(\s|$)")


def layer_table() -> dict[str, tuple[int, str]]:
    """{path: (depth, layer)} from the first code block of BUILD.md's "## Layout",
    layers listed top (depth 0) to bottom."""
    with open(os.path.join(REPO, "BUILD.md")) as f:
        text = f.read()
    section = text[text.index("\n## Layout\n"):]
    block = section[section.index("```") + 3:]
    block = block[block.index("\n") + 1:block.index("```")]
    table, layers = {}, []
    for number, line in enumerate(block.splitlines(), 1):
        if not line.strip():
            continue
        match = TABLE_LINE.match(line)
        assert match, f"BUILD.md Layout, line {number} of the table is not '[layer] path role': {line!r}"
        if match["layer"]:
            assert match["layer"] not in layers, f"BUILD.md Layout: layer {match['layer']} is listed twice"
            layers.append(match["layer"])
        assert layers, "BUILD.md Layout: the table must start with a layer name"
        assert match["path"] not in table, f"BUILD.md Layout: {match['path']} is listed twice"
        table[match["path"]] = (len(layers) - 1, layers[-1])
    return table


def modules() -> list[str]:
    """Every .py file of the packages, as a path from the repository root."""
    found = []
    for package in PACKAGES:
        for folder, _, names in os.walk(os.path.join(REPO, package)):
            found += [os.path.relpath(os.path.join(folder, n), REPO) for n in names if n.endswith(".py")]
    return sorted(found)


def _resolve(dotted: str) -> str | None:
    """A dotted module name -> its file, or None when it is not one of ours."""
    base = os.path.join(*dotted.split("."))
    for path in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(os.path.join(REPO, path)):
            return path
    return None


def imports(path: str) -> list[tuple[str, int, bool]]:
    """(imported file, line, at module level) for every import of our modules in `path`."""
    with open(os.path.join(REPO, path)) as f:
        tree = ast.parse(f.read(), path)
    top_level = {id(node) for node in tree.body}
    top_level |= {id(n) for node in tree.body if isinstance(node, (ast.Try, ast.If)) for n in ast.walk(node)}
    package = os.path.dirname(path).replace(os.sep, ".")
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            origin = node.module or ""
            if node.level:
                origin = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [origin]).strip(".")
            names = [f"{origin}.{alias.name}" if _resolve(f"{origin}.{alias.name}") else origin for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGES and (target := _resolve(name)):
                found.append((target, node.lineno, id(node) in top_level))
    return found


def _listed(path: str, table) -> bool:
    return path in table or (os.path.basename(path) == "__init__.py" and not imports(path))


def test_every_module_has_a_layer():
    table = layer_table()
    unlisted = [p for p in modules() if not _listed(p, table)]
    missing = [p for p in table if not os.path.isfile(os.path.join(REPO, p))]
    if unlisted or missing:
        pytest.fail(f"modules without a layer in BUILD.md's Layout table: {', '.join(unlisted) or '-'}; "
                    f"listed there but missing: {', '.join(missing) or '-'}", pytrace=False)


def test_imports_run_down_the_layers():
    table = layer_table()
    against = []
    for path in modules():
        if path not in table:
            continue
        depth, layer = table[path]
        for target, line, _ in imports(path):
            if target in table and table[target][0] < depth:
                against.append(f"  {path}:{line} ({layer}) imports {target} ({table[target][1]}), a layer above it")
    if against:
        pytest.fail("imports against the layer order of BUILD.md (a module imports only from its own layer and "
                    "the layers below it):\n" + "\n".join(against), pytrace=False)


def test_no_import_circle():
    graph = {path: sorted({target for target, _, _ in imports(path) if target != path}) for path in modules()}
    circles, state, stack = [], {}, []

    def visit(path):
        state[path] = "open"
        stack.append(path)
        for target in graph.get(path, []):
            if state.get(target) == "open":
                circles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target)
        stack.pop()
        state[path] = "done"

    for path in graph:
        if path not in state:
            visit(path)
    if circles:
        pytest.fail("import circles:\n" + "\n".join(f"  {c}" for c in circles), pytrace=False)


def test_every_import_of_our_modules_is_at_the_top():
    hidden = [f"  {path}:{line} imports {target}" for path in modules()
              for target, line, top in imports(path) if not top]
    if hidden:
        pytest.fail("imports of cmm_jax/datasets modules inside functions or classes:\n" + "\n".join(hidden),
                    pytrace=False)
