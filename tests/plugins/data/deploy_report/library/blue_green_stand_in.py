#!/usr/bin/python
# SPDX-License-Identifier: MIT
"""A stand-in for the blue_green module in deploy_report's tests: it changes nothing and
returns the `deploy` dictionary of blue_green's contract, succeeded or failed as told."""

from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule

FAILED_RESULTS = ("failed", "reverted", "refused")


def deploy_of(params: dict) -> dict:
    """The contract's deploy dictionary for a deploy (or rollback) ending in params' result."""
    switched = params["result"] in ("succeeded", "reverted")
    steps = [
        {
            "name": "lock",
            "seconds": 0.01,
            "changed": False,
            "detail": "took /run/ytempire/deploy.lock",
        },
        {"name": "pull", "seconds": 12.3, "changed": True, "detail": params["image"]},
        {"name": "health", "seconds": 27.05, "changed": False, "detail": params["health"]},
    ]
    if switched:
        steps.append({"name": "switch", "seconds": 0.8, "changed": True, "detail": "upstream"})
    deploy = {
        "action": params["action"],
        "result": params["result"],
        "from_color": "blue",
        "to_color": "green",
        "image": params["image"],
        "image_id": "sha256:4c1e6f0d2b",
        "previous_image": "localhost:5000/ytempire/ytvideo:1.3",
        "started": "2026-12-02T02:31:00Z",
        "duration_seconds": 41.2,
        "switch_seconds": 0.8 if switched else None,
        "steps": steps,
        "record": "/var/lib/ytempire/deploys/20261202T023100Z-deploy.json",
    }
    if params["message"]:
        deploy["message"] = params["message"]
    return deploy


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "action": {"type": "str", "default": "deploy"},
            "result": {"type": "str", "default": "succeeded"},
            "image": {"type": "str", "default": "localhost:5000/ytempire/ytvideo:1.4"},
            "health": {"type": "str", "default": "green answered /health"},
            "message": {"type": "str", "default": ""},
        },
        supports_check_mode=True,
    )
    deploy = deploy_of(module.params)
    if deploy["result"] in FAILED_RESULTS:
        module.fail_json(
            msg=f"the deploy {deploy['result']}: {module.params['message']}", deploy=deploy
        )
    module.exit_json(changed=deploy["result"] == "succeeded", deploy=deploy)


if __name__ == "__main__":
    main()
