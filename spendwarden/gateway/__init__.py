"""What a gateway needs to ask spendwarden before an LLM call (docs/redis.md, "Gateway client").

Imports only redis-py and the standard library, so ``spendwarden/gateway/`` can be vendored or
installed alone (the LiteLLM plugin beside it is the exception and is not imported here).
"""

from .client import AsyncGatewayClient, GatewayClient, GatewayStats
from .verdicts import Verdict, decide, normalise_tier, verdict_fields

__all__ = ["AsyncGatewayClient", "GatewayClient", "GatewayStats", "Verdict", "decide", "normalise_tier",
           "verdict_fields"]
