from pathlib import Path

import pytest

from engine.settings import SettingsError, load_settings


def test_defaults():
    s = load_settings({}, env={})
    assert s.broker_url is None and s.embedded
    assert s.http_port == 8080 and s.http_host == "127.0.0.1"
    assert s.consent_default == "granted" and s.consent_granted_by_default


def test_precedence_flags_env_file_defaults(tmp_path: Path):
    cfg = tmp_path / "persona.toml"
    cfg.write_text('http_port = 9000\nconsent_default = "required"\ndata_dir = "/srv/p"\n')
    env = {"PERSONA_CONFIG": str(cfg), "PERSONA_HTTP_PORT": "9100"}
    s = load_settings({"http_port": None}, env=env)
    assert s.http_port == 9100
    assert s.consent_default == "required"
    assert s.data_dir == Path("/srv/p")
    s = load_settings({"http_port": 9200}, env=env)
    assert s.http_port == 9200


def test_broker_url_normalized():
    s = load_settings({}, env={"PERSONA_BROKER_URL": "localhost:9092"})
    assert s.broker_url == "kafka://localhost:9092"
    assert not s.embedded


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"PERSONA_HTTP_PORT": "eighty"}, "PERSONA_HTTP_PORT"),
        ({"PERSONA_HTTP_PORT": "70000"}, "PERSONA_HTTP_PORT"),
        ({"PERSONA_CONSENT_DEFAULT": "maybe"}, "PERSONA_CONSENT_DEFAULT"),
        ({"PERSONA_BROKER_URL": "http://x"}, "PERSONA_BROKER_URL"),
        ({"PERSONA_CHURN_THRESHOLD": "2"}, "PERSONA_CHURN_THRESHOLD"),
        # the profile cache's only bound (streams/profile_cache.py `ProfileCache.within`)
        ({"PERSONA_PROFILE_CACHE_MB": "65537"}, "PERSONA_PROFILE_CACHE_MB"),
        ({"PERSONA_PROFILE_CACHE_MB": "-1"}, "PERSONA_PROFILE_CACHE_MB"),
        ({"PERSONA_PROFILE_CACHE_MB": "1e9"}, "PERSONA_PROFILE_CACHE_MB"),
    ],
)
def test_invalid_settings_name_the_setting(env, name):
    with pytest.raises(SettingsError, match=name):
        load_settings({}, env=env)


def test_bad_config_file(tmp_path: Path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("http_port = \n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings({}, env={"PERSONA_CONFIG": str(cfg)})
    cfg.write_text("colour = 1\n")
    with pytest.raises(SettingsError, match="unknown setting"):
        load_settings({}, env={"PERSONA_CONFIG": str(cfg)})


@pytest.mark.parametrize(
    ("line", "meant"),
    [
        ("http_prot = 8081", "http_port"),  # a typo
        ("PERSONA_HTTP_PORT = 8081", "http_port"),  # the variable's name, as in the shell
        ("HTTP_PORT = 8081", "http_port"),
        ("partitons = 4", "partitions"),
        ('broker = "kafka://k:9092"', "broker_url"),  # a name short of the setting's
    ],
)
def test_a_misspelled_name_in_the_config_file_is_named_with_the_one_meant(
    tmp_path: Path, line: str, meant: str
):
    """The file's unknown name was listed beside all 56 known ones, where the same mistake in
    the environment (PERSONA_HTTP_PROT) says which one was meant."""
    cfg = tmp_path / "persona.toml"
    cfg.write_text(line + "\n")
    with pytest.raises(SettingsError, match=f"did you mean '{meant}'\\?"):
        load_settings({}, env={"PERSONA_CONFIG": str(cfg)})


def test_serving_settings():
    s = load_settings({}, env={})
    assert s.readers == 1 and s.request_timeout == 10.0 and s.tls_cert is None
    env = {
        "PERSONA_READERS": "3",
        "PERSONA_RATE_LIMITS": "shop:50; esp:2.5",
        "PERSONA_TLS_CERT": "/c.pem",
        "PERSONA_TLS_KEY": "/k.pem",
    }
    s = load_settings({}, env=env)
    assert s.readers == 3 and s.rate_limits == "shop:50; esp:2.5"
    assert s.tls_cert == Path("/c.pem") and s.tls_key == Path("/k.pem")


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"PERSONA_RATE_LIMITS": "shop"}, "PERSONA_RATE_LIMITS"),
        ({"PERSONA_RATE_LIMITS": "shop:-1"}, "PERSONA_RATE_LIMITS"),
        ({"PERSONA_READERS": "-1"}, "PERSONA_READERS"),
        ({"PERSONA_TLS_CERT": "/c.pem"}, "PERSONA_TLS"),
    ],
)
def test_invalid_serving_settings(env, name):
    with pytest.raises(SettingsError, match=name):
        load_settings({}, env=env)


def test_parse_rate_limits():
    from engine.settings import parse_rate_limits

    assert parse_rate_limits("a:1;b:0.5;") == {"a": 1.0, "b": 0.5}


def test_cpu_placement_settings():
    import os

    usable = sorted(os.sched_getaffinity(0))
    first, last = usable[0], usable[-1]
    s = load_settings(env={"PERSONA_WORKER_CPUS": f"{first}", "PERSONA_READER_CPUS": f"{last}"})
    assert s.worker_cpus == frozenset({first}) and s.reader_cpus == frozenset({last})
    assert load_settings(env={}).worker_cpus is None  # the kernel places
    if len(usable) >= 2 and usable[1] == first + 1:
        both = load_settings(env={"PERSONA_READER_CPUS": f"{first}-{first + 1}"})
        assert both.reader_cpus == frozenset({first, first + 1})


@pytest.mark.parametrize("value", ["a", "0-", "1-0", "0;1", "99999", "-1"])
def test_invalid_cpu_lists_name_the_setting(value):
    with pytest.raises(SettingsError, match="PERSONA_READER_CPUS"):
        load_settings(env={"PERSONA_READER_CPUS": value})


def test_collect_origins_are_normalized_as_browsers_send_them():
    s = load_settings({}, env={})
    assert s.collect_origins is None and s.collect_per_minute == 600.0
    env = {
        "PERSONA_COLLECT_ORIGINS": "https://Shop.example.com:443/; http://127.0.0.1:8000",
        "PERSONA_COLLECT_PER_MINUTE": "120",
    }
    s = load_settings({}, env=env)
    assert s.collect_origins == "https://shop.example.com;http://127.0.0.1:8000"
    assert s.collect_per_minute == 120.0


def test_a_short_identify_secret_is_refused_and_never_shown():
    short = "s" * 23
    with pytest.raises(SettingsError, match="PERSONA_IDENTIFY_SECRET has 23 characters") as err:
        load_settings({}, env={"PERSONA_IDENTIFY_SECRET": short})
    assert short not in str(err.value)
    s = load_settings({}, env={"PERSONA_IDENTIFY_SECRET": "s" * 24})
    assert s.identify_secret == "s" * 24 and "s" * 24 not in repr(s)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("COLLECT_ORIGINS", "shop.example.com"),
        ("COLLECT_ORIGINS", "https://shop.example.com/checkout"),
        ("COLLECT_ORIGINS", "ftp://shop.example.com"),
        ("COLLECT_ORIGINS", "*"),
        ("COLLECT_PER_MINUTE", "0"),
        ("COLLECT_PER_MINUTE", "nan"),
    ],
)
def test_invalid_collect_settings_name_the_setting(name, value):
    with pytest.raises(SettingsError, match=f"PERSONA_{name}"):
        load_settings({}, env={f"PERSONA_{name}": value})


def test_the_abandoned_cart_schedule_bound_is_a_setting(tmp_path: Path):
    """PERSONA_ABANDONED_CART_PENDING_MAX (streams/triggers.py `TriggerRunner._schedule`): the
    users whose abandoned-cart check a worker schedules in memory; 200,000 unless set."""
    assert load_settings({}, env={}).abandoned_cart_pending_max == 200_000
    for raw, value in [("1", 1), ("5000", 5000), (" 750000 ", 750_000), ("10000000", 10_000_000)]:
        env = {"PERSONA_ABANDONED_CART_PENDING_MAX": raw}
        assert load_settings({}, env=env).abandoned_cart_pending_max == value
    cfg = tmp_path / "persona.toml"
    cfg.write_text("abandoned_cart_pending_max = 50_000\n")  # TOML's own digit separators
    assert load_settings({}, env={"PERSONA_CONFIG": str(cfg)}).abandoned_cart_pending_max == 50_000
    cfg.write_text("abandoned_cart_pending_max = 4000.0\n")
    assert load_settings({}, env={"PERSONA_CONFIG": str(cfg)}).abandoned_cart_pending_max == 4000


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("0", "must be 1..10000000"),
        ("-1", "must be 1..10000000"),
        ("-200000", "must be 1..10000000"),
        ("1.5", "must be a whole number 1..10000000"),
        ("2e5", "must be a whole number 1..10000000"),
        ("lots", "must be a whole number 1..10000000"),
        ("10000001", "must be 1..10000000"),
        ("9" * 400, "must be"),
    ],
)
def test_a_bad_abandoned_cart_schedule_bound_is_refused_naming_it(value, says):
    with pytest.raises(SettingsError) as refused:
        load_settings({}, env={"PERSONA_ABANDONED_CART_PENDING_MAX": value})
    message = str(refused.value)
    assert message.startswith("invalid setting PERSONA_ABANDONED_CART_PENDING_MAX=")
    assert says in message


@pytest.mark.parametrize("line", ["= 0", "= -5", "= 2.5", "= true", '= "many"', "= 20_000_000"])
def test_a_bad_abandoned_cart_schedule_bound_in_the_file_is_refused(tmp_path: Path, line):
    cfg = tmp_path / "persona.toml"
    cfg.write_text(f"abandoned_cart_pending_max {line}\n")
    with pytest.raises(SettingsError, match="PERSONA_ABANDONED_CART_PENDING_MAX"):
        load_settings({}, env={"PERSONA_CONFIG": str(cfg)})


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("PERSONA_PARTITONS", "PERSONA_PARTITIONS"),
        ("PERSONA_HTTP_PROT", "PERSONA_HTTP_PORT"),
        ("PERSONA_API_KEY", "PERSONA_API_KEYS"),
        ("PERSONA_CONSENT_DEFUALT", "PERSONA_CONSENT_DEFAULT"),
        ("PERSONA_BROKER_ULR", "PERSONA_BROKER_URL"),
    ],
)
def test_a_misspelled_setting_in_the_environment_stops_naming_the_setting_meant(typo, meant):
    """A typo in an environment variable was ignored without a word: the engine ran with the
    default (4 partitions for PERSONA_PARTITONS=8, every key refused for PERSONA_API_KEY), where
    the same typo in the TOML file stops start-up."""
    with pytest.raises(SettingsError, match=rf"{typo} is no setting.*did you mean '{meant}'\?"):
        load_settings({}, env={typo: "8"})


def test_other_persona_variables_are_left_alone():
    """PERSONA_KEY is the README's shell variable for the secret; PERSONA_RUN_* are what
    `persona run` tells its children; a name close to no setting is not taken for a typo."""
    env = {
        "PERSONA_KEY": "x" * 32,
        "PERSONA_RUN_EMBEDDED_BROKER": "1",
        "PERSONA_RUN_DATA_DIR_LOCK": "5",
        "PERSONA_SHOP": "tea",
        "PERSONA_CONFIG": "",
        "PERSONA_PARTITIONS": "8",
    }
    assert load_settings({}, env=env).partitions == 8


def _service_links(service: str, port: int = 8080, port_name: str = "http") -> dict[str, str]:
    """The variables Kubernetes (enableServiceLinks, on by default) gives every pod of a
    namespace for a Service named `service` with one TCP port."""
    svc = service.upper().replace("-", "_")
    base = f"{svc}_PORT_{port}_TCP"
    return {
        f"{svc}_SERVICE_HOST": "10.0.0.7",
        f"{svc}_SERVICE_PORT": str(port),
        f"{svc}_SERVICE_PORT_{port_name.upper()}": str(port),
        f"{svc}_PORT": f"tcp://10.0.0.7:{port}",
        base: f"tcp://10.0.0.7:{port}",
        f"{base}_PROTO": "tcp",
        f"{base}_PORT": str(port),
        f"{base}_ADDR": "10.0.0.7",
    }


@pytest.mark.parametrize(
    "service", ["persona", "persona-broker", "persona-workers", "persona-https", "persona-api"]
)
def test_kubernetes_service_link_variables_are_not_taken_for_typos(service):
    """A Service in the namespace named `persona-broker` gives every pod PERSONA_BROKER_PORT=
    tcp://...: two letters off PERSONA_WORKER_PORT, it stopped start-up as a typo."""
    env = _service_links(service, 9092) | {"PERSONA_PARTITIONS": "8"}
    assert load_settings({}, env=env).partitions == 8


@pytest.mark.parametrize(
    ("service", "var"),
    [("persona-http", "PERSONA_HTTP_PORT"), ("persona-worker", "PERSONA_WORKER_PORT")],
)
def test_a_service_link_on_a_setting_stops_start_up_saying_why(service, var):
    """A Service named `persona-http` gives every pod PERSONA_HTTP_PORT=tcp://10.0.0.7:8080, a
    setting's own name: the message says where the value comes from and what to do."""
    with pytest.raises(SettingsError, match=rf"{var}=.*Kubernetes.*enableServiceLinks"):
        load_settings({}, env=_service_links(service))


def test_a_misspelled_port_setting_is_still_a_typo_when_no_service_link():
    """Only a value Kubernetes writes (tcp://ip:port) makes a PERSONA_*_PORT name a service link."""
    with pytest.raises(SettingsError, match="did you mean 'PERSONA_WORKER_PORT'"):
        load_settings({}, env={"PERSONA_WROKER_PORT": "9000"})


def test_a_bad_value_from_the_file_names_the_file_and_its_key(tmp_path: Path):
    """A value from PERSONA_CONFIG was refused as `invalid setting PERSONA_HTTP_PORT='x'`: an
    operator with no such variable in the environment looked for it there. The message now
    says where the value came from; a value from the environment says nothing more."""
    cfg = tmp_path / "persona.toml"
    cfg.write_text('[persona]\nhttp_port = "x"\n')
    with pytest.raises(SettingsError) as refused:
        load_settings({}, env={"PERSONA_CONFIG": str(cfg)})
    message = str(refused.value)
    assert message.startswith("invalid setting PERSONA_HTTP_PORT='x'"), message
    assert f"http_port in {cfg}" in message, message
    with pytest.raises(SettingsError) as from_env:
        load_settings({}, env={"PERSONA_CONFIG": str(cfg), "PERSONA_HTTP_PORT": "y"})
    assert str(cfg) not in str(from_env.value) and "'y'" in str(from_env.value)
