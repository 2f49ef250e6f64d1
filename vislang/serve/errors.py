"""Errors as JSON: ``{"error": {"code", "message"}}`` with the right status, never a traceback."""

from __future__ import annotations

from typing import Any

#: The code of each status when the error does not name its own.
STATUS_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
                413: "too_large", 415: "unsupported_media_type", 422: "invalid_field", 503: "busy",
                504: "timeout", 500: "internal"}


class ApiError(Exception):
    """An error answered to the client.

    Args:
        status: HTTP status.
        message: One line for the client.
        code: Machine-readable code (default: the status's, :data:`STATUS_CODES`).
        headers: Extra response headers (``Retry-After``, ``WWW-Authenticate``).
    """

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message = status, message
        self.code = code or STATUS_CODES.get(status, "error")
        self.headers = headers or {}


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def install_handlers(app: Any) -> None:
    """Answer every error of ``app`` as JSON: :class:`ApiError`, Starlette's HTTP errors (404, 405),
    FastAPI's validation errors (422) and, for bugs, 500 with one line (the traceback goes to the log)."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    def respond(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse(error_body(code, message), status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def api_error(request, exc: ApiError):
        return respond(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such path: {request.url.path}"
        return respond(exc.status_code, STATUS_CODES.get(exc.status_code, "error"), message,
                       getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return respond(422, "invalid_field", f"{where or 'request'}: {first.get('msg', 'invalid')}")

    @app.exception_handler(Exception)
    async def internal_error(request, exc: Exception):
        # Starlette re-raises ``exc`` after this answer: the server logs its traceback, the client gets one line
        return respond(500, "internal", f"internal error ({type(exc).__name__}); the server log has the details")
