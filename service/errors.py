"""Typed service errors: each knows its HTTP status and JSON `type`, so handlers map them in one place.

No web-stack import here: `rsd upscale` raises and catches these without loading fastapi.
"""


class ServiceError(Exception):
    """Base of every error the API answers with `{"error": {"type": ..., "message": ...}}`."""

    status = 500
    type = "internal_error"

    def __init__(self, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequest(ServiceError):
    status, type = 400, "bad_request"


class Unauthorized(ServiceError):
    status, type = 401, "unauthorized"

    def __init__(self, message: str):
        super().__init__(message, {"WWW-Authenticate": "Bearer"})


class PayloadTooLarge(ServiceError):
    status, type = 413, "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status, type = 415, "unsupported_media_type"


class UndecodableImage(ServiceError):
    status, type = 422, "undecodable_image"


class Overloaded(ServiceError):
    status, type = 429, "overloaded"

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message, {"Retry-After": str(retry_after_s)})


class NotReady(ServiceError):
    status, type = 503, "not_ready"


class Draining(ServiceError):
    status, type = 503, "draining"


class DeadlineExceeded(ServiceError):
    status, type = 504, "deadline_exceeded"


class ClientClosed(ServiceError):
    """The client went away; nobody reads the answer, the status only shows in logs and metrics."""

    status, type = 499, "client_closed_request"


class InferenceFailed(ServiceError):
    status, type = 500, "inference_failed"
