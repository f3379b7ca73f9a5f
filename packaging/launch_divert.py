"""Entry script of the bundled `divert` executable (the CLI)."""

import sys

from divertgui.cli import main

if __name__ == "__main__":
    sys.exit(main())
