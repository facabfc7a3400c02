"""The proxy's generated configuration: what it promises, and that haproxy itself accepts it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from support.services import need

from voicechat.deploy.haproxy import COOKIE, Backend, haproxy_config

BACKENDS = [Backend("r1", "127.0.0.1", 9001), Backend("r2", "10.0.0.7", 9002)]


def test_each_replica_is_checked_and_named_by_the_sticky_cookie():
    text = haproxy_config("0.0.0.0:8080", BACKENDS)
    assert "bind 0.0.0.0:8080" in text
    assert f"cookie {COOKIE} insert indirect nocache httponly" in text
    assert "server r1 127.0.0.1:9001 check cookie r1" in text and "server r2 10.0.0.7:9002 check cookie r2" in text
    for promise in ("option forwardfor", "option redispatch", "timeout tunnel 3600s", "ver HTTP/1.1"):
        assert promise in text


@pytest.mark.parametrize("name", ["", "r 1", "r1;drop", "r/1"])
def test_a_replica_name_that_would_break_the_config_is_refused(name: str):
    with pytest.raises(ValueError, match="replica name"):
        haproxy_config("127.0.0.1:8080", [Backend(name, "127.0.0.1", 9001)])


def test_no_replica_is_an_error():
    with pytest.raises(ValueError, match="at least one replica"):
        haproxy_config("127.0.0.1:8080", [])


@pytest.mark.timeout(60)
def test_haproxy_accepts_the_generated_config(tmp_path: Path):
    haproxy = need("haproxy")
    config = tmp_path / "haproxy.cfg"
    config.write_text(haproxy_config("127.0.0.1:8080", BACKENDS))
    checked = subprocess.run([haproxy, "-c", "-f", str(config)], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "warning" not in (checked.stdout + checked.stderr).lower(), checked.stdout + checked.stderr
