"""Argument types for the `mpq` commands: argparse rejects a bad value with
its usage line and exit status 2, naming the option and the rule.

This module is imported when `mpq --help` builds its parsers, so it imports
nothing heavy (no torch, no amaranth).
"""

import argparse


def _number(text, kind, name):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {name}, got {text!r}") from None


def positive_int(text):
    value = _number(text, int, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (1 or more), got {text!r}")
    return value


def nonnegative_int(text):
    value = _number(text, int, "an integer")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return value


def positive_float(text):
    value = _number(text, float, "a positive number")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text!r}")
    return value


def nonnegative_float(text):
    value = _number(text, float, "a number")
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more (finite), got {text!r}")
    return value


def probability(text):
    value = _number(text, float, "a probability")
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text!r}")
    return value


def add_force(parser):
    parser.add_argument("--force", action="store_true",
                        help="replace the output folder even if it holds files this command "
                             "did not write (the current folder, its parents, your home and any "
                             "folder holding an input are refused all the same)")
