"""Service settings: ``SPENDWARDEN_*`` environment variables or a YAML file (``SPENDWARDEN_CONFIG``).

Secrets (the Redis URL, which may hold a password, the Redis password and the Kafka SASL password) are
``SecretStr``: they print as ``**********`` and are registered with the log masker. A secret
may also come from a file (``*_file``), the usual way Kubernetes and Docker mount them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

from spendwarden.exceptions import ConfigError
from spendwarden.logs import register_secret


class Settings(BaseSettings):
    """Every knob of the worker; docs/settings.md lists them with their defaults (a test keeps it complete)."""

    model_config = SettingsConfigDict(env_prefix="SPENDWARDEN_", extra="forbid", validate_default=True)

    kafka_bootstrap: Optional[str] = Field(None, description="host:port[,host:port]; unset: `up` starts an embedded broker")
    redis_url: Optional[SecretStr] = Field(None, description="redis://[user:password@]host:port/db "
                                         "(rediss:// for TLS); unset: `up` starts an embedded Redis")
    redis_password: Optional[SecretStr] = None
    redis_password_file: Optional[Path] = None
    redis_cluster: bool = Field(False, description="the URL names one node of a Redis Cluster (keys are hash-tagged per tenant)")
    redis_ssl_cafile: Optional[Path] = Field(None, description="CA bundle to verify the Redis server (rediss:// only); "
                                             "unset: system CAs")
    redis_ssl_certfile: Optional[Path] = Field(None, description="client certificate for Redis mutual TLS (rediss:// only)")
    redis_ssl_keyfile: Optional[Path] = Field(None, description="key of redis_ssl_certfile, unless the certificate file "
                                              "holds it")

    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="how every Kafka client of the process connects (docs/security.md)")
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    kafka_sasl_username: Optional[str] = None
    kafka_sasl_password: Optional[SecretStr] = None
    kafka_sasl_password_file: Optional[Path] = None
    kafka_ssl_cafile: Optional[Path] = Field(None, description="CA bundle to verify the brokers; unset: system CAs")
    kafka_ssl_certfile: Optional[Path] = Field(None, description="client certificate (mutual TLS)")
    kafka_ssl_keyfile: Optional[Path] = None

    app_id: str = Field("spendwarden", description="Kafka consumer group and changelog topic prefix")
    cost_topic: str = "ai.cost-events"
    dead_letter_topic: str = "spendwarden.dead-letter"
    alerts_topic: str = "spendwarden.alerts"
    decisions_topic: str = "spendwarden.decisions"
    late_topic: str = "spendwarden.late"
    topic_replication_factor: int = Field(1, ge=1, description="replicas of the topics the worker and router create "
                                          "(state changelogs, cross-tenant deltas, the router's); 3 in production")
    partitions: int = Field(4, ge=1, description="partitions of the cost topic (and of the state changelog)")
    traces_topic: Optional[str] = Field(None, description="OTLP trace exports to price into cost events (docs/traces.md), "
                                        "e.g. ai.traces; unset: no traces are read")
    traces_encoding: Literal["otlp_json", "otlp_proto"] = Field("otlp_json", description="how the collector's Kafka "
                                                                "exporter encodes them (otlp_proto needs opentelemetry-proto)")
    traces_mapping: Optional[Path] = Field(None, description="YAML mapping span/resource attributes to tenant, use case "
                                           "and the other cost-event fields; unset: the defaults of docs/traces.md")
    outcomes_topic: Optional[str] = Field(None, description="business outcomes to join to their trace's cost for "
                                          "unit.* rules (docs/traces.md, \"Outcomes in\"), e.g. ai.outcomes; unset: "
                                          "no outcomes topic is read")
    repartition: bool = Field(False, description="producers do not key records by tenant: re-key every record "
                              "by tenant through an internal topic first (one more hop per record)")

    rules_dir: Path = Field(Path("rules"), description="rules directory, reloaded on change, SIGHUP or POST /-/reload")
    rules_topic: Optional[str] = Field(None, description="follow rule sets pushed to this compacted topic "
                                       "(`spendwarden rules push`); the directory is then only the starting set")
    overrides_topic: str = Field("spendwarden.overrides", description="compacted topic of manual overrides "
                                 "(`spendwarden override`); every worker follows it, and creates it when missing")
    overrides_wait_s: float = Field(10.0, ge=0, description="at start, longest wait for the overrides topic to be "
                                    "read before decisions are published")
    pricebook: Optional[Path] = Field(None, description="pricebook YAML; unset: the bundled illustrative one")

    batch_max_records: int = Field(500, ge=1, description="records per processing batch")
    batch_within_s: float = Field(0.05, gt=0, description="longest wait to fill a batch")
    commit_interval_s: float = Field(5.0, gt=0, description="how often processed offsets are committed; the state "
                                     "keys changed since the last commit are checkpointed right before each commit, "
                                     "so a longer interval writes fewer changelog records and re-reads more records "
                                     "after a crash, while Redis steps back to the checkpoint (Faust's "
                                     "broker_commit_interval; docs/service.md)")
    commit_every: int = Field(50_000, ge=1, description="commit (and checkpoint) after this many processed records "
                              "too (of every topic the worker reads), whichever comes first (Faust's "
                              "broker_commit_every)")
    fetch_max_wait_ms: int = Field(10, ge=0, description="broker fetch wait; Faust fixes it at 1500 ms otherwise")
    tick_s: float = Field(1.0, gt=0, description="wall-clock tick: periods end and blocks lift with no traffic")
    heartbeat_ttl_s: float = Field(30.0, gt=0, description="gateways treat decisions as stale after this")
    session_timeout_s: float = Field(10.0, gt=0)
    max_future_skew_s: float = Field(300.0, ge=0)
    max_record_bytes: int = Field(1_048_576, ge=1024)

    store: Literal["memory://", "rocksdb://"] = "memory://"
    data_dir: Path = Field(Path(".spendwarden-data"), description="Faust's local data folder")
    http_host: str = "127.0.0.1"
    http_port: int = Field(6066, ge=0, le=65535, description="/metrics, /healthz, /readyz, POST /-/reload")
    metrics_max_tenants_per_partition: int = Field(250, ge=1, description="tenants of one partition with their own "
                                                   "spend series (first seen first; tenants in the rules' tenants: "
                                                   "always); later ones fold into tenant=\"other\" (docs/metrics.md)")
    metrics_max_models_per_partition: int = Field(50, ge=1, description="models of one partition with their own "
                                                  "spend series; later ones fold into model=\"other\"")
    metrics_max_services_per_partition: int = Field(100, ge=1, description="use cases (the service label) of one "
                                                    "partition with their own spend series; later ones fold into "
                                                    "service=\"other\"")

    routing_file: Optional[Path] = Field(None, description="alert routing YAML (docs/alerts.md): routes, receivers, "
                                         "inhibition; reloaded on change; unset: the router logs alerts only")
    router_app_id: str = Field("spendwarden-router", description="the router's consumer group and topic prefix")
    router_http_port: int = Field(6067, ge=0, le=65535, description="the router's /metrics, /healthz, /readyz")
    router_tick_s: float = Field(1.0, gt=0, description="how often the router looks for due notifications and retries")
    alerts_external_url: str = Field("http://localhost:6067", description="base of links in notifications "
                                     "(externalURL of the webhook body, alert and silence pages of the router)")
    delivery_timeout_s: float = Field(10.0, gt=0, description="one HTTP attempt to a receiver times out after this")
    delivery_max_backoff_s: float = Field(300.0, gt=0, description="longest wait between two attempts to a "
                                          "receiver that is down (exponential backoff with jitter)")

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: Optional[bool] = None

    @field_validator("kafka_bootstrap")
    @classmethod
    def _no_scheme(cls, value: Optional[str]) -> Optional[str]:
        if value and "://" in value:
            return value.split("://", 1)[1]
        return value

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config = os.environ.get("SPENDWARDEN_CONFIG")
        if config:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config))
        return tuple(sources)

    def redis_connection(self) -> tuple[str, Optional[str]]:
        """The Redis URL and password to connect with (password from env, file or the URL)."""
        if self.redis_url is None:
            raise ConfigError("no Redis configured: set SPENDWARDEN_REDIS_URL (or use `spendwarden up`)")
        password = self.redis_password.get_secret_value() if self.redis_password else None
        if password is None and self.redis_password_file is not None:
            try:
                password = self.redis_password_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"cannot read redis_password_file {self.redis_password_file}: {exc.strerror}") from None
        return self.redis_url.get_secret_value(), password


def load_settings(**overrides: Any) -> Settings:
    """Settings from env and file, with secrets registered so no log line can print them."""
    from pydantic import ValidationError

    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"setting {where}: {first['msg']} (env SPENDWARDEN_{where.upper()})") from None
    if settings.kafka_security_protocol.startswith("SASL_") and not settings.kafka_sasl_username:
        raise ConfigError(f"kafka_security_protocol {settings.kafka_security_protocol} needs "
                          "SPENDWARDEN_KAFKA_SASL_USERNAME and a password (…_PASSWORD or …_PASSWORD_FILE)")
    for secret in (settings.redis_url, settings.redis_password, settings.kafka_sasl_password):
        if secret is not None:
            register_secret(secret.get_secret_value())
            _register_url_password(secret.get_secret_value())
    for secret_file in (settings.redis_password_file, settings.kafka_sasl_password_file):
        if secret_file is not None:
            try:
                register_secret(secret_file.read_text().strip())
            except OSError:
                pass  # reported with its path when the secret is used
    return settings


def _register_url_password(url: str) -> None:
    from urllib.parse import urlsplit

    try:
        password = urlsplit(url).password
    except ValueError:
        return
    register_secret(password)
