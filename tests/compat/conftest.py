"""Starts a bnr server on a free loopback port with a fresh data dir and hands out `cs` clients."""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from cs import CloudStack

REPO = Path(__file__).resolve().parents[2]


def bnr_binary():
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    binary = Path(os.environ.get("BNR_BIN", target / "debug" / "bnr"))
    if not binary.exists():
        pytest.fail(f"{binary} is missing: build it with `cargo build --bin bnr` (or run `cargo xtask test`)")
    return binary


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server(request):
    data_dir = Path(tempfile.mkdtemp(prefix="bnr-compat-"))
    port = free_port()
    log = open(data_dir / "server.log", "w")
    proc = subprocess.Popen(
        [str(bnr_binary()), "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir)]
        + (["--providers-dir", os.environ["BNR_PROVIDERS_DIR"]] if os.environ.get("BNR_PROVIDERS_DIR") else []),
        stdout=log, stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}/client/api"
    keys_file = data_dir / "admin-keys.json"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            pytest.fail(f"bnr exited early: {(data_dir / 'server.log').read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                if keys_file.exists():
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("bnr did not start listening within 60 s")
        time.sleep(0.1)
    keys = json.loads(keys_file.read_text())
    yield {"endpoint": endpoint, "keys": keys}
    proc.terminate()
    proc.wait(timeout=30)
    # The server's log and database are kept to look at when a test failed.
    if request.session.testsfailed:
        print(f"\nbnr's data directory is kept: {data_dir}")
    else:
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def admin(server):
    return CloudStack(
        endpoint=server["endpoint"], key=server["keys"]["apikey"],
        secret=server["keys"]["secretkey"], poll_interval=0.05, job_timeout=60,
    )


@pytest.fixture(scope="session")
def zone(admin):
    return admin.listZones(name="zone1")["zone"][0]


@pytest.fixture(scope="session")
def user(admin):
    name = f"alice-{uuid.uuid4().hex[:8]}"
    admin.createAccount(
        accounttype=0, username=name, password="s3cret-Password", email=f"{name}@example.com",
        firstname="Alice", lastname="Tester",
    )
    user_row = admin.listUsers(username=name)["user"][0]
    keys = admin.registerUserKeys(id=user_row["id"])["userkeys"]
    admin_endpoint = admin.endpoint
    return CloudStack(
        endpoint=admin_endpoint, key=keys["apikey"], secret=keys["secretkey"],
        poll_interval=0.05, job_timeout=60,
    )


@pytest.fixture(scope="session")
def gold_offering(admin, zone):
    gold = admin.listBackupProviderOfferings(zoneid=zone["id"])["backupoffering"][0]
    return admin.importBackupOffering(
        zoneid=zone["id"], externalid=gold["externalid"], name=gold["name"],
        description=gold["description"], allowuserdrivenbackups=True, fetch_result=True,
    )["backupoffering"]


@pytest.fixture()
def vm(user, admin, zone):
    service = admin.listServiceOfferings()["serviceoffering"][0]
    disk = admin.listDiskOfferings()["diskoffering"][0]
    template = admin.listTemplates(templatefilter="all", zoneid=zone["id"])["template"][0]
    deployed = user.deployVirtualMachine(
        zoneid=zone["id"], serviceofferingid=service["id"], templateid=template["id"],
        diskofferingid=disk["id"], fetch_result=True,
    )["virtualmachine"]
    yield deployed
    state = user.listVirtualMachines(id=deployed["id"]).get("virtualmachine", [{}])[0]
    if state.get("backupofferingid"):
        user.removeVirtualMachineFromBackupOffering(
            virtualmachineid=deployed["id"], forced=True, fetch_result=True
        )
