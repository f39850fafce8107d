"""``--redis``: the URL, in --config too, and the backplane makeService gives the server."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage

from wsserver.backplane.cluster import PRESENCE_TTL, RedisCluster
from wsserver.backplane.redis import RedisAddress, RedisBackplane
from wsserver.tap import Options, makeService


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def test_the_url_gives_host_port_database_password_and_tls() -> None:
    assert parse("--redis", "redis://:s%40cret@10.0.0.5:6380/3")["redis"] == RedisAddress(
        "10.0.0.5", 6380, 3, password="s@cret"
    )
    assert parse("--redis", "rediss://user:pw@redis.example")["redis"] == RedisAddress(
        "redis.example", 6379, 0, username="user", password="pw", tls=True
    )
    assert str(parse("--redis", "redis://:pw@h/1")["redis"]) == "redis://h:6379/1"  # logs show no password
    assert parse()["redis"] is None


@pytest.mark.parametrize("url", ["http://h", "redis://", "redis://h/zero"])
def test_a_url_that_is_not_one_is_refused_with_a_message(url: str) -> None:
    with pytest.raises(usage.UsageError, match="--redis"):
        parse("--redis", url)


def test_the_config_file_gives_it_too_and_the_server_gets_a_backplane_for_its_realms(tmp_path: Path) -> None:
    path = tmp_path / "wsserver.toml"
    path.write_text('[server]\nredis = "redis://127.0.0.1:7000/2"\n[realms.a]\n[realms.b]\n')
    options = parse("--config", str(path), "--realm", "a", "--realm", "b")
    assert options["redis"] == RedisAddress("127.0.0.1", 7000, 2)
    server = makeService(options, reactor=MemoryReactorClock())
    (backplane,) = [s for s in server if isinstance(s, RedisBackplane)]
    assert backplane.realms == ["a", "b"] and backplane.deliver == server.route_from_elsewhere
    assert not [s for s in makeService(parse(), reactor=MemoryReactorClock()) if isinstance(s, RedisBackplane)]


def test_with_redis_the_server_is_one_cluster_with_the_given_presence_ttl() -> None:
    server = makeService(parse("--redis", "redis://127.0.0.1:7000/0", "--cluster-ttl", "4"),
                         reactor=MemoryReactorClock())
    (cluster,) = [s for s in server if isinstance(s, RedisCluster)]
    assert cluster.ttl == 4.0 and cluster.router is server.router
    assert parse()["cluster-ttl"] == PRESENCE_TTL
    assert not [s for s in makeService(parse(), reactor=MemoryReactorClock()) if isinstance(s, RedisCluster)]
    with pytest.raises(usage.UsageError, match="--cluster-ttl"):
        parse("--redis", "redis://h", "--cluster-ttl", "0.5")
