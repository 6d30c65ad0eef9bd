"""The systemd units: `systemd-analyze verify` accepts them, and `sessiond install-service`
writes them for the running sessiond."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sessiond.systemd.units import PACKAGED_EXEC, render_units, unit_quote

from tests.support.notify import short_tmp_dir
from tests.support.paths import ROOT

PACKAGING = ROOT / "packaging" / "systemd"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is absent (Debian package systemd)"
)
SESSIOND = os.path.join(os.path.dirname(sys.executable), "sessiond")  # the console script


def verify(unit_dir: str, home: str) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` in both modes. %h resolves to $HOME, and a user manager's
    checks need a runtime folder."""
    runtime = os.path.join(home, "runtime")
    os.makedirs(runtime, mode=0o700, exist_ok=True)
    env = {"PATH": os.environ["PATH"], "HOME": home, "XDG_RUNTIME_DIR": runtime}
    units = [os.path.join(unit_dir, name) for name in ("sessiond.service", "sessiond.socket")]
    for mode in (["--user"], []):
        result = subprocess.run(
            [str(ANALYZE), *mode, "verify", *units], env=env, capture_output=True, text=True
        )
        if result.returncode != 0 or result.stderr.strip():
            return result
    return result


def test_packaging_holds_the_units_install_service_writes() -> None:
    for name, text in render_units(PACKAGED_EXEC).items():
        assert (PACKAGING / name).read_text() == text, (
            f"packaging/systemd/{name} differs from sessiond.systemd.units; regenerate with: "
            'python -c \'from sessiond.systemd.units import *; [open(f"packaging/systemd/{n}", '
            '"w").write(t) for n, t in render_units(PACKAGED_EXEC).items()]\''
        )


@needs_analyze
def test_systemd_analyze_verify_accepts_the_packaged_units() -> None:
    home = short_tmp_dir()  # where %h/.local/bin/sessiond is, as pipx puts it
    try:
        os.makedirs(f"{home}/.local/bin")
        os.symlink(SESSIOND, f"{home}/.local/bin/sessiond")
        result = verify(str(PACKAGING), home)
        assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    finally:
        shutil.rmtree(home)


@needs_analyze
def test_install_service_writes_verified_units_and_prints_one_command() -> None:
    base = short_tmp_dir()
    try:
        env = {"PATH": os.environ["PATH"], "HOME": base, "XDG_CONFIG_HOME": f"{base}/config"}
        result = subprocess.run(
            [SESSIOND, "install-service"], env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        unit_dir = f"{base}/config/systemd/user"
        service = Path(unit_dir, "sessiond.service").read_text()
        assert f"\nExecStart={SESSIOND} run\n" in service
        assert (
            Path(unit_dir, "sessiond.socket").read_text()
            == (PACKAGING / "sessiond.socket").read_text()
        )
        [command] = result.stdout.splitlines()  # the one line to run
        assert command == (
            "systemctl --user daemon-reload && "
            "systemctl --user enable --now sessiond.socket sessiond.service"
        )
        checked = verify(unit_dir, base)
        assert checked.returncode == 0 and not checked.stderr.strip(), checked.stderr
    finally:
        shutil.rmtree(base)


def test_unit_quote_escapes_specifiers_and_spaces() -> None:
    assert unit_quote("/usr/bin/sessiond") == "/usr/bin/sessiond"
    assert unit_quote("/opt/100%/bin/sessiond") == "/opt/100%%/bin/sessiond"
    assert unit_quote("/home/a b/$x/sessiond") == '"/home/a b/$$x/sessiond"'
    assert unit_quote('/q"uote\\d') == '"/q\\"uote\\\\d"'
