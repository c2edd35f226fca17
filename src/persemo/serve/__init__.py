"""The web service and its page: ``persemo serve``.

``create_app(recogniser_or_path, settings)`` builds the FastAPI app (tests use it without a server);
``run(model, settings)`` serves it with uvicorn. The live-stream protocol is described in ``stream.py``,
voice activity detection in ``vad.py``. Needs the ``serve`` extra (fastapi, uvicorn, python-multipart,
silero-vad, onnxruntime).
"""

from .app import ApiError, Settings, create_app, load_recogniser, run

__all__ = ["ApiError", "Settings", "create_app", "load_recogniser", "run"]
