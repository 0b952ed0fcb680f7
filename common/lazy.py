"""Re-exports that load on first use (PEP 562): a package can list its public
names without importing the modules behind them, so that importing one module
of it (a command's parser, for `mpq --help`) loads nothing heavy."""

import importlib


def lazy_getattr(package, exports):
    """A module-level `__getattr__` for `package` serving `exports`
    (name -> module that defines it)."""
    def __getattr__(name):
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)
    return __getattr__
