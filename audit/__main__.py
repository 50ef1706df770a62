"""`python -m audit ...`: the same command as the `audit` script."""

import sys

from audit.cli import main

sys.exit(main())
