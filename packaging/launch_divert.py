"""Entry script of the bundled `divert` executable (the CLI)."""

import multiprocessing
import sys

from divertgui.cli import main

if __name__ == "__main__":
    # Worker processes (--workers, a capture over workers) are this executable started again:
    # they run multiprocessing's child code instead of the program.
    multiprocessing.freeze_support()
    sys.exit(main())
