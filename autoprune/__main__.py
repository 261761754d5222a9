"""``python -m autoprune``: the same as the ``autoprune`` command."""

import sys

from autoprune.cli import main

sys.exit(main())
