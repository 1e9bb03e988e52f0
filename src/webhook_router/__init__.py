"""webhook-router: platform events through RabbitMQ to webhook POSTs, every job recorded."""

__version__ = "0.1.0"
