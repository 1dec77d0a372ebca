"""How the console's list calls scale: listBackups page 1 and the last page (pagesize 20, as the
console asks) with 20 backups and with 100,000, as root (listall) and as the owning user, over
a session like the console's. Prints medians and the 100k/20 ratios. Bounded: 40 requests per
case. Run with the console suite's venv: `python tests/console/bench_lists.py`."""

import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TARGET, free_port, wait_until  # noqa: E402

import requests  # noqa: E402  (installed with selenium)
from cs import CloudStack  # noqa: E402

REQUESTS = 40
PAGE = 20
BIG = 100_000


def serve(data_dir):
    port = free_port()
    proc = subprocess.Popen(
        [str(TARGET / "debug" / "bnr"), "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir),
         "--providers-dir", str(TARGET / "providers")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def up():
        try:
            return requests.get(f"http://127.0.0.1:{port}/", timeout=1).ok
        except requests.RequestException:
            return False
    wait_until("bnr", up)
    return proc, f"http://127.0.0.1:{port}/client/api"


def session(endpoint, user, password):
    s = requests.Session()
    r = s.post(endpoint, data={"command": "login", "username": user, "password": password, "domain": "/",
                               "response": "json"})
    return s, r.json()["loginresponse"]["sessionkey"]


def median_ms(endpoint, s, key, params):
    times = []
    for _ in range(REQUESTS):
        t = time.perf_counter()
        r = s.post(endpoint, data={"command": "listBackups", "response": "json", "sessionkey": key,
                                   "pagesize": PAGE, **params})
        r.raise_for_status()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), r.json()["listbackupsresponse"].get("count", 0)


def main():
    data = Path(tempfile.mkdtemp(prefix="bnr-bench-"))
    proc, endpoint = serve(data)
    keys = json.loads((data / "admin-keys.json").read_text())
    admin = CloudStack(endpoint=endpoint, key=keys["apikey"], secret=keys["secretkey"], poll_interval=0.05)
    zone = admin.listZones()["zone"][0]
    policy = admin.listBackupProviderOfferings(zoneid=zone["id"])["backupoffering"][0]
    offering = admin.importBackupOffering(zoneid=zone["id"], externalid=policy["externalid"], name="Gold",
                                          description="x", allowuserdrivenbackups=True, fetch_result=True)["backupoffering"]
    admin.createAccount(accounttype=0, username="bench", password="bench-pw", email="b@example.com",
                        firstname="B", lastname="B")
    user = admin.listUsers(username="bench")["user"][0]
    ukeys = admin.registerUserKeys(id=user["id"])["userkeys"]
    client = CloudStack(endpoint=endpoint, key=ukeys["apikey"], secret=ukeys["secretkey"], poll_interval=0.05)
    vm = client.deployVirtualMachine(
        zoneid=zone["id"], serviceofferingid=admin.listServiceOfferings()["serviceoffering"][0]["id"],
        templateid=admin.listTemplates(templatefilter="all")["template"][0]["id"], fetch_result=True)["virtualmachine"]
    client.assignVirtualMachineToBackupOffering(virtualmachineid=vm["id"], backupofferingid=offering["id"], fetch_result=True)
    for _ in range(PAGE):
        client.createBackup(virtualmachineid=vm["id"], fetch_result=True)
    password = (data / "admin-password").read_text().strip()
    results = {}

    def measure(label):
        for who, (u, p), extra in [("root", ("admin", password), {"listall": "true"}), ("user", ("bench", "bench-pw"), {})]:
            s, key = session(endpoint, u, p)
            first, total = median_ms(endpoint, s, key, {"page": 1, **extra})
            last, _ = median_ms(endpoint, s, key, {"page": max(1, -(-total // PAGE)), **extra})
            instance, _ = median_ms(endpoint, s, key, {"page": 1, "virtualmachineid": vm["id"], **extra})
            results[(label, who)] = (first, last, instance, total)
            print(f"{label:>5} {who:<4} count={total:<7} page1={first:.2f} ms  last={last:.2f} ms  "
                  f"instance page1={instance:.2f} ms")

    measure("20")
    proc.terminate()
    proc.wait(timeout=30)
    db = sqlite3.connect(data / "bnr.sqlite")
    cols = [r[1] for r in db.execute("PRAGMA table_info(backups)") if r[1] not in ("id", "uuid")]
    row = db.execute(f"SELECT {','.join(cols)} FROM backups LIMIT 1").fetchone()
    db.executemany(f"INSERT INTO backups (uuid,{','.join(cols)}) VALUES (?{',?' * len(cols)})",
                   ((str(uuid.uuid4()), *row) for _ in range(BIG - PAGE)))
    db.commit()
    db.close()
    proc, endpoint = serve(data)
    measure("100k")
    proc.terminate()
    proc.wait(timeout=30)
    for who in ("root", "user"):
        small, big = results[("20", who)], results[("100k", who)]
        print(f"ratio 100k/20 {who}: page1 {big[0] / small[0]:.2f}  last page {big[1] / small[1]:.2f}  "
              f"instance page1 {big[2] / small[2]:.2f}")
    shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
