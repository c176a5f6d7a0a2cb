"""The cluster secret: where it comes from, clear errors, and loopback-only without one."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from warpmesh.net.secret import (
    ENV_VAR,
    InsecureAddressError,
    SecretError,
    check_addresses,
    is_loopback,
    load_secret,
)


def test_secret_from_file_strips_the_trailing_newline(tmp_path: Path) -> None:
    f = tmp_path / "s"
    f.write_bytes(b"  0123456789abcdef0123\n")
    f.chmod(0o600)
    assert load_secret(f, env={}) == b"0123456789abcdef0123"


def test_file_wins_over_environment(tmp_path: Path) -> None:
    f = tmp_path / "s"
    f.write_bytes(b"from-the-file-0123456789")
    f.chmod(0o600)
    assert load_secret(f, env={ENV_VAR: "from-the-env-0123456789"}) == b"from-the-file-0123456789"


def test_secret_from_environment_and_none_without_either() -> None:
    assert load_secret(env={ENV_VAR: "from-the-env-0123456789\n"}) == b"from-the-env-0123456789"
    assert load_secret(env={}) is None


def test_empty_sources_are_clear_errors(tmp_path: Path) -> None:
    f = tmp_path / "empty"
    f.write_bytes(b"\n \n")
    with pytest.raises(SecretError, match=r"is empty; pass --secret-file FILE or set WARPMESH_SECRET"):
        load_secret(f, env={})
    with pytest.raises(SecretError, match=r"WARPMESH_SECRET is set but empty"):
        load_secret(env={ENV_VAR: "  "})


def test_missing_directory_and_oversized_files(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="does not exist"):
        load_secret(tmp_path / "nope", env={})
    with pytest.raises(SecretError, match="is a directory"):
        load_secret(tmp_path, env={})
    big = tmp_path / "big"
    big.write_bytes(b"x" * 100_000)
    with pytest.raises(SecretError, match="is it the right file"):
        load_secret(big, env={})


def test_unreadable_file_says_how_to_fix_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "s"
    f.write_bytes(b"0123456789abcdef0123")

    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    # Tests may run as root, where chmod 000 does not stop reads: simulate the kernel's refusal.
    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(SecretError, match=r"permission denied; make it readable .* chmod 600"):
        load_secret(f, env={})


def test_weak_or_exposed_secret_files_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "s"
    f.write_bytes(b"short")
    f.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="warpmesh.net.secret"):
        assert load_secret(f, env={}) == b"short"
    text = caplog.text
    assert "readable by other users" in text and "only 5 bytes" in text


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("::ffff:127.0.0.1", True), ("0.0.0.0", False), ("::", False), ("", False), ("10.0.0.1", False),
     ("192.168.1.2", False), ("example.com", False), ("localhost.example.com", False)],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_without_a_secret_only_loopback_may_be_used() -> None:
    check_addresses(None, listen=["127.0.0.1"], dial=["::1", "localhost"])
    check_addresses(b"secret-secret-secret", listen=["0.0.0.0"], dial=["10.0.0.1"])
    with pytest.raises(InsecureAddressError, match=r"refusing to listen on 0.0.0.0 without a cluster "
                                                   r"secret.*--secret-file FILE or set WARPMESH_SECRET"):
        check_addresses(None, listen=["0.0.0.0"])
    with pytest.raises(InsecureAddressError, match=r"refusing to dial 10.0.0.1"):
        check_addresses(None, dial=["10.0.0.1"])
    with pytest.raises(InsecureAddressError, match=r"listen on \*"):
        check_addresses(None, listen=[""])
