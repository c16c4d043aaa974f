"""Trained models: weights as safetensors, model bundles, loading, prediction, ONNX."""
