"""Training-side code: synthetic masks, datasets, the training loop and evaluation."""
