"""A prediction service: one exported model answering over HTTP, concurrent requests batched.

``app`` builds the FastAPI application around a run's ``model/``, predicting through
``core.artifacts.predict`` (torch alone, no training code); ``inputs`` checks each request's
images as an upload is checked; ``batcher`` gathers the inputs of concurrent requests into one
forward pass. ``python -m core serve`` runs it on uvicorn.
"""
