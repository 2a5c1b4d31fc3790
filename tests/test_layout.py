"""The shape of the tree (README: Files): the paper's files and the recipes at the top, everything else in
folders; every script answers --help the way the README runs it; no script imports another, no import
circle, no function over 60 lines; the recipe table of docs/recipe.md is the recipes in the code."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import finetune
import pretrain

PROJECT = Path(__file__).resolve().parent.parent
FOLDERS = ("demo", "pictures", "tools", "weights")
TOP_LEVEL = {"tokenizer.py", "sampler.py", "vit.py", "adamae.py", "data.py", "pretrain.py", "finetune.py",
             "engine.py", "classifier.py", "augment.py", "metrics.py"}
# How the README runs each script: the recipes from the top, everything else as a module of its folder.
SCRIPTS = {"pretrain.py": [sys.executable, "pretrain.py"], "finetune.py": [sys.executable, "finetune.py"]}


def project_files(with_tests=False):
    """Every .py file of the project: the top level and its folders (and tests/ when asked)."""
    folders = FOLDERS + (("tests",) if with_tests else ())
    return sorted(PROJECT.glob("*.py")) + sorted(p for f in folders for p in (PROJECT / f).rglob("*.py"))


def module_name(path):
    return ".".join(path.relative_to(PROJECT).with_suffix("").parts)


def is_script(path):
    return 'if __name__ == "__main__":' in path.read_text()


def imports(path):
    """The project modules `path` imports (names as `module_name` gives them)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}  # from tools import bench
    known = {module_name(p) for p in project_files()}
    return {name for name in names if name in known}


def all_scripts():
    scripts = [p for p in project_files() if is_script(p)]
    return {str(p.relative_to(PROJECT)): SCRIPTS.get(p.name) if p.parent == PROJECT else
            [sys.executable, "-m", module_name(p)] for p in scripts}


def test_top_level_holds_the_paper_the_recipes_and_four_modules_everything_else_is_in_folders():
    assert {p.name for p in PROJECT.glob("*.py")} == TOP_LEVEL
    assert {p.name for p in (PROJECT / "tools").glob("*.py")} >= {"bench.py", "visualize.py", "features.py",
                                                                   "probe.py", "predict.py"}
    assert all(is_script(PROJECT / name) for name in ("pretrain.py", "finetune.py"))
    assert not any(is_script(PROJECT / name) for name in TOP_LEVEL - {"pretrain.py", "finetune.py"})


def test_every_script_answers_help_as_the_readme_runs_it():
    scripts = all_scripts()
    assert len(scripts) >= 8, scripts
    runs = {name: subprocess.Popen([*command, "--help"], cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True) for name, command in scripts.items()}
    for name, run in runs.items():
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0 and "usage:" in out, (name, err[-2000:])


def test_no_script_imports_another_script_and_no_import_circle():
    files = {module_name(p): p for p in project_files()}
    graph = {name: imports(path) for name, path in files.items()}
    scripts = {name for name, path in files.items() if is_script(path)}
    offenders = {name: sorted(graph[name] & scripts) for name in graph if graph[name] & scripts}
    assert not offenders, f"scripts imported by other files: {offenders}"

    def visit(name, path):
        assert name not in path, f"import circle: {' -> '.join(path[path.index(name):] + [name])}"
        for dependency in graph[name]:
            visit(dependency, path + [name])

    for name in graph:
        visit(name, [])


def test_no_function_is_longer_than_60_lines():
    long = [f"{path.relative_to(PROJECT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in project_files(with_tests=True) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60]
    assert not long, long


def recipe_table(doc, heading):
    """{option: {recipe: value text}} from the table under `heading` in a markdown file."""
    text = (PROJECT / "docs" / doc).read_text()
    section = text.split(heading, 1)[1].split("\n#", 1)[0]
    rows = [line.strip().strip("|").split("|") for line in section.splitlines() if line.startswith("| `")]
    header = next(line for line in section.splitlines() if line.startswith("| option"))
    names = [cell.strip() for cell in header.strip().strip("|").split("|")][1:]
    return {cells[0].strip().strip("`"): dict(zip(names, (c.strip().strip("`") for c in cells[1:]))) for cells in rows}


@pytest.mark.parametrize("module, heading", [(pretrain, "## Pre-training recipes"), (finetune, "## Fine-tuning recipes")])
def test_the_recipe_tables_in_the_docs_are_the_recipes_in_the_code(module, heading):
    table = recipe_table("recipe.md", heading)
    fields = list(vars(next(iter(module.RECIPES.values()))))
    assert list(table) == fields, "docs/recipe.md lists other options than the Recipe dataclass"
    for option, row in table.items():
        assert set(row) == set(module.RECIPES), option
        for name, recipe in module.RECIPES.items():
            assert row[name] == shown(getattr(recipe, option)), (option, name)


def shown(value):
    """How docs/recipe.md writes a recipe's value: as Python prints it, strings without quotes, '' when empty."""
    return (value or "''") if isinstance(value, str) else repr(value)


def test_every_file_line_of_the_readme_shows_the_code_it_quotes():
    """README's Paper -> code table points at lines, `file.py:N` followed by the code quoted from that line."""
    readme = (PROJECT / "README.md").read_text()
    references = re.findall(r"`([\w/]+\.py):(\d+)` `([^`]+)`", readme)
    assert len(references) >= 12
    for path, line, code in references:
        text = (PROJECT / path).read_text().splitlines()[int(line) - 1]
        assert code in text, f"README: {path}:{line} is `{text.strip()}`, not `{code}`"


def test_the_readme_is_short_and_links_every_doc():
    readme = (PROJECT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for doc in (PROJECT / "docs").glob("*.md"):
        assert f"(docs/{doc.name})" in readme, doc.name
