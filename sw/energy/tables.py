"""The cited per-operation energy tables (sw/energy/tables/*.json), loaded and
checked, and the one interpolation rule that reads them.

Each table is data with its citation: `horowitz45` (arithmetic, SRAM and
DRAM in 45 nm), `eyeriss65` (the 65 nm storage hierarchy normalized to a
16-bit MAC) and `bitfusion45` (synthesized PE energy per cycle). A missing or
malformed table is a UserError naming the file and the field.
"""

import json
import math
import pathlib

from common.errors import UserError

TABLE_DIR = pathlib.Path(__file__).parent / "tables"
TABLE_NAMES = ("horowitz45", "eyeriss65", "bitfusion45")
FORMAT = "mpq-energy-table"
VERSION = 1


def _points(path, table, field):
    points = table.get(field)
    if (not isinstance(points, list) or len(points) < 2
            or not all(isinstance(p, list) and len(p) == 2 for p in points)):
        raise UserError(f"{path}: field `{field}` must be a list of at least two [x, pJ] pairs")
    for x, y in points:
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in (x, y)):
            raise UserError(f"{path}: field `{field}` holds {[x, y]}: both must be positive numbers")
    if [x for x, _ in points] != sorted({x for x, _ in points}):
        raise UserError(f"{path}: field `{field}` must be sorted by strictly increasing x")
    return [(float(x), float(y)) for x, y in points]


def _positive_map(path, table, field, keys):
    values = table.get(field)
    if not isinstance(values, dict):
        raise UserError(f"{path}: field `{field}` is missing or not an object")
    for key in keys:
        value = values.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise UserError(f"{path}: field `{field}.{key}` must be a positive number, got {value!r}")
    return {key: float(values[key]) for key in keys}


def _positive(path, table, field):
    value = table.get(field)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise UserError(f"{path}: field `{field}` must be a positive number, got {value!r}")
    return float(value)


def load_table(name_or_path):
    """A table by name (in sw/energy/tables/) or by path, checked."""
    path = pathlib.Path(name_or_path)
    if path.suffix != ".json":
        path = TABLE_DIR / f"{name_or_path}.json"
    try:
        table = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"energy table {path} not found: the tables ship in {TABLE_DIR} "
                        f"({', '.join(TABLE_NAMES)}); restore it with `git checkout`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"energy table {path} is not readable JSON ({error})") from None
    if not isinstance(table, dict) or table.get("format") != FORMAT:
        raise UserError(f"{path}: not an energy table (field `format` must be {FORMAT!r})")
    if table.get("version") != VERSION:
        raise UserError(f"{path}: version {table.get('version')!r}, this reader knows {VERSION}")
    for field in ("name", "source"):
        if not isinstance(table.get(field), str) or not table[field]:
            raise UserError(f"{path}: field `{field}` must be a non-empty string (the citation)")
    _positive(path, table, "technology_nm")
    name = table["name"]
    if name == "horowitz45":
        _positive(path, table, "supply_v")
        for field in ("integer_add_pj", "integer_multiply_pj", "sram_read_64bit_pj"):
            table[field] = _points(path, table, field)
        table["dram_64bit_pj"] = _positive_map(path, table, "dram_64bit_pj", ("low", "high"))
    elif name == "eyeriss65":
        table["normalized_access"] = _positive_map(
            path, table, "normalized_access", ("register_file", "array", "global_buffer", "dram"))
        _positive(path, table, "access_bits")
    elif name == "bitfusion45":
        table["pe_pj_per_cycle"] = _positive_map(
            path, table, "pe_pj_per_cycle", ("fixed_4x4", "composable_4_2", "fixed_2x2"))
    else:
        raise UserError(f"{path}: unknown table name {name!r} (known: {', '.join(TABLE_NAMES)})")
    table["path"] = str(path)
    return table


def load_tables(directory=None):
    """Every table, by name; from `directory` instead of the shipped ones if given."""
    base = pathlib.Path(directory) if directory else TABLE_DIR
    return {name: load_table(base / f"{name}.json") for name in TABLE_NAMES}


def interpolate(points, x):
    """Piecewise power law through `points` ([(x, y)], increasing x): linear
    in log-log, extended beyond the ends with the slope of the end segment.

    The rule for every size- or width-dependent figure: Horowitz's SRAM
    column (8 KB -> 32 KB -> 1 MB) and his 8- and 32-bit add and multiply."""
    if x <= 0:
        raise ValueError(f"interpolate needs a positive x, got {x}")
    index = 0
    while index < len(points) - 2 and x > points[index + 1][0]:
        index += 1
    (x0, y0), (x1, y1) = points[index], points[index + 1]
    slope = math.log(y1 / y0) / math.log(x1 / x0)
    return y0 * (x / x0) ** slope
