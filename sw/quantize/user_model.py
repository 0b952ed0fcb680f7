"""The user's own network: `mpq train --model PATH.py:NAME` (or
`package.module:NAME`).

NAME is a class or a function in that file. It is called with keyword
arguments only, each passed when NAME has a parameter of that name:
`num_classes` (the data set's classes), `in_channels` (the image's channels)
and, when `--width` is not 1, `width`. It must return an `nn.Module` taking
normalised images (a `Normalize` goes in front of it, as for the built-in
networks).

A checkpoint records the canonical spec (the file's absolute path and NAME)
and the file's SHA-256, so that `mpq export`, `mpq eval` and `--resume`
rebuild the same network later from any folder, and say so when the file has
changed since.

Kept free of torch at import time: `mpq train` checks `--model` while it
builds its parser.
"""

import contextlib
import dataclasses
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
import traceback

from common.errors import UserError

# What NAME may take, in the order the docs list them.
ARGUMENTS = ("num_classes", "in_channels", "width")


def is_user_model(name):
    """Whether `--model` names the user's network rather than a built-in one."""
    return ":" in name


@dataclasses.dataclass(frozen=True)
class UserModel:
    spec: str           # canonical: /absolute/file.py:NAME or package.module:NAME
    path: str           # the file that defines NAME (absolute)
    module: str | None  # the module's import name (None: loaded from `path`)
    name: str

    def sha256(self):
        with open(self.path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()


def locate(text):
    """The `UserModel` that `--model text` names; the file must exist (it is
    not imported yet, except a package's parents for a module name)."""
    source, _, name = text.rpartition(":")
    if not source or not name.isidentifier():
        raise UserError(f"--model {text!r}: give PATH.py:NAME or package.module:NAME, NAME being "
                        "a class or function that builds the network")
    if source.endswith(".py") or os.sep in source or "/" in source:
        path = os.path.abspath(os.path.expanduser(source))
        if not os.path.isfile(path):
            raise UserError(f"--model {text}: no file {path}")
        return UserModel(f"{path}:{name}", path, None, name)
    missing = UserError(f"--model {text}: no module {source!r} on the Python path; give its "
                        f"file as PATH.py:{name} instead")
    try:  # imports the parent packages, which is running the user's code
        found = importlib.util.find_spec(source)
    except ModuleNotFoundError:
        raise missing from None
    except Exception as error:  # noqa: BLE001 - anything the user's package raises
        raise UserError(f"--model {text}: importing the parent packages of {source} failed: "
                        f"{_message(error)} (at {_user_frame(error, None)})") from None
    if found is None or not found.origin or not os.path.isfile(found.origin):
        raise missing
    return UserModel(f"{source}:{name}", os.path.abspath(found.origin), source, name)


def _user_frame(error, path):
    """'FILE, line N: `code`' of the deepest frame of `error` in the
    user's file (or in any file when none is theirs)."""
    if isinstance(error, SyntaxError) and error.filename:
        where, line, code = error.filename, error.lineno, (error.text or "").strip()
    else:
        frames = traceback.extract_tb(error.__traceback__)
        theirs = [f for f in frames if os.path.abspath(f.filename) == path] or frames[-1:]
        if not theirs:
            return ""
        where, line, code = theirs[-1].filename, theirs[-1].lineno, (theirs[-1].line or "")
    return f"{where}, line {line}" + (f": `{code}`" if code else "")


def _message(error):
    if isinstance(error, SyntaxError):
        return f"SyntaxError: {error.msg}"
    return f"{type(error).__name__}: {error}"


@contextlib.contextmanager
def _user_code(what, model):
    """Runs the user's code: any exception becomes a one-line UserError
    naming their line."""
    try:
        yield
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - anything the user's code raises
        where = _user_frame(error, model.path)
        raise UserError(f"--model {model.spec}: {what} failed: {_message(error)}"
                        + (f" (at {where})" if where else "")) from None


def _load(model):
    """The callable NAME, importing its file or module."""
    with _user_code("importing the file" if model.module is None else "importing the module",
                    model):
        if model.module is not None:
            module = importlib.import_module(model.module)
        else:
            # One module per file content; its folder on the path for its own imports
            # (`from blocks import Block`); no __pycache__ left in the user's folder.
            digest = hashlib.sha256(f"{model.path}:{model.sha256()}".encode()).hexdigest()
            key = f"mpq_user_model_{digest[:16]}"
            module = sys.modules.get(key)
            if module is None:
                folder = os.path.dirname(model.path)
                if folder not in sys.path:
                    sys.path.insert(0, folder)
                spec = importlib.util.spec_from_file_location(key, model.path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[key] = module
                bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    del sys.modules[key]
                    raise
                finally:
                    sys.dont_write_bytecode = bytecode
    factory = getattr(module, model.name, None)
    if factory is None:
        defined = sorted(k for k, v in vars(module).items()
                         if callable(v) and not k.startswith("_")
                         and getattr(v, "__module__", None) == module.__name__)
        raise UserError(f"--model {model.spec}: {model.path} defines no {model.name!r}"
                        + (f"; it defines {', '.join(defined)}" if defined else ""))
    if not callable(factory):
        raise UserError(f"--model {model.spec}: {model.name} is a {type(factory).__name__}, not a "
                        "class or function that builds the network")
    return factory


def _keywords(factory, model, num_classes, in_channels, width):
    """The keyword arguments NAME is called with (see the module's docstring)."""
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a callable without a signature: call it bare
        parameters = {}
    offered = {"num_classes": num_classes, "in_channels": in_channels}
    if width != 1.0:
        if "width" not in parameters:
            raise UserError(f"--width {width}: {model.name} takes no `width` parameter; leave "
                            "--width out for your own network, or give it a `width` parameter")
        offered["width"] = width
    keywords = {k: v for k, v in offered.items() if k in parameters}
    missing = [name for name, p in parameters.items()
               if p.default is inspect.Parameter.empty and name not in keywords
               and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if missing:
        raise UserError(f"--model {model.spec}: {model.name} needs {', '.join(missing)}, which mpq "
                        f"cannot give (it passes only {', '.join(ARGUMENTS)}); add a function "
                        f"to the file that builds the network, e.g. `def my_net(num_classes=10): "
                        f"return {model.name}(...)`, and give --model ...:my_net")
    return keywords


def build(text, num_classes, in_channels, width=1.0):
    """The user's `nn.Module`, built as the module's docstring says."""
    from torch import nn

    model = locate(text)
    factory = _load(model)
    keywords = _keywords(factory, model, num_classes, in_channels, width)
    with _user_code(f"calling {model.name}({', '.join(f'{k}={v!r}' for k, v in keywords.items())})",
                    model):
        network = factory(**keywords)
    if not isinstance(network, nn.Module):
        raise UserError(f"--model {model.spec}: {model.name}(...) returned a "
                        f"{type(network).__name__}, not a torch nn.Module")
    return network


def check_unchanged(text, sha256):
    """Warn (stderr) when the file a checkpoint was trained from has changed:
    the network is rebuilt from the file as it is now."""
    source = text.rpartition(":")[0]
    if (source.endswith(".py") or "/" in source) and not os.path.isfile(source):
        raise UserError(f"the checkpoint's network is {text}, and {source} is no longer there: "
                        "put the file back (the checkpoint holds the weights, not the code)")
    model = locate(text)
    if sha256 is not None and model.sha256() != sha256:
        print(f"mpq: warning: {model.path} has changed since the checkpoint was written; "
              "rebuilding the network from the file as it is now", file=sys.stderr)
