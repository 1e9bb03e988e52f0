"""Settings from the environment, prefix `WEBHOOK_ROUTER_`; the README's table lists each."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from webhook_router.durations import parse_duration, parse_schedule
from webhook_router.encryption import parse_key
from webhook_router.topology import Names


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WEBHOOK_ROUTER_", extra="ignore")

    amqp_url: Annotated[list[str], NoDecode] = Field(
        default=["amqp://guest:guest@127.0.0.1:5672/"],
        description="RabbitMQ URL, or several comma-separated (nodes of one cluster).",
    )
    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/webhook_router",
        description="PostgreSQL URL of the webhooks and the job log.",
    )
    namespace: str = Field(
        default="webhook_router", description="Prefix of every exchange and queue."
    )
    delivery_shards: int = Field(
        default=1,
        ge=1,
        description="Delivery queues, spread by webhook over the consistent-hash exchange "
        "(needs its plugin when above 1).",
    )
    ordered_shards: int = Field(
        default=16,
        ge=1,
        description="Queues the keys of ordered webhooks hash over, each held by one worker "
        "at a time; change only with the ordered queues drained (docs/ordering.md).",
    )
    ordered_tick: float = Field(
        default=30.0,
        gt=0,
        description="Seconds between the ticks a worker sends each ordered shard, so that a "
        "shard whose only work waits in the ledger still reaches a holder.",
    )
    engine_url: str = Field(
        default="http://127.0.0.1:8081",
        description="Base URL of the workflow engine, for webhook URLs starting with `/`.",
    )
    run_url_template: str | None = Field(
        default=None,
        description="Page of a run in the workflow engine, `{run}` replaced by the run "
        "number; the console links run numbers to it.",
    )
    trace_url_template: str | None = Field(
        default=None,
        description="Page of a trace in a trace viewer, `{trace}` replaced by the trace id; "
        "the console links each job's trace id to it.",
    )
    tree_source: str = Field(
        default="Kinetic Request CE", description="Source part of run-tree paths."
    )
    api_host: str = Field(default="127.0.0.1", description="Address the API listens on.")
    api_port: int = Field(default=8080, description="Port the API listens on.")
    api_token: Annotated[list[str], NoDecode] = Field(
        default=[],
        description="Bearer tokens the API accepts as admins of every space, comma-separated "
        "(for set-up: `tokens create` makes the others); `up` makes one if empty.",
    )
    default_space: str = Field(
        default="default", description="Space of the API's short paths and of CLI commands."
    )
    log_format: str = Field(
        default="auto", description="`json`, `console`, or `auto` (console on a terminal)."
    )
    log_level: str = Field(
        default="info",
        description="Lowest level logged; unless it is set, one-shot CLI commands (all but "
        "the roles, `up` and `engine`) log only warnings and errors.",
    )
    allowed_networks: Annotated[list[str], NoDecode] = Field(
        default=[],
        description="Networks webhooks may reach although private or loopback "
        "(comma-separated CIDRs); relative webhook URLs always reach the engine.",
    )
    signature_grace: float = Field(
        default=86400.0,
        description="Seconds a rotated-out signing secret keeps signing beside the new one.",
    )
    connect_timeout: float = Field(
        default=5.0, description="Seconds to connect to a webhook's host."
    )
    request_timeout: float = Field(
        default=30.0, description="Seconds for a whole webhook POST, answer included."
    )
    body_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a client has to send the API a request's whole body; a body "
        "shorter than its Content-Length is answered 400 then.",
    )
    response_limit: int = Field(
        default=65536, description="Bytes of a webhook's answer read and stored."
    )
    worker_concurrency: int = Field(
        default=64, description="Deliveries one worker process POSTs at once."
    )
    endpoint_concurrency: int = Field(
        default=16,
        description="POSTs one worker makes at once to one endpoint (scheme, host, port); "
        "more wait in a retry queue without spending an attempt.",
    )
    endpoint_wait: float = Field(
        default=1.0,
        description="Seconds a delivery waits for a free slot of its endpoint (or, under a "
        "rate limit, for its turn) before it is deferred; a rate-limited delivery deferred "
        "waits this long too.",
    )
    circuit_threshold: int = Field(
        default=5,
        description="Failures in a row (no answer or 5xx) that open an endpoint's circuit.",
    )
    circuit_cooldown: float = Field(
        default=30.0, description="Seconds an open circuit defers deliveries before a trial."
    )
    max_message_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024 * 1024,
        description="Most bytes in one message the roles publish, under the broker's "
        "`max_message_size` (RabbitMQ 3.10: 128 MiB); batches close before it, and an event "
        "whose deliveries cannot fit is dead-lettered.",
    )
    router_prefetch: int = Field(default=200, description="Events one router handles at once.")
    direct_handoff: bool = Field(
        default=False,
        description="In a process running the router, the worker and the recorder together "
        "(`up`): each delivery goes to the worker and each outcome to the recorder in memory, "
        "with no broker message between them, and an event is acknowledged once its jobs are "
        "recorded. Jobs show in the log once attempted (or deferred), not when routed.",
    )
    direct_prefetch: int = Field(
        default=1000,
        gt=0,
        description="Events the router of a direct handoff handles at once, in place of "
        "`router_prefetch`: its events wait in hand for the recorder's batch, so it holds two "
        "batches' worth; the worker still POSTs at most `worker_concurrency` of their "
        "deliveries at once, the rest waiting their turn in hand.",
    )
    recorder_batch_size: int = Field(
        default=500, description="Most outcomes the recorder writes in one transaction."
    )
    recorder_batch_wait: float = Field(
        default=0.05, description="Seconds the recorder waits to fill a batch."
    )
    webhook_refresh: float = Field(
        default=5.0,
        description="Seconds between the router's checks for changed webhooks "
        "(changes are also pushed at once by PostgreSQL notifications).",
    )
    retry_schedule: str = Field(
        default="5s,30s,2m,10m,30m,1h,3h,6h,12h,24h",
        description="Waits before each retry of a failed delivery; its length is the "
        "number of retries.",
    )
    disable_after: str = Field(
        default="5d",
        description="A webhook whose jobs have all failed for this long (at least 10 of "
        "them, no success) is disabled, saying why.",
    )
    drain_timeout: float = Field(
        default=25.0, description="Seconds a role has on SIGTERM to finish what it holds."
    )
    encryption_keys: Annotated[list[str], NoDecode] = Field(
        default=[],
        description="Keys sealing signing secrets and credentials in the database, "
        "comma-separated 32-byte base64 keys (`webhook-router secrets new-key`); the first "
        "seals, every one opens. Empty: stored in plaintext, and `up` and `migrate` warn.",
    )
    encrypt_payloads: bool = Field(
        default=False,
        description="Also seal the request and response bodies of jobs (needs "
        "`WEBHOOK_ROUTER_ENCRYPTION_KEYS`); the job log can then not be searched by body.",
    )

    @property
    def names(self) -> Names:
        """Every exchange and queue name under the namespace."""
        return Names(self.namespace, self.delivery_shards, self.ordered_shards)

    @property
    def schedule(self) -> tuple[float, ...]:
        """The retry waits, in seconds."""
        return parse_schedule(self.retry_schedule)

    @property
    def retry_delays(self) -> tuple[float, ...]:
        """Every retry queue's wait: the schedule's, and `endpoint_wait`, which a delivery
        held back by its webhook's rate limit waits (the slots it could take run that far
        ahead, so it comes back as they run out)."""
        return tuple(sorted({*self.schedule, self.endpoint_wait}))

    @property
    def disable_after_seconds(self) -> float:
        return parse_duration(self.disable_after)

    @field_validator("amqp_url", "api_token", "allowed_networks", "encryption_keys", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("retry_schedule")
    @classmethod
    def _valid_schedule(cls, value: str) -> str:
        parse_schedule(value)
        return value

    @field_validator("disable_after")
    @classmethod
    def _valid_duration(cls, value: str) -> str:
        if parse_duration(value) <= 0:
            raise ValueError(f"must be a duration above 0: {value!r}")
        return value

    @field_validator("allowed_networks")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)
        return value

    @field_validator("encryption_keys")
    @classmethod
    def _valid_keys(cls, value: list[str]) -> list[str]:
        for key in value:
            parse_key(key)
        return value

    @model_validator(mode="after")
    def _payloads_need_a_key(self) -> Settings:
        if self.encrypt_payloads and not self.encryption_keys:
            raise ValueError("WEBHOOK_ROUTER_ENCRYPT_PAYLOADS needs WEBHOOK_ROUTER_ENCRYPTION_KEYS")
        return self

    @field_validator("engine_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")


__all__ = ["Settings", "parse_duration", "parse_schedule"]
