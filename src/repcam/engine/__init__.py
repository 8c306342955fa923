"""The CAM engine: multi-layer Grad-CAM from one forward and one backward pass, its layers, weightings and map fusion."""
