"""`python -m lakeflow.cli`."""

from lakeflow.cli import entry

entry()
