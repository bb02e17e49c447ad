"""Foreign checkpoints into this package's Keras models (the seed family's PyTorch ResNet-50s)."""
