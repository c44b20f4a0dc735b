"""`python -m monitor.cli`: the same as the `driftwatch` command."""

import sys

from monitor.cli.driftwatch import main

sys.exit(main())
