"""The compose stack (docker/), checked without Docker.

What a container sees is rebuilt in a temporary folder from the files themselves: the
Dockerfile's ``COPY`` lines and the service's mounts in compose.yaml become symbolic
links to the repository or to a folder per named volume. ``docker/pki-init.sh`` runs for
real (``sh``, with every ``roadwave`` command recorded on its way to the real CLI) into
the ``pki`` volume's folder; the configuration files then load with our own readers
against the certificates it made, and the real Mosquitto runs the broker configuration it
wrote, with the listener moved to a free loopback port. Grafana, InfluxDB and the image
builds are not run (no Docker engine here).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import queue
import re
import shlex
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as paho
import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID
from waiting import WAIT_S

from cloud.alerting import AlertingConfig
from cloud.ingest import IngestConfig
from edge.config import EdgeConfig
from roadwave import pki
from roadwave.cli import build_parser
from roadwave.cli.pki import PASSPHRASE_VARIABLE
from roadwave.configfile import Table
from roadwave.contract import TELEMETRY_SUBSCRIPTION, telemetry_topic
from roadwave.contract.alerts import PARTNER_ALERTS, PARTNER_ROOT, partner_alerts_filter
from roadwave.mqtt import MqttSettings, connect
from roadwave.registry import FleetRegistry
from roadwave.services import Mosquitto, free_port
from roadwave.sim.fleet import make_vin

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
COMPOSE: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text(encoding="utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
README = (DOCKER / "README.md").read_text(encoding="utf-8")
REGISTRY = FleetRegistry.load(DOCKER / "registry.toml")
PKI_SCRIPT = DOCKER / "pki-init.sh"
BROKER_HOST = "mqtt.fleet.test"
#: Separators of the recorded command lines: arguments (unit), commands (record).
UNIT, RECORD = "\x1f", "\x1e"

T = TypeVar("T")


# --- reading compose.yaml, the Dockerfiles and .dockerignore ------------------------------------


@dataclass(frozen=True)
class Mount:
    """One entry of a service's ``volumes``: a bind mount or a named volume (or a subpath of one)."""

    kind: str
    source: str
    target: str
    subpath: str = ""
    read_only: bool = False

    def host_path(self, volumes: Path) -> Path:
        """The mounted file or folder: in the repository, or in the volume's folder."""
        if self.kind == "bind":
            return (DOCKER / self.source).resolve()
        return volumes / self.source / self.subpath


def mounts(service: dict[str, Any]) -> list[Mount]:
    """The service's mounts, from the short (``source:target[:ro]``) or the long syntax."""
    result = []
    for entry in service.get("volumes", []):
        if isinstance(entry, str):
            source, target, *options = entry.split(":")
            kind = "bind" if source.startswith((".", "/")) else "volume"
            result.append(Mount(kind, source, target, read_only="ro" in options))
        else:
            subpath = entry.get("volume", {}).get("subpath", "")
            result.append(
                Mount(entry["type"], entry["source"], entry["target"], subpath, entry.get("read_only", False))
            )
    return result


def all_mounts() -> list[tuple[str, Mount]]:
    """(service, mount) for every mount of the stack."""
    return [(name, mount) for name, service in SERVICES.items() for mount in mounts(service)]


def state_mount(name: str) -> Mount:
    """The whole named volume a service keeps its state in (not a subpath of one)."""
    (mount,) = [m for m in mounts(SERVICES[name]) if m.kind == "volume" and not m.subpath]
    return mount


def dockerfile(service: dict[str, Any]) -> Path:
    return DOCKER / service["build"]["context"] / service["build"]["dockerfile"]


def build_context(service: dict[str, Any]) -> Path:
    return (DOCKER / service["build"]["context"]).resolve()


def instructions(path: Path) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    lines = [line.strip() for line in text.splitlines()]
    return [
        (keyword.upper(), rest.strip())
        for keyword, _, rest in (line.partition(" ") for line in lines if line and not line.startswith("#"))
    ]


def copies(path: Path) -> list[tuple[str, str]]:
    """(source, destination) of every COPY instruction."""
    result = []
    for keyword, arguments in instructions(path):
        if keyword == "COPY":
            *sources, destination = shlex.split(arguments)
            assert not any(source.startswith("--") for source in sources), f"{path.name}: COPY {arguments}"
            result += [(source, destination) for source in sources]
    return result


def roadwave_services() -> dict[str, dict[str, Any]]:
    """The services that run one of our images (built from a Dockerfile of docker/)."""
    return {name: service for name, service in SERVICES.items() if "build" in service}


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern: ``**`` any folders, ``*`` and ``?`` within one name."""
    parts = re.split(r"(\*\*/?|\*|\?)", pattern.strip("/"))
    wildcards = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(wildcards.get(part, re.escape(part)) for part in parts))


def sent_to_build(relative: str) -> bool:
    """Whether the repository's .dockerignore lets a path into the build context (last match wins)."""
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    parts = relative.split("/")
    prefixes = ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]
    sent = True
    for pattern in patterns:
        regex = _pattern_regex(pattern.removeprefix("!"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            sent = pattern.startswith("!")
    return sent


def parse_roadwave(argv: list[str], capsys: pytest.CaptureFixture[str], where: str) -> Any:
    """Parse a command line with the real ``roadwave`` parser; a refusal fails with argparse's message."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{where}: `roadwave {shlex.join(argv)}` is refused: {capsys.readouterr().err.strip()}")


def simulated_agents() -> dict[str, str]:
    """Each simulator service and the agent whose network namespace it shares."""
    return {
        name: service["network_mode"].removeprefix("service:")
        for name, service in SERVICES.items()
        if "network_mode" in service
    }


def environment_variables() -> set[str]:
    """Every variable compose sets in a container or interpolates from the host."""
    names = {name for service in SERVICES.values() for name in service.get("environment", {})}
    text = (DOCKER / "compose.yaml").read_text(encoding="utf-8")
    return names | set(re.findall(r"\$\{(\w+)", text))


def published_ports() -> set[tuple[str, str, str]]:
    """(host port, service, bound to) of every published port."""
    result = set()
    for name, service in SERVICES.items():
        for entry in service.get("ports", []):
            *address, host, _container = str(entry).split(":")
            result.add((host, name, address[0] if address else "all interfaces"))
    return result


def readme_section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.M | re.S)
    assert match, f"docker/README.md has no section '## {title}'"
    return match.group(1)


# --- the PKI script, run for real ------------------------------------------------------------


@dataclass
class PkiRun:
    """Two runs of docker/pki-init.sh into one folder standing in for the ``pki`` volume."""

    volumes: Path
    first: list[list[str]]
    second: list[list[str]]
    first_output: str
    ca_after_first: bytes
    serials_after_first: list[int]
    crl_after_first: bytes


def run_pki_script(volumes: Path, log: Path) -> tuple[list[list[str]], str]:
    """Run the script as the pki service would; return the roadwave commands it ran and its output."""
    wrapper_dir = log.parent / "bin"
    wrapper_dir.mkdir(exist_ok=True)
    wrapper = wrapper_dir / "roadwave"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'for argument in "$@"; do printf "%s{UNIT}" "$argument"; done >> "{log}"\n'
        f'printf "{RECORD}" >> "{log}"\n'
        f'exec "{sys.executable}" -m roadwave "$@"\n'
    )
    wrapper.chmod(0o755)
    log.write_text("")
    (pki_mount,) = [mount for mount in mounts(SERVICES["pki"]) if mount.source == "pki"]
    environment = {k: v for k, v in os.environ.items() if k != PASSPHRASE_VARIABLE}
    environment.update(
        PATH=f"{wrapper_dir}{os.pathsep}{environment.get('PATH', '')}",
        ROADWAVE_STATE_DIR=str(pki_mount.host_path(volumes)),
        ROADWAVE_REGISTRY=str(DOCKER / "registry.toml"),
        ROADWAVE_BROKER_HOST=BROKER_HOST,
    )
    done = subprocess.run(
        ["sh", str(PKI_SCRIPT)], env=environment, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"pki-init.sh failed ({done.returncode}):\n{done.stderr}"
    commands = [record.split(UNIT)[:-1] for record in log.read_text().split(RECORD)[:-1]]
    return commands, done.stdout


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> PkiRun:
    root = tmp_path_factory.mktemp("compose")
    volumes = root / "volumes"
    (volumes / "pki").mkdir(parents=True)
    first, output = run_pki_script(volumes, root / "first.log")
    fleet_pki = pki.FleetPki(volumes / "pki" / "pki")
    ca, crl = fleet_pki.ca_file.read_bytes(), fleet_pki.crl_file.read_bytes()
    serials = [record.serial for record in fleet_pki.certificates()]
    second, _ = run_pki_script(volumes, root / "second.log")
    return PkiRun(volumes, first, second, output, ca, serials, crl)


def container_view(name: str, stack: PkiRun, root: Path) -> Path:
    """A folder laid out as service ``name``'s container sees its files: image copies, then mounts."""
    service = SERVICES[name]
    view = root / name
    links = {
        destination: build_context(service) / source for source, destination in copies(dockerfile(service))
    }
    for mount in mounts(service):
        source = mount.host_path(stack.volumes)
        if mount.kind == "volume" and not mount.subpath:
            source.mkdir(parents=True, exist_ok=True)  # a named volume exists once mounted
        assert source.exists(), f"{name}: {mount.target} mounts {source}, which does not exist"
        links[mount.target] = source
    for target, source in links.items():
        link = view / target.lstrip("/")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(source)
    return view


def load_in_container(view: Path, target: str, load: Callable[[Path], T]) -> T:
    """Load a mounted configuration file with its absolute (container) paths taken inside ``view``."""
    path = view / target.lstrip("/")
    text = path.read_text(encoding="utf-8")
    path.unlink()
    path.write_text(re.sub(r'"(/[^"]*)"', lambda match: f'"{view}{match.group(1)}"', text), encoding="utf-8")
    return load(path)


def config_target(name: str) -> str:
    """The file after ``--config`` in the service's command."""
    command: list[str] = SERVICES[name]["command"]
    return command[command.index("--config") + 1]


def common_name(certificate_file: Path) -> str:
    certificate = x509.load_pem_x509_certificate(certificate_file.read_bytes())
    value = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    return str(value)


def mqtt_of(name: str, stack: PkiRun, root: Path) -> MqttSettings:
    """The [mqtt] table of a service's configuration file, as its container reads it."""
    return load_in_container(
        container_view(name, stack, root),
        config_target(name),
        lambda path: MqttSettings.read(Table.load(path).table("mqtt")),
    )


# --- compose.yaml on its own -------------------------------------------------------------------


def test_bind_mounts_name_files_of_the_repository_and_are_read_only() -> None:
    binds = [(name, mount) for name, mount in all_mounts() if mount.kind == "bind"]
    assert binds
    for name, mount in binds:
        path = mount.host_path(Path("/nonexistent"))
        assert path.exists(), f"{name}: bind mount {mount.source} does not exist in the repository"
        assert path.is_relative_to(REPO), f"{name}: {mount.source} is outside the repository"
        assert mount.read_only, f"{name}: {mount.source} is mounted writable"


def test_every_named_volume_is_declared_and_used() -> None:
    used = {mount.source for _, mount in all_mounts() if mount.kind == "volume"}
    assert used == set(COMPOSE["volumes"])


def test_every_service_command_parses(capsys: pytest.CaptureFixture[str]) -> None:
    for name, service in roadwave_services().items():
        if "entrypoint" in service:  # the pki service runs the script (tests below)
            script = {mount.target: mount.source for mount in mounts(service)}[service["entrypoint"][1]]
            assert service["entrypoint"][0] == "sh" and DOCKER / script == PKI_SCRIPT, name
            continue
        args = parse_roadwave(service["command"], capsys, name)
        assert callable(args.func), name


def test_long_running_services_restart_and_the_pki_runs_once() -> None:
    for name, service in SERVICES.items():
        assert service["restart"] == ("no" if name == "pki" else "unless-stopped"), name
    for name, service in roadwave_services().items():
        if name != "pki" and "network_mode" not in service:
            assert service["depends_on"]["pki"] == {"condition": "service_completed_successfully"}, name


def test_each_simulator_shares_its_agent_network_and_plays_its_vehicle(
    capsys: pytest.CaptureFixture[str],
) -> None:
    pairs = simulated_agents()
    assert len(pairs) == len(REGISTRY.vehicles) == 3
    channels = []
    for simulator, agent in pairs.items():
        args = parse_roadwave(SERVICES[simulator]["command"], capsys, simulator)
        assert args.interface == "udp_multicast" and args.vehicles == 1, simulator
        assert agent in SERVICES[simulator]["depends_on"], simulator
        assert SERVICES[agent]["command"][:1] == ["edge"], agent
        channels += args.channel
    assert len(set(channels)) == len(channels), f"vehicles share a multicast group: {channels}"
    assert all(ipaddress.ip_address(channel).is_multicast for channel in channels)


def test_the_broker_runs_as_the_uid_that_owns_the_keys() -> None:
    uid = re.search(r"useradd .*--uid (\d+)", (DOCKER / "install.sh").read_text().replace("\\\n", ""))
    assert uid is not None
    assert SERVICES["mosquitto"]["user"] == f"{uid.group(1)}:{uid.group(1)}"


def test_grafana_mounts_what_the_provisioning_files_expect() -> None:
    grafana = SERVICES["grafana"]
    targets = {mount.target: mount.host_path(Path("/nonexistent")) for mount in mounts(grafana)}
    provisioning = REPO / "dashboards" / "provisioning"
    assert targets["/etc/grafana/provisioning"] == provisioning
    providers = yaml.safe_load((provisioning / "dashboards" / "roadwave.yaml").read_text())["providers"]
    assert [targets[provider["options"]["path"]] for provider in providers] == [REPO / "dashboards" / "json"]
    datasources = (provisioning / "datasources" / "roadwave.yaml").read_text()
    expanded = set(re.findall(r"\$\{(\w+)\}", datasources))
    assert expanded and expanded <= set(grafana["environment"])
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    (json_dir,) = [target for target, path in targets.items() if path == REPO / "dashboards" / "json"]
    assert (REPO / "dashboards" / "json" / Path(home).relative_to(json_dir)).is_file()


# --- the Dockerfiles and the build context -------------------------------------------------------


def test_dockerfiles_pin_their_base_run_roadwave_and_copy_what_exists() -> None:
    required = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = tuple(int(part) for part in required.removeprefix(">=").split("."))
    paths = {dockerfile(service) for service in roadwave_services().values()}
    assert {path.name for path in paths} == {"Dockerfile.cloud", "Dockerfile.edge"}
    for path in paths:
        steps = instructions(path)
        (base,) = [arguments for keyword, arguments in steps if keyword == "FROM"]
        image, _, tag = base.partition(":")
        assert tag and tag != "latest", f"{path.name}: FROM {base} is not pinned by tag"
        assert image == "python" and tuple(map(int, tag.split("-")[0].split("."))) >= minimum, path.name
        assert ("ENTRYPOINT", '["roadwave"]') in steps, path.name
        assert ("USER", "roadwave") in steps, path.name
        for source, _ in copies(path):
            assert (REPO / source).exists(), f"{path.name}: COPY {source}: no such file"
        for keyword, arguments in steps:
            if keyword == "RUN" and arguments.startswith("sh /opt/roadwave/"):
                script = arguments.removeprefix("sh /opt/roadwave/")
                assert (REPO / script).is_file() and sent_to_build(script), f"{path.name}: RUN {arguments}"


def test_the_build_context_holds_the_package_and_nothing_else() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = [
        path.name
        for path in REPO.iterdir()
        if (path / "__init__.py").is_file() and any(fnmatch.fnmatchcase(path.name, p) for p in patterns)
    ]
    assert {"roadwave", "edge", "cloud", "firmware_bridge"} <= set(packages)
    for needed in [*packages, "pyproject.toml", project["project"]["readme"], "dbc/roadwave_car.dbc"]:
        assert sent_to_build(needed), f"{needed} is not sent to the image build"
    for left_out in [".venv", "tests/test_compose.py", ".git", "docker/compose.yaml", "roadwave/__pycache__"]:
        assert not sent_to_build(left_out), f"{left_out} is sent to the image build"


# --- docker/README.md ----------------------------------------------------------------------------


def test_the_readme_lists_exactly_the_published_ports() -> None:
    rows = re.findall(r"^\| (\d+) \| (\S+) \| ([^|]+?) \|", readme_section("Published ports"), re.M)
    assert set(rows) == published_ports()


def test_the_readme_names_every_variable_volume_and_service() -> None:
    for name in sorted(environment_variables() | set(COMPOSE["volumes"]) | set(SERVICES)):
        assert f"`{name}`" in README, f"docker/README.md does not mention `{name}`"


# --- the PKI script ------------------------------------------------------------------------------


def test_pki_script_runs_only_roadwave_commands_that_parse(
    stack: PkiRun, capsys: pytest.CaptureFixture[str]
) -> None:
    script = PKI_SCRIPT.read_text()
    assert {argv[1] for argv in stack.first} == set(re.findall(r"roadwave pki ([\w-]+)", script))
    for argv in stack.first + stack.second:
        assert argv[0] == "pki", argv
        parse_roadwave(argv, capsys, "docker/pki-init.sh")


def test_pki_script_certifies_every_identity_of_the_registry(stack: PkiRun) -> None:
    fleet_pki = pki.FleetPki(stack.volumes / "pki" / "pki")
    issued = {record.identity: record.role for record in fleet_pki.certificates()}
    assert issued == {**REGISTRY.roles(), "mosquitto": pki.BROKER}
    broker_config = [line for line in stack.first_output.splitlines() if '"config_file"' in line]
    assert broker_config and '"without_valid_certificate": []' in broker_config[-1]
    broker = x509.load_pem_x509_certificate(fleet_pki.bundle("mosquitto").cert_file.read_bytes())
    names = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"mosquitto", BROKER_HOST} <= set(names.get_values_for_type(x509.DNSName))


def test_a_second_run_keeps_the_ca_and_certificates_and_refreshes_crl_and_broker(stack: PkiRun) -> None:
    assert [argv[1] for argv in stack.second] == ["crl", "broker-config"]
    fleet_pki = pki.FleetPki(stack.volumes / "pki" / "pki")
    assert fleet_pki.ca_file.read_bytes() == stack.ca_after_first
    assert [record.serial for record in fleet_pki.certificates()] == stack.serials_after_first
    assert fleet_pki.crl_file.read_bytes() != stack.crl_after_first
    broker_dir = stack.volumes / "pki" / "broker"
    assert (broker_dir / "crl.pem").read_bytes() == fleet_pki.crl_file.read_bytes()


# --- the configuration files, as each container reads them ----------------------------------------


def test_vehicle_configs_load_with_the_vehicles_certificate_and_the_simulated_bus(
    stack: PkiRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    simulators = {agent: simulator for simulator, agent in simulated_agents().items()}
    vins = []
    for agent, simulator in simulators.items():
        view = container_view(agent, stack, tmp_path)
        config = load_in_container(view, config_target(agent), EdgeConfig.load)
        sim = parse_roadwave(SERVICES[simulator]["command"], capsys, simulator)
        assert config.vin == make_vin(sim.seed, 0), f"{agent}: the VIN is not the one `sim --seed` gives"
        assert REGISTRY.fleet_of(config.vin) == config.fleet == sim.fleet, agent
        (bus,) = config.buses
        assert (bus.interface, [bus.channel]) == (sim.interface, sim.channel), agent
        assert config.mqtt.cert_file is not None and common_name(config.mqtt.cert_file) == config.vin, agent
        assert config.uplink.spool.is_relative_to(state_mount(agent).host_path(stack.volumes)), agent
        vins.append(config.vin)
    assert sorted(vins) == sorted(vehicle.vin for vehicle in REGISTRY.vehicles)


def test_cloud_configs_load_with_their_service_certificates(stack: PkiRun, tmp_path: Path) -> None:
    ingest = load_in_container(
        container_view("ingest", stack, tmp_path), config_target("ingest"), IngestConfig.load
    )
    alerts = load_in_container(
        container_view("alerts", stack, tmp_path), config_target("alerts"), AlertingConfig.load
    )
    influx_port = SERVICES["influxdb"]["ports"][0].split(":")[-1]
    for name, config in (("ingest", ingest), ("alerts", alerts)):
        assert config.influx.url == f"http://influxdb:{influx_port}", name
        assert config.influx.database == SERVICES["grafana"]["environment"]["ROADWAVE_INFLUX_DB"], name
        assert config.mqtt.cert_file is not None and common_name(config.mqtt.cert_file) == name
        assert REGISTRY.roles()[name] == pki.SERVICE
    assert alerts.alerting.registry == REGISTRY
    state = state_mount("ingest").host_path(stack.volumes)
    assert ingest.ingest.buffer_dir.is_relative_to(state)
    assert ingest.ingest.dead_letter_dir.is_relative_to(state)
    check = " ".join(SERVICES["ingest"]["healthcheck"]["test"])
    assert f"http://{ingest.ingest.metrics_host}:{ingest.ingest.metrics_port}/ready" in check


def test_the_partner_config_loads_with_the_partners_certificate(
    stack: PkiRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = mqtt_of("partner", stack, tmp_path)
    partner = parse_roadwave(SERVICES["partner"]["command"], capsys, "partner").partner
    assert settings.cert_file is not None and common_name(settings.cert_file) == partner
    assert [p.id for p in REGISTRY.partners] == [partner]


# --- the broker, as configured by the script -------------------------------------------------------


class ConfiguredBroker(Mosquitto):
    """Mosquitto run from a given configuration text instead of one it writes itself."""

    def __init__(self, workdir: Path, port: int, config_text: str) -> None:
        super().__init__(workdir, port=port)
        self._config_text = config_text

    def _render_config(self) -> str:
        return self._config_text


def tcp_listening_pattern(host: str, port: int) -> str:
    """How /proc/net/tcp shows a listening IPv4 socket (address little-endian, state 0A)."""
    address = ipaddress.IPv4Address(host).packed[::-1].hex().upper()
    return f" {address}:{port:04X} 00000000:0000 0A "


class Inbox(queue.Queue[bytes]):
    def on_message(self, _client: Any, _userdata: Any, message: paho.MQTTMessage) -> None:
        self.put(bytes(message.payload))

    def until(self, marker: bytes) -> list[bytes]:
        received = [self.get(timeout=WAIT_S)]
        while received[-1] != marker:
            received.append(self.get(timeout=WAIT_S))
        return received


@pytest.fixture
def broker(stack: PkiRun, tmp_path: Path, start_server: Callable[[Mosquitto], Mosquitto]) -> Iterator[int]:
    """The script's broker configuration on a free loopback port, paths taken from the mounts."""
    mosquitto = SERVICES["mosquitto"]
    (config_mount,) = [mount for mount in mounts(mosquitto) if mount.subpath]
    config = (config_mount.host_path(stack.volumes) / "mosquitto.conf").read_text()
    listener = re.search(r"^listener (\d+) (\S+)$", config, re.M)
    assert listener is not None
    assert SERVICES["mosquitto"]["ports"] == [f"{listener.group(1)}:{listener.group(1)}"]
    (check,) = [part for part in mosquitto["healthcheck"]["test"] if "0A" in part]
    assert check == tcp_listening_pattern(listener.group(2), int(listener.group(1)))
    port = free_port()
    config = config.replace(listener.group(0), f"listener {port} 127.0.0.1")
    for mount in mounts(mosquitto):
        config = config.replace(mount.target, str(mount.host_path(stack.volumes)))
    if os.geteuid() == 0:  # as root, Mosquitto would switch to a user that cannot read tmp_path
        config += "user root\n"
    start_server(ConfiguredBroker(tmp_path / "broker", port, config))
    healthy = subprocess.run(
        ["grep", "-q", tcp_listening_pattern("127.0.0.1", port), "/proc/net/tcp"], check=False
    )
    assert healthy.returncode == 0, "the health check's pattern does not find the listening broker"
    yield port


@pytest.mark.integration
def test_the_stack_talks_through_the_generated_broker(stack: PkiRun, broker: int, tmp_path: Path) -> None:
    clients: list[paho.Client] = []

    def client(name: str, *filters: str) -> tuple[paho.Client, Inbox, str]:
        """A connected client with the service's settings and certificate, and its identity."""
        settings = mqtt_of(name, stack, tmp_path / name)
        assert settings.cert_file is not None
        assert (settings.host, settings.port) == ("mosquitto", 8883), name
        inbox = Inbox()
        connected = connect(
            replace(settings, host="127.0.0.1", port=broker),
            f"{name}-{uuid.uuid4().hex[:8]}",
            subscriptions=[(topic_filter, 1) for topic_filter in filters],
            on_message=inbox.on_message,
            timeout_s=WAIT_S,
        )
        clients.append(connected)
        return connected, inbox, common_name(settings.cert_file)

    try:
        _, ingest, _ = client("ingest", TELEMETRY_SUBSCRIPTION)
        vehicle, _, vin = client("vehicle-1")
        partner = REGISTRY.partners[0].id
        _, garage, _ = client("partner", partner_alerts_filter(partner))
        alerts, _, _ = client("alerts")
        fleet = REGISTRY.fleet_of(vin)
        other = next(v for v in REGISTRY.vehicles if v.vin != vin)
        marker = uuid.uuid4().hex.encode()
        vehicle.publish(telemetry_topic(other.fleet, other.vin), b"forged", qos=1).wait_for_publish(WAIT_S)
        vehicle.publish(telemetry_topic(fleet, vin), marker, qos=1).wait_for_publish(WAIT_S)
        assert ingest.until(marker) == [marker], "the ACL let a vehicle publish for another"
        topic = f"{PARTNER_ROOT}/{partner}/{PARTNER_ALERTS}/{fleet}/{vin}/battery"
        alerts.publish(topic, marker, qos=1).wait_for_publish(WAIT_S)
        assert garage.until(marker) == [marker]
    finally:
        for connected in clients:
            connected.disconnect()
            connected.loop_stop()
