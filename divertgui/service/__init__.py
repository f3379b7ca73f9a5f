"""The capture service (`divert serve`): the framed protocol, its transports, peer checks and hardening.

Imports no Qt: it is the only part of divertgui that holds capabilities."""
