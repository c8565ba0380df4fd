"""`python -m plmkit`: the command line (as the `plmkit` script)."""
import sys

from plmkit.cli import main

sys.exit(main())
