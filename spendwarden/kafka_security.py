"""Kafka TLS and SASL from settings, in the two shapes the code needs: Faust's broker
credentials for the worker's app, and keyword arguments for the plain aiokafka clients
(refetch, rules feed and push, `replay kafka://`).

Why one module: every Kafka client of the process must authenticate the same way, so they all
take their options from here; a client built elsewhere would silently connect in plaintext.
"""

from __future__ import annotations

import ssl
from typing import Any, Optional

from spendwarden.exceptions import ConfigError
from spendwarden.settings import Settings


def ssl_context(settings: Settings) -> Optional[ssl.SSLContext]:
    """A verifying TLS context (system CAs, or kafka_ssl_cafile), with a client certificate if given."""
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    try:
        context = ssl.create_default_context(cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None)
        if settings.kafka_ssl_certfile:
            context.load_cert_chain(str(settings.kafka_ssl_certfile),
                                    str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"Kafka TLS files: {exc}") from None
    return context


def sasl_password(settings: Settings) -> Optional[str]:
    if settings.kafka_sasl_password is not None:
        return settings.kafka_sasl_password.get_secret_value()
    if settings.kafka_sasl_password_file is not None:
        try:
            return settings.kafka_sasl_password_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read kafka_sasl_password_file {settings.kafka_sasl_password_file}: "
                              f"{exc.strerror}") from None
    return None


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaConsumer / AIOKafkaProducer / AIOKafkaAdminClient."""
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if protocol.startswith("SASL_"):
        options.update(sasl_mechanism=settings.kafka_sasl_mechanism,
                       sasl_plain_username=settings.kafka_sasl_username,
                       sasl_plain_password=sasl_password(settings))
    return options


def faust_credentials(settings: Settings) -> Any:
    """``broker_credentials`` for faust.App (None for plaintext)."""
    import faust

    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(ssl_context(settings))
    return faust.SASLCredentials(username=settings.kafka_sasl_username, password=sasl_password(settings),
                                 mechanism=settings.kafka_sasl_mechanism, ssl_context=ssl_context(settings))
