"""The jobs console: web pages under `/console/` where admins see what was sent where,
fix a webhook and retry. `console_app(admin, store, settings)` is mounted by the API."""

from webhook_router.console.app import console_app

__all__ = ["console_app"]
