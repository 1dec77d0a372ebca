"""Starts bnr on a free loopback port (fresh data dir, the dummy provider plus the scripted test
double so a zone can be hot-swapped) and a headless Chromium driven over WebDriver."""

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
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

REPO = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
SCREENSHOTS = TARGET / "console-screenshots"
CHROMIUM = os.environ.get("BNR_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("BNR_CHROMEDRIVER", "/usr/bin/chromedriver")
DESKTOP = (1280, 900)
# The browser's time zone differs from the server's (UTC) and from the schedules' zones, so
# "next run in the user's time zone" is a real conversion.
BROWSER_TZ = "America/Sao_Paulo"
PHONE = (390, 844)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what, check, timeout=60):
    """Polls `check` until it returns something truthy; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def server(request):
    binary = Path(os.environ.get("BNR_BIN", TARGET / "debug" / "bnr"))
    if not binary.exists():
        pytest.fail(f"{binary} is missing: build it with `cargo build --bin bnr` (or run `cargo xtask test`)")
    data_dir = Path(tempfile.mkdtemp(prefix="bnr-console-"))
    providers = data_dir / "providers-in"
    providers.mkdir()
    built = Path(os.environ.get("BNR_PROVIDERS_DIR", TARGET / "providers"))
    for wasm in [*built.glob("*.wasm"), TARGET / "fixtures" / "bnr_fixture_scripted.wasm"]:
        if not wasm.exists():
            pytest.fail(f"{wasm} is missing: run `cargo xtask plugins`")
        shutil.copy(wasm, providers)
    port = free_port()
    out = open(data_dir / "stdout.log", "w")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BNR_ADMIN_")}
    proc = subprocess.Popen(
        [str(binary), "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir),
         "--providers-dir", str(providers)],
        stdout=out, stderr=subprocess.DEVNULL, env=env,
    )

    def ready():
        if proc.poll() is not None:
            pytest.fail("bnr exited early")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return (data_dir / "admin-password").exists() and (data_dir / "admin-keys.json").exists()
        except OSError:
            return False

    wait_until("bnr to listen", ready)
    yield {
        "url": f"http://127.0.0.1:{port}/",
        "endpoint": f"http://127.0.0.1:{port}/client/api",
        "data_dir": data_dir,
        "password": (data_dir / "admin-password").read_text().strip(),
        "keys": json.loads((data_dir / "admin-keys.json").read_text()),
    }
    proc.terminate()
    proc.wait(timeout=30)
    out.close()
    # The server's log and database are kept to look at when a test failed.
    if request.session.testsfailed:
        print(f"\nbnr's data directory is kept: {data_dir}")
    else:
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def admin(server):
    return CloudStack(endpoint=server["endpoint"], key=server["keys"]["apikey"],
                      secret=server["keys"]["secretkey"], poll_interval=0.05, job_timeout=60)


@pytest.fixture(scope="session")
def zone(admin):
    return admin.listZones(name="zone1")["zone"][0]


def make_user(admin, server, prefix):
    """A plain user account with a password (for the console) and keys (for set-up)."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    password = f"pw-{uuid.uuid4().hex}"
    admin.createAccount(accounttype=0, username=name, password=password, email=f"{name}@example.com",
                        firstname=prefix.title(), lastname="Tester")
    row = admin.listUsers(username=name)["user"][0]
    keys = admin.registerUserKeys(id=row["id"])["userkeys"]
    client = CloudStack(endpoint=server["endpoint"], key=keys["apikey"], secret=keys["secretkey"],
                        poll_interval=0.05, job_timeout=60)
    return {"name": name, "password": password, "cs": client}


def deploy(client, admin, zone, name):
    service = admin.listServiceOfferings()["serviceoffering"][0]
    disk = admin.listDiskOfferings()["diskoffering"][0]
    template = admin.listTemplates(templatefilter="all", zoneid=zone["id"])["template"][0]
    return client.deployVirtualMachine(
        zoneid=zone["id"], serviceofferingid=service["id"], templateid=template["id"],
        diskofferingid=disk["id"], name=name, displayname=name, fetch_result=True,
    )["virtualmachine"]


@pytest.fixture(scope="session")
def browser():
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            pytest.fail(f"{path} is missing: install Debian's chromium and chromium-driver (see .ci/run)")
    profile = tempfile.mkdtemp(prefix="bnr-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--lang=en-US"]:
        options.add_argument(flag)
    # Everything is local: never let Selenium Manager look for drivers on the network.
    os.environ["SE_OFFLINE"] = "true"
    service = Service(executable_path=CHROMEDRIVER, env={**os.environ, "TZ": BROWSER_TZ})
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_window_size(*DESKTOP)
    driver.set_page_load_timeout(30)
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    SCREENSHOTS.mkdir(parents=True)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test leaves a screenshot of the page it failed on."""
    outcome = yield
    report = outcome.get_result()
    driver = item.funcargs.get("browser")
    if report.when == "call" and report.failed and driver is not None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SCREENSHOTS / f"FAILED-{item.name}.png"))
