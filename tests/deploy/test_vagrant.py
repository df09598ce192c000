"""`vagrant validate` on the Vagrantfile, single node and cluster, where vagrant is installed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .conftest import REPO, run, tail

pytestmark = pytest.mark.deploy


@pytest.mark.parametrize("cluster", ["", "1"], ids=["one-node", "cluster"])
def test_vagrant_validate(cluster: str, tmp_path: Path) -> None:
    vagrant = shutil.which("vagrant")
    if vagrant is None:
        pytest.skip("vagrant is not installed (apt-get install vagrant): `vagrant validate` not run")
    # A copy, so that what the Vagrantfile makes on load (the cluster's SSH key) stays in tmp_path.
    shutil.copy(REPO / "Vagrantfile", tmp_path / "Vagrantfile")
    env = {
        "HOME": str(tmp_path),
        "VAGRANT_HOME": str(tmp_path / ".vagrant.d"),
        "VAGRANT_CHECKPOINT_DISABLE": "1",
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HAPROXY_SYNC_CLUSTER": cluster,
    }
    proc = run([vagrant, "validate"], timeout=120, cwd=tmp_path, env=env)
    assert proc.returncode == 0, tail(proc)
    assert "validated successfully" in proc.stdout


def test_vagrantfile_forwards_haproxy_stats_and_consul() -> None:
    text = (REPO / "Vagrantfile").read_text()
    assert 'BOX = ENV.fetch("HAPROXY_SYNC_BOX", "bento/ubuntu-24.04")' in text
    assert '"ansible_local"' in text
    for guest in (80, 8404, 8500):
        assert f"guest: {guest}," in text, f"port {guest} not forwarded"
    assert "HAPROXY_SYNC_CLUSTER" in text
