"""`python -m genlab run|sweep|gate|golden|serve|loadtest|params ...`: the `genlab` command."""

import sys

from genlab.ops.cli import main

sys.exit(main())
