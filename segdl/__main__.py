"""`python -m segdl` runs the command line."""

from .cli import entry

entry()
