"""Alert routing and delivery: the router that reads ``spendwarden.alerts``, groups alerts by a
routing tree in the spirit of Alertmanager, and delivers notifications to Slack, webhooks,
PagerDuty and Alertmanager with retries (docs/alerts.md)."""
