"""The layers of docs/architecture.md hold: every file of the repository imports
only from its own layer or those below, utils/ never imports the data layer,
and no import cycle exists."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# module (dotted) or package prefix -> layer, as docs/architecture.md draws them
LAYERS = {"modules": 0, "utils": 1, "dataloader": 2, "utils.training": 2, "Trainer": 3,
          "Tester": 4, "tools": 5, "benchmarks": 5, "tests": 6}
ALIASES = {"conftest": "tests.conftest"}   # the tests import their conftest by its bare name


def layer_of(module):
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return LAYERS[".".join(parts[:n])]
    return None   # not the project's


def product_modules():
    """Every Python file of the repository (but CI's virtual environment), by its
    dotted module name."""
    files = [f for f in ROOT.rglob("*.py") if not f.relative_to(ROOT).parts[0].startswith(".")]
    return {".".join(f.relative_to(ROOT).with_suffix("").parts): f for f in files}


def imports_of(path):
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def project_graph():
    modules = product_modules()
    return {name: {target for target in (ALIASES.get(i, i) for i in imports_of(path))
                   if target in modules and target != name}
            for name, path in modules.items()}


def upward_imports(graph):
    return sorted((name, target) for name, targets in graph.items() for target in targets
                  if layer_of(target) > layer_of(name))


def cycles(graph):
    state, found = {}, []

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_every_product_file_has_a_layer():
    assert [name for name in product_modules() if layer_of(name) is None] == []


def test_no_layer_imports_from_a_layer_above_it():
    assert upward_imports(project_graph()) == []


def test_utils_never_import_the_data_layer():
    """The engine (utils/training.py) gets its batches from the model's
    train_dataloader(); the data layer (dataloader.py) sits above utils/."""
    graph = project_graph()
    assert sorted((name, target) for name, targets in graph.items() if name.startswith("utils.")
                  for target in targets if target == "dataloader") == []


def test_no_import_cycles():
    assert cycles(project_graph()) == []


def test_every_folder_is_covered():
    folders = {name.split(".")[0] for name in product_modules()}
    assert {"tests", "tools", "benchmarks", "utils", "modules"} <= folders
    assert "tools.dance.render" in product_modules()


def test_the_checks_catch_an_upward_import_and_a_cycle():
    graph = project_graph()
    graph["utils.metrics"] = graph["utils.metrics"] | {"Trainer"}
    graph["benchmarks.benchmark"] = graph["benchmarks.benchmark"] | {"tests.conftest"}
    assert ("utils.metrics", "Trainer") in upward_imports(graph)
    assert ("benchmarks.benchmark", "tests.conftest") in upward_imports(graph)
    assert cycles(graph)
