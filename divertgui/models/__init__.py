"""Qt models over the engine's capture store and session events."""
