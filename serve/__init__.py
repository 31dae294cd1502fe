"""Serving QMask with TorchServe: the archive build, the local server, the management CLI, the bench."""
