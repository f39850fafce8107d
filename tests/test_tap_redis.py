"""``--redis``: the URL, in --config too, and the backplane makeService gives the server."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage

from wsserver.backplane.cluster import PRESENCE_TTL, RedisCluster
from wsserver.backplane.redis import ProbeSettings, RedisAddress, RedisBackplane
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


def test_a_sentinel_url_gives_the_sentinels_the_master_and_the_database() -> None:
    address = parse("--redis", "redis+sentinel://:pw@10.0.0.1,10.0.0.2:26380/mymaster/2")["redis"]
    assert address.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380))
    assert (address.master, address.db, address.password) == ("mymaster", 2, "pw")
    assert str(address) == "redis+sentinel://10.0.0.1:26379,10.0.0.2:26380/mymaster/2"  # no password in logs
    assert parse("--redis", "redis+sentinel://h/m")["redis"].db == 0


@pytest.mark.parametrize("url", ["redis+sentinel://h:26379", "redis+sentinel://h/m/zero", "redis+sentinel://h:x/m",
                                 "redis+sentinel://h,/m"])
def test_a_sentinel_url_that_is_not_one_is_refused_with_a_message(url: str) -> None:
    with pytest.raises(usage.UsageError, match="--redis"):
        parse("--redis", url)


def test_the_probe_options_reach_the_backplane_and_must_be_positive() -> None:
    (backplane,) = [s for s in makeService(parse("--redis", "redis://h", "--redis-probe-interval", "2",
                                                 "--redis-probe-timeout", "0.5"), reactor=MemoryReactorClock())
                    if isinstance(s, RedisBackplane)]
    assert backplane.probe == ProbeSettings(interval=2.0, timeout=0.5)
    assert (parse()["redis-probe-interval"], parse()["redis-probe-timeout"]) == (ProbeSettings.interval,
                                                                                 ProbeSettings.timeout)
    for name in ("--redis-probe-interval", "--redis-probe-timeout"):
        with pytest.raises(usage.UsageError, match=name):
            parse(name, "0")


def test_the_probe_settings_are_config_file_keys_too(tmp_path: Path) -> None:
    path = tmp_path / "wsserver.toml"
    path.write_text('[server]\nredis = "redis+sentinel://127.0.0.1/m"\nredis-probe-interval = 2.5\nredis-probe-timeout = 1.5\n[realms.realm1]\n')
    options = parse("--config", str(path))
    assert (options["redis"].master, options["redis-probe-interval"], options["redis-probe-timeout"]) == ("m", 2.5, 1.5)
def test_with_redis_the_server_is_one_cluster_with_the_given_presence_ttl() -> None:
    server = makeService(parse("--redis", "redis://127.0.0.1:7000/0", "--cluster-ttl", "4"),
                         reactor=MemoryReactorClock())
    (cluster,) = [s for s in server if isinstance(s, RedisCluster)]
    assert cluster.ttl == 4.0 and cluster.router is server.router
    assert parse()["cluster-ttl"] == PRESENCE_TTL
    assert not [s for s in makeService(parse(), reactor=MemoryReactorClock()) if isinstance(s, RedisCluster)]
    with pytest.raises(usage.UsageError, match="--cluster-ttl"):
        parse("--redis", "redis://h", "--cluster-ttl", "0.5")
