"""Entry script of the bundled `divertgui` executable (the GUI)."""

import multiprocessing
import sys

from divertgui.app import main

if __name__ == "__main__":
    # Worker processes are this executable started again (launch_divert.py says more).
    multiprocessing.freeze_support()
    sys.exit(main())
