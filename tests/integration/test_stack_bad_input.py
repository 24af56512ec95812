"""Bad input to the stack role (through site.yml, as an operator runs it) fails
with a clear message before anything on the host changes."""

import copy

import pytest
import yaml

from tests.support.targets import MACHINE_VARS, ROOT, TEST_VARS

# Every test host's inventory has the secrets (TEST_SECRETS in tests/support/targets.py);
# each case takes one away or spoils one with its extra vars.
RESOURCES = MACHINE_VARS["ytempire_resources"]
PORTS = yaml.safe_load((ROOT / "group_vars/all/ports.yml").read_text())["ytempire_ports"]
IMAGES = TEST_VARS["stack_images"]


def with_change(section: dict, path: tuple[str, ...], value) -> dict:
    changed = copy.deepcopy(section)
    node = changed
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return changed


CASES = {
    "a secret whose vault variable is missing": (
        # As inventories/production's vars.yml writes it, with vault.yml lacking the variable.
        {"ytempire_db_password": "{{ vault_ytempire_db_password }}"},
        "Missing secret(s): stack_db_password. Each comes from the vault through the inventory",
    ),
    "an optional secret whose vault variable is missing": (
        {"ytempire_openai_api_key": "{{ vault_ytempire_openai_api_key }}"},
        "Missing secret(s): stack_openai_api_key.",
    ),
    "an empty JWT secret": (
        {"ytempire_jwt_secret": ""},
        "Missing secret(s): stack_jwt_secret.",
    ),
    "a JWT secret too short to sign tokens with": (
        {"ytempire_jwt_secret": "only-twenty-chars-xx"},
        "Missing secret(s): stack_jwt_secret.",
    ),
    "an API admin password shorter than 12": (
        {"ytempire_api_admin_password": "short-pw"},
        "stack_api_admin_password 12 or more",
    ),
    "a YouTube client without the key for its tokens at rest": (
        {"ytempire_youtube_client_id": "ops.apps.googleusercontent.com"},
        "Missing secret(s): stack_youtube_token_key.",
    ),
    "the example vault's value": (
        {"ytempire_n8n_encryption_key": "change-me-n8n-encryption-key"},
        "Missing secret(s): stack_n8n_encryption_key.",
    ),
    "a secret the .env file cannot carry": (
        {"ytempire_db_password": "it's"},
        "Secret(s) stack_db_password contain a single quote or a line break",
    ),
    "a memory limit above the host's RAM": (
        {"ytempire_resources": with_change(RESOURCES, ("worker", "memory"), "4096g")},
        "stack_resources.worker asks for 4096g of memory and",
    ),
    "more CPUs than the host has": (
        {"ytempire_resources": with_change(RESOURCES, ("postgres", "cpus"), 512)},
        "stack_resources.postgres asks for",
    ),
    "a service without limits": (
        {"ytempire_resources": {k: v for k, v in RESOURCES.items() if k != "frontend"}},
        "stack_resources.frontend (the limits of frontend) needs cpus",
    ),
    "a Redis policy that evicts queued jobs": (
        {
            "ytempire_resources": with_change(
                RESOURCES, ("redis", "maxmemory_policy"), "allkeys-lru"
            )
        },
        "This Redis is Celery's broker: a policy that evicts keys (the guide's allkeys-lru) can "
        "drop queued jobs",
    ),
    "two services on one port": (
        {"ytempire_ports": {**PORTS, "n8n": PORTS["frontend"]}},
        f"port(s) {PORTS['frontend']} are used twice",
    ),
    "a service on a public port": (
        {"ytempire_ports": {**PORTS, "api_green": 8080}},
        "port(s) 8080 are used twice",
    ),
    "an image source that is neither a registry nor an archive": (
        {"stack_images": with_change(IMAGES, ("postgres", "source"), "ftp")},
        "stack_images.postgres is",
    ),
    "an image reference that is no reference": (
        {"stack_images": with_change(IMAGES, ("api", "image"), "Not An Image")},
        "stack_images.api is",
    ),
    "an archive image no archive holds": (
        {
            "stack_images": with_change(
                IMAGES, ("api",), {"image": "ytempire/ytvideo:missing", "source": "archive"}
            )
        },
        "stack_images.api is ytempire/ytvideo:missing from an archive, but none of "
        "docker_image_archives holds it",
    ),
    "the services published on every address": (
        {"stack_bind_address": "0.0.0.0"},  # noqa: S104  the bad input under test
        "stack_bind_address is 0.0.0.0: the services must publish on a local address",
    ),
}


@pytest.mark.docker
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_refused_before_change(refusals, case):
    refusals.assert_refused(case, CASES[case][1])
