"""The HTTP service: FastAPI app, dynamic tile batcher and inference backends (torch-free by default)."""
