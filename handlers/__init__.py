"""Model-server handlers; each file is packed into a model archive on its own (see serve/archive.py)."""
