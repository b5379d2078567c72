"""`python -m fanfold ...` runs the `fanfold` command."""

import sys

from fanfold.graphs.cli import console

sys.exit(console())
