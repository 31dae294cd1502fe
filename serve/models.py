"""The two TorchServe models QMask serves, by name. Standard library only: the readiness probe and
the management and rollout tools import it, and `serve.archive` would pull in torch."""

MODEL_NAME = "qmask"  # photos
VIDEO_MODEL_NAME = "qmask-video"  # clips: a worker and a queue of their own
MODEL_NAMES = (MODEL_NAME, VIDEO_MODEL_NAME)
