"""The HTTP server: Open Inference Protocol v2, dynamic batching, processes."""
