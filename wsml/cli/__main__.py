"""``python -m wsml.cli ...`` (and ``torchrun ... -m wsml.cli train ...``): the ``wsml`` command."""

import sys

from wsml.cli import main

sys.exit(main())
