"""Events, ingest (decode → validate → price), budget periods and the pure engine.

Later also the Faust service and the Redis publisher: the only place that knows Kafka and Redis.
"""
