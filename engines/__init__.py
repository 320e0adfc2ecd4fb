"""Training / evaluation loops and the two training back ends (native torch, DeepSpeed)."""
