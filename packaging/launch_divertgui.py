"""Entry script of the bundled `divertgui` executable (the GUI)."""

import sys

from divertgui.app import main

if __name__ == "__main__":
    sys.exit(main())
