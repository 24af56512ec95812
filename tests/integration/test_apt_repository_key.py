"""Docker's repository source is signed by exactly one checked key: a key file
with the expected key plus one more is refused before anything reaches
/etc/apt, and a file with exactly that key gives a source apt verifies."""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import pytest

from tests.support.targets import Target

PLAYBOOK = "tests/integration/docker_install.yml"
SOURCE = "/etc/apt/sources.list.d/docker.sources"
KEYRINGS = ("/etc/apt/keyrings/docker.gpg", "/etc/apt/keyrings/docker.asc")
SUITE = "bookworm"  # the debian12 test image's release
REPO = "/srv/ytempire-test-repo"


def gpg(home: Path, *args: str) -> str:
    done = subprocess.run(
        ["gpg", "--batch", "--homedir", str(home), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def primary_fingerprints(home: Path) -> list[str]:
    lines = gpg(home, "--with-colons", "--list-keys").splitlines()
    return [
        lines[i + 1].split(":")[9]
        for i, line in enumerate(lines[:-1])
        if line.startswith("pub:") and lines[i + 1].startswith("fpr:")
    ]


def signed_repository(home: Path, fingerprint: str, root: Path) -> None:
    """An empty apt repository (suite SUITE, component stable) whose InRelease
    the key `fingerprint` signs: apt refreshes it only if it trusts that key."""
    packages = root / "dists" / SUITE / "stable" / "binary-amd64" / "Packages"
    packages.parent.mkdir(parents=True)
    packages.write_bytes(b"")
    digest = hashlib.sha256(b"").hexdigest()
    release = root / "dists" / SUITE / "Release"
    release.write_text(
        f"Origin: ytempire-test\nSuite: {SUITE}\nCodename: {SUITE}\n"
        f"Date: {formatdate(usegmt=True)}\nArchitectures: amd64\nComponents: stable\n"
        f"SHA256:\n {digest} 0 stable/binary-amd64/Packages\n"
    )
    gpg(home, "--local-user", fingerprint, "--clearsign", "--output",
        str(release.with_name("InRelease")), str(release))  # fmt: skip


@pytest.fixture(scope="module")
def keys() -> Iterator[tuple[Path, list[str]]]:
    """Two throwaway ed25519 signing keys in a scratch GNUPGHOME: (home, fingerprints)."""
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch) / "gnupg"
        home.mkdir(mode=0o700)
        for n in (1, 2):
            uid = f"ytempire test key {n} <key{n}@example.invalid>"
            gpg(home, "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never")
        fingerprints = primary_fingerprints(home)
        assert len(fingerprints) == 2, fingerprints
        yield home, fingerprints


def put(target: Target, home: Path, fingerprints: list[str], scratch: Path) -> None:
    """The key file (armored, the given keys) and the signed repository, on the target."""
    (scratch / "keys.asc").write_text(gpg(home, "--armor", "--export", *fingerprints))
    signed_repository(home, fingerprints[0], scratch / "repo")
    target.exec("rm", "-rf", REPO)
    for src, dest in ((scratch / "keys.asc", "/srv/keys.asc"), (scratch / "repo", REPO)):
        done = subprocess.run(
            ["docker", "cp", str(src), f"{target.name}:{dest}"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    # apt reads file: sources as its unprivileged _apt user.
    target.exec("chmod", "-R", "a+rX", "/srv")


def run_install(target: Target, fingerprint: str) -> subprocess.CompletedProcess[str]:
    return target.playbook(
        PLAYBOOK,
        {
            "docker_install_source": "repository",
            "docker_repository_url": f"file:{REPO}",
            "docker_repository_key_url": "file:///srv/keys.asc",
            "docker_repository_key_fingerprint": fingerprint,
        },
    )


def exists(target: Target, path: str) -> bool:
    return target.exec("test", "-e", path).returncode == 0


@pytest.mark.docker
def test_key_file_with_an_extra_key_is_refused(fresh_host, keys, tmp_path):
    home, fingerprints = keys
    put(fresh_host, home, fingerprints, tmp_path)
    result = run_install(fresh_host, fingerprints[0])
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0, output
    listed = ", ".join(fingerprints)
    assert (
        f"The key file at file:///srv/keys.asc holds the primary key(s) {listed}, not exactly "
        f"{fingerprints[0]} (docker_repository_key_fingerprint): the docker source was not written."
    ) in output, output
    assert not exists(fresh_host, SOURCE)
    for keyring in KEYRINGS:
        assert not exists(fresh_host, keyring), keyring


@pytest.mark.docker
def test_key_file_with_exactly_the_key_signs_the_source(fresh_host, keys, tmp_path):
    home, fingerprints = keys
    put(fresh_host, home, fingerprints[:1], tmp_path)
    result = run_install(fresh_host, fingerprints[0])
    output = " ".join((result.stdout + result.stderr).split())
    # The source and its keyring are written and apt verified the repository's
    # InRelease with them; the empty repository then has no engine, which the
    # role refuses by name.
    assert "source has no docker.io 26.1.x" in output, output
    source = fresh_host.exec("cat", SOURCE).stdout
    assert "Signed-By: /etc/apt/keyrings/docker.gpg" in source, source
    assert f"URIs: file:{REPO}" in source, source
    listed = fresh_host.exec("gpg", "--show-keys", "--with-colons", KEYRINGS[0]).stdout
    assert [line.split(":")[9] for line in listed.splitlines() if line.startswith("fpr:")] == [
        fingerprints[0]
    ]
    # apt keeps a repository's InRelease only once its signature verified.
    lists = fresh_host.exec("ls", "/var/lib/apt/lists").stdout.split()
    release = f"{REPO.strip('/').replace('/', '_')}_dists_{SUITE}_InRelease"
    assert any(name.endswith(release) for name in lists), lists
