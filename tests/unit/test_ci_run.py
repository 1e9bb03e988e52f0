"""`.ci/run` on a fresh Debian machine and on the project's, through its dry run.

`CI_DRY_RUN=1 bash .ci/run` prints the commands that would change the machine and runs none.
A fresh machine is a PATH holding only what the script itself needs (bash, dirname, ls), so
pg_isready, rabbitmq-server and chromium are absent, as on a Debian machine without them.
The machine the suite runs on stands for one that has them.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from ..conftest import reachable

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / ".ci" / "run"
BASE_TOOLS = ("bash", "dirname", "ls")


def dry_run(path: str, cache: Path | None = None) -> list[str]:
    """The script's output in a dry run with `path` as PATH; `cache` stands for the cache
    promtool is unpacked into (an empty one unless given)."""
    env = {k: v for k, v in os.environ.items() if k not in ("CI_DRY_RUN", "PATH", "PROMTOOL")}
    cache = cache or Path(path).parent / "cache"  # beside a fresh PATH's directory
    result = subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(SCRIPT)],
        env=env | {"CI_DRY_RUN": "1", "PATH": path, "XDG_CACHE_HOME": str(cache)},
        cwd="/",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    return result.stdout.splitlines()


def commands(lines: list[str]) -> list[list[str]]:
    """The commands printed, as argument lists."""
    return [shlex.split(line[2:]) for line in lines if line.startswith("+ ")]


def fresh_path(tmp_path: Path, *extra: str) -> str:
    """A directory with only the tools named, linked from this machine."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for tool in (*BASE_TOOLS, *extra):
        found = shutil.which(tool)
        assert found is not None, tool
        (bin_ / tool).symlink_to(found)
    return str(bin_)


def test_on_a_fresh_machine_it_installs_configures_and_starts_the_services(
    tmp_path: Path,
) -> None:
    lines = dry_run(fresh_path(tmp_path))
    assert lines[0] == "installing chromium postgresql rabbitmq-server"
    run = commands(lines)
    install = ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-qq"]
    assert run[0] == ["apt-get", "update", "-qq"]
    assert run[1] == [*install, "chromium", "postgresql", "rabbitmq-server"]
    sed, hba = run[2][:-1], run[2][-1]
    assert re.fullmatch(r"/etc/postgresql/[^/\s]+/main/pg_hba\.conf", hba), hba
    assert sed == [
        "sed",
        "-i",
        r"1i host all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust",
    ]
    assert run[3][:2] == ["pg_ctlcluster", "--skip-systemctl-redirect"]
    assert run[3][3:] == ["main", "start"]
    assert run[4] == ["rabbitmq-server", "-detached"]
    tools = str(tmp_path / "cache" / "webhook-router-ci" / "prometheus")
    assert run[5] == ["mkdir", "-p", tools]
    assert run[6][:2] == ["sh", "-c"] and run[6][-2:] == ["unpack", tools]
    assert "apt-get download" in run[6][2] and "dpkg-deb -x" in run[6][2]
    assert run[7] == [
        "rabbitmq-plugins",
        "enable",
        "--quiet",
        "rabbitmq_consistent_hash_exchange",
    ]
    assert run[8] == ["make", "test"]
    assert len(run) == 9
    assert "starting PostgreSQL" in lines and "starting RabbitMQ" in lines


def test_promtool_unpacked_once_is_not_fetched_again(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    promtool = cache / "webhook-router-ci" / "prometheus" / "usr" / "bin" / "promtool"
    promtool.parent.mkdir(parents=True)
    promtool.write_text("#!/bin/sh\n")
    promtool.chmod(0o755)
    lines = dry_run(fresh_path(tmp_path), cache)
    assert "unpacking promtool from Debian's prometheus package" not in lines
    assert not [c for c in commands(lines) if c[0] in ("mkdir", "sh")]


def test_the_printed_unpack_command_takes_promtool_out_of_a_package(tmp_path: Path) -> None:
    """The unpack command the dry run prints, run with a stand-in `apt-get download` that
    makes a small .deb holding a promtool (the real download is what CI itself runs)."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed")
    unpack = next(c for c in commands(dry_run(fresh_path(tmp_path))) if c[0] == "sh")
    package = tmp_path / "package"
    (package / "DEBIAN").mkdir(parents=True)
    (package / "DEBIAN" / "control").write_text(
        "Package: prometheus\nVersion: 1\nArchitecture: all\nMaintainer: x <x@x>\n"
        "Description: stand-in\n"
    )
    (package / "usr" / "bin").mkdir(parents=True)
    (package / "usr" / "bin" / "promtool").write_text("#!/bin/sh\necho promtool\n")
    (package / "usr" / "bin" / "promtool").chmod(0o755)
    bin_ = tmp_path / "tools"
    bin_.mkdir()
    apt_get = bin_ / "apt-get"  # stands in for the network download only
    apt_get.write_text(f"#!/bin/sh\nexec dpkg-deb -b {package} prometheus_1_all.deb >/dev/null\n")
    apt_get.chmod(0o755)
    tools = Path(unpack[-1])
    tools.mkdir(parents=True)
    path = f"{bin_}:{os.environ['PATH']}"
    subprocess.run(unpack, check=True, timeout=30, env=os.environ | {"PATH": path})
    assert (tools / "usr" / "bin" / "promtool").is_file()
    assert not list(tools.glob("*.deb"))


def test_the_printed_pg_hba_edit_lets_postgres_in_over_loopback_first(tmp_path: Path) -> None:
    """The sed the dry run prints, run on a copy of Debian's default pg_hba.conf: the trust
    lines for the tests' user come before the password rules (the first match wins)."""
    sed = next(c for c in commands(dry_run(fresh_path(tmp_path))) if c[0] == "sed")
    hba = tmp_path / "pg_hba.conf"
    default = [
        "local   all             postgres                                peer",
        "host    all             all             127.0.0.1/32            scram-sha-256",
        "host    all             all             ::1/128                 scram-sha-256",
    ]
    hba.write_text("\n".join(default) + "\n")
    subprocess.run([*sed[:-1], str(hba)], check=True, timeout=30)
    assert hba.read_text().splitlines() == [
        "host all postgres 127.0.0.1/32 trust",
        "host all postgres ::1/128 trust",
        *default,
    ]


def test_a_client_without_its_server_still_installs_the_server(tmp_path: Path) -> None:
    """pg_isready alone (Debian's postgresql-client) is not a PostgreSQL to test against."""
    bin_ = Path(fresh_path(tmp_path))
    client = bin_ / "pg_isready"
    client.write_text("#!/bin/sh\nexit 2\n")  # no server answers
    client.chmod(0o755)
    assert "postgresql" in commands(dry_run(str(bin_)))[1]


def test_only_what_is_missing_is_installed(tmp_path: Path) -> None:
    bin_ = Path(fresh_path(tmp_path))
    chromium = bin_ / "chromium"
    chromium.write_text("#!/bin/sh\n")
    chromium.chmod(0o755)
    lines = dry_run(str(bin_))
    assert lines[0] == "installing postgresql rabbitmq-server"
    assert commands(lines)[1][-2:] == ["postgresql", "rabbitmq-server"]
    assert "chromium" not in commands(lines)[1]


@pytest.mark.skipif(
    shutil.which("pg_isready") is None or shutil.which("rabbitmq-server") is None,
    reason="this machine has no PostgreSQL or RabbitMQ installed",
)
def test_on_a_machine_that_runs_them_it_only_runs_the_suite(tmp_path: Path) -> None:
    if not (reachable("postgresql://127.0.0.1:5432") and reachable("amqp://127.0.0.1:5672")):
        pytest.skip("PostgreSQL or RabbitMQ is installed here but not running")
    lines = dry_run(os.environ["PATH"], tmp_path)
    printed = " ".join(lines)
    assert "postgresql" not in printed and "rabbitmq-server" not in printed
    assert "starting" not in printed
    assert not [c for c in commands(lines) if c[0] in ("sed", "pg_ctlcluster")]
    assert commands(lines)[-2:] == [
        ["rabbitmq-plugins", "enable", "--quiet", "rabbitmq_consistent_hash_exchange"],
        ["make", "test"],
    ]


def test_a_real_run_still_ends_in_make_test() -> None:
    """Not a dry run: the last command the script runs is the suite itself."""
    last = [line for line in SCRIPT.read_text().splitlines() if line.strip()][-1]
    assert last == "make test"
