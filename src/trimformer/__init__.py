"""trimformer: compress Transformer models and run them fast on CPUs."""
