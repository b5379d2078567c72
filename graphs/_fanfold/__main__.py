"""`python -m fanfold ...` runs the `fanfold` command."""

import sys

from fanfold.graphs.cli import main

sys.exit(main())
