"""``python -m crossmodal.cli``: the same as the ``crossmodal`` command."""
import sys

from . import main

sys.exit(main())
