"""Imports flow one way: the layer table in BUILD.md ("Layout") against every
import in cmm_jax/ and datasets/, those inside functions included."""

import ast
import os
import re
import shutil
import subprocess
import sys

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


def test_an_install_puts_the_builders_beside_hugging_faces_datasets(tmp_path, monkeypatch):
    """`pip install .` ships the datasets/ folder as `cmm_jax_datasets`, never as
    `datasets`: that is Hugging Face's package, which most users have and which
    the install would overwrite. Installed, cmm_jax finds its builders from any
    folder without importing the other `datasets`."""
    source = tmp_path / "source"
    for package in PACKAGES:
        shutil.copytree(os.path.join(REPO, package), source / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(REPO, name), source / name)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    f"--target={site}", str(source)], check=True, capture_output=True)
    installed = {os.path.relpath(os.path.join(folder, name), site)
                 for folder, _, names in os.walk(site) for name in names if name.endswith(".py")}
    assert installed == {re.sub(r"^datasets/", "cmm_jax_datasets/", path) for path in modules()}

    other = tmp_path / "elsewhere" / "datasets"  # stands for Hugging Face's: importing it fails the run
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("raise ImportError('the other datasets package was imported')\n")
    found = subprocess.run(
        [sys.executable, "-c", "from cmm_jax.data import pipeline; module = pipeline.builder_module('mug'); "
         "print(module.__name__); print(open(module.Builder.SPLIT_FILE).readline())"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": os.pathsep.join([str(other.parent), str(site)])},
        capture_output=True, text=True)
    assert found.returncode == 0, found.stderr
    name, split_title = found.stdout.splitlines()[:2]
    assert name == "cmm_jax_datasets.mug.mug_dataset_builder" and "MUG" in split_title

    from cmm_jax.data import pipeline
    from cmm_jax.errors import UserError

    monkeypatch.setattr(pipeline, "BUILDER_PACKAGES", ("no_such_package",))
    with pytest.raises(UserError, match="cannot find the mug dataset builder"):
        pipeline.builder_module("mug")
