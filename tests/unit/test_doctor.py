"""``cellbox doctor`` reports what the server will use, in words and as JSON."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cellbox.supervisor import cgroups, process


@pytest.mark.timeout(60)
def test_doctor_says_what_the_server_uses():
    out = subprocess.run([sys.executable, "-m", "cellbox", "doctor", "--json"], capture_output=True, text=True,
                         check=True).stdout
    checks = {c["name"]: c for c in json.loads(out)}
    pidns = checks["PID namespace per session"]
    assert pidns["ok"] == (process.containment_unavailable() is None)
    assert pidns["detail"] == (process.containment_unavailable() or "available")
    cg = [c for name, c in checks.items() if name.startswith("cgroup")]
    assert len(cg) == 1 and cg[0]["ok"] == (cgroups.unavailable() is None)
    text = subprocess.run([sys.executable, "-m", "cellbox", "doctor"], capture_output=True, text=True,
                          check=True).stdout
    assert ("Sessions here are contained" in text) == pidns["ok"]
