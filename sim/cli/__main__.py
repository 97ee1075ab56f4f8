"""``python -m sim.cli``: the ``glucotwin`` command."""

import sys

from sim.cli.main import main

sys.exit(main())
