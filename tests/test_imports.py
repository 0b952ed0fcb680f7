"""Dependencies point one way: `common` at the bottom, `hw` and `sw/quantize`
beside each other on it, the rest of `sw` on the hardware's contract, `sim`
on top. Every import statement of every module is read (function-level ones
too), so a forbidden import anywhere fails here."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]

# package (by path prefix) -> top-level packages it may not import. The most
# specific prefix adds to the less specific ones.
FORBIDDEN = {
    "common": {"hw", "sw", "sim", "bench", "tests"},
    "hw": {"sw", "sim", "bench", "tests"},
    "sw": {"sim", "bench", "tests"},
    "sw/quantize": {"hw"},     # training knows nothing of the hardware
    "sim": {"bench", "tests"},
}
# The command-line layer may dispatch to the simulation, lazily (inside the
# function that runs the command), so that `sw` itself never needs `sim`.
LAZY_DISPATCH = {"sim"}


def _is_command_module(relative):
    return relative == "sw/cli.py" or relative.endswith("/commands.py")


def _imports(tree):
    """(top-level package imported, at module level?) for every import."""
    module_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            yield name.split(".")[0], id(node) in module_level


def violations(root):
    """'path:line imports X' for every import against FORBIDDEN."""
    found = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        rules = set()
        for prefix, forbidden in FORBIDDEN.items():
            if relative == prefix or relative.startswith(prefix + "/"):
                rules |= forbidden
        if not rules:
            continue
        tree = ast.parse(path.read_text(), filename=relative)
        for target, at_top in _imports(tree):
            if target not in rules:
                continue
            if target in LAZY_DISPATCH and not at_top and _is_command_module(relative):
                continue
            found.append(f"{relative} imports {target}")
    return found


def test_dependencies_point_one_way():
    assert violations(ROOT) == []


def test_a_forbidden_import_is_found(tmp_path):
    cases = {
        "common/rule.py": "import hw.config\n",
        "hw/block.py": "def f():\n    from sw.compile import encoding\n",
        "sw/quantize/train.py": "from hw.pe import PeMode\n",
        "sw/compile/lower.py": "import sim.runner\n",
        "sw/fpga/commands.py": "import sim.board_sim\n",      # lazy only, not at the top
        "sim/demo.py": "from bench.common import RESULTS\n",
    }
    for relative, source in cases.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    assert sorted(violations(tmp_path)) == sorted([
        "common/rule.py imports hw", "hw/block.py imports sw", "sw/quantize/train.py imports hw",
        "sw/compile/lower.py imports sim", "sw/fpga/commands.py imports sim",
        "sim/demo.py imports bench"])
    (tmp_path / "sw/fpga/commands.py").write_text("def run():\n    import sim.board_sim\n")
    assert "sw/fpga/commands.py imports sim" not in violations(tmp_path)
