"""Qt widgets of the workbench; they show and command, the engine decides."""
