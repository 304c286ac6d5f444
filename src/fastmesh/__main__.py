"""`python -m fastmesh`: the same command line as the `fastmesh` script."""

import sys

from fastmesh.cli import main

if __name__ == "__main__":
    sys.exit(main())
