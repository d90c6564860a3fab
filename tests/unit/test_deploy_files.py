"""docker-compose.yml and Grafana provisioning cannot run here (no Docker engine);
these checks catch the mistakes that would stop them from starting."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_the_whole_stack() -> None:
    services = _compose()["services"]
    from processors.catalog import WORKERS

    assert {"kafka", "timescaledb", "grafana", "prometheus", "init", *WORKERS} <= set(services)


def test_compose_images_are_pinned() -> None:
    for name, service in _compose()["services"].items():
        image = service.get("image", "")
        if "build" in service:
            continue
        assert re.fullmatch(r"[\w./-]+:[\w.-]*\d[\w.-]*", image), f"{name}: image {image!r} is not pinned"
        assert not image.endswith(":latest")


def test_compose_long_running_services_have_healthchecks() -> None:
    for name, service in _compose()["services"].items():
        if name == "init":
            continue
        assert "healthcheck" in service, name
        assert service["healthcheck"]["test"], name


def test_compose_dependencies_exist_and_wait_for_health() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        for dep, rule in (service.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s health but it has no check"
            assert condition in {"service_healthy", "service_started", "service_completed_successfully"}


def test_compose_mounts_and_build_files_exist() -> None:
    for name, service in _compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source} missing"
        if "build" in service:
            assert (ROOT / service["build"]["dockerfile"]).exists()


def test_compose_processors_run_known_commands() -> None:
    from processors.catalog import WORKERS

    for name, service in _compose()["services"].items():
        command = service.get("command") or []
        if command[:2] == ["llmpulse", "run"]:
            assert command[2] in WORKERS, f"{name} runs unknown worker {command[2]}"


def test_grafana_datasource_has_a_fixed_uid_and_is_read_only() -> None:
    provisioning = ROOT / "deploy/grafana/provisioning"
    [source] = yaml.safe_load((provisioning / "datasources/llmpulse.yaml").read_text())["datasources"]
    assert source["uid"] == "llmpulse-pg"
    assert source["editable"] is False
    [provider] = yaml.safe_load((provisioning / "dashboards/llmpulse.yaml").read_text())["providers"]
    assert provider["allowUiUpdates"] is False
