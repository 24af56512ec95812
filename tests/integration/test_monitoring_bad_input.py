"""Bad input to the monitoring role (through site.yml, as an operator runs it)
fails with a clear message before anything on the host changes: the rules and
the configurations are checked by promtool and amtool on the controller, in
site.yml's first play."""

import pytest

BROKEN_RULE = [
    {
        "name": "operator",
        "rules": [{"alert": "Broken", "expr": "sum(rate(http_requests_total[5m]) >", "for": "1m"}],
    }
]

CASES = {
    "an alert rule that does not parse": (
        {"monitoring_alert_rules_extra": BROKEN_RULE},
        "promtool refuses the rules or prometheus.yml",
    ),
    "a receiver without its secret": (
        # The vault's routing key left empty.
        {"ytempire_pagerduty_routing_key": ""},
        "pagerduty the Events v2 routing key (ytempire_pagerduty_routing_key) - missing",
    ),
    "a Slack webhook that is not a URL": (
        {"monitoring_alert_slack_webhook_url": "hooks.slack.com/services/T0"},
        "slack the webhook URL (ytempire_slack_webhook_url) - missing",
    ),
    "a scrape target that is not host:port": (
        {
            "monitoring_scrape_extra": [
                {"job": "gpu-box", "targets": ["http://10.0.0.5:9100/metrics"]}
            ]
        },
        'gpu-box has the targets ["http://10.0.0.5:9100/metrics"]',
    ),
    "a scrape target without a port": (
        {"monitoring_scrape_extra": [{"job": "gpu-box", "targets": ["10.0.0.5"]}]},
        'gpu-box has the targets ["10.0.0.5"]',
    ),
    "monitoring on every address": (
        {"monitoring_listen_address": "0.0.0.0"},  # noqa: S104  the bad input under test
        "monitoring_listen_address must be a loopback address (it is 0.0.0.0",
    ),
    "an e-mail receiver without a smarthost": (
        {
            "monitoring_alert_receivers": ["slack", "email"],
            "monitoring_alert_email_to": "ops@example.com",
        },
        "email monitoring_alert_email_to, monitoring_alert_email_smarthost (host:port)",
    ),
}


@pytest.mark.docker
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_refused_before_change(refusals, case):
    refusals.assert_refused(case, CASES[case][1])
