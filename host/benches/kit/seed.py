#!/usr/bin/env python3
"""Seed a running `bnr serve` for the read-path kit (../shared/perf) and print the extra
parameters each measured command takes.

usage: seed.py ENDPOINT APIKEY SECRET

Imports the dummy's two policies as offerings, deploys one VM, assigns it to the first
offering, takes 20 backups of it (so a default `listBackups` page holds 20 items), creates a
schedule, and prints shell lines `VM=… JOB=…` for the measured commands'
parameters. Stdlib only; signing as in signed_url.py.
"""
import json
import sys
import time
import urllib.request

sys.path.insert(0, sys.argv[4] if len(sys.argv) > 4 else "/work/shared/perf")
from signed_url import signed_url  # noqa: E402


def call(ep, key, secret, command, **params):
    with urllib.request.urlopen(signed_url(ep, key, secret, command, params), timeout=30) as r:
        (body,) = json.load(r).values()
        return body


def wait(ep, key, secret, body):
    job = body["jobid"]
    for _ in range(600):
        r = call(ep, key, secret, "queryAsyncJobResult", jobid=job)
        if r["jobstatus"] != 0:
            if r["jobstatus"] != 1:
                raise SystemExit(f"job {job} failed: {r}")
            return job, r.get("jobresult", {})
        time.sleep(0.05)
    raise SystemExit(f"job {job} did not finish")


def main(ep, key, secret):
    zone = call(ep, key, secret, "listZones")["zone"][0]["id"]
    offerings = []
    for policy in ("gold-policy", "silver-policy"):
        _, r = wait(ep, key, secret, call(ep, key, secret, "importBackupOffering", zoneid=zone,
                                          externalid=policy, name=policy, description=policy,
                                          allowuserdrivenbackups="true"))
        offerings.append(r["backupoffering"]["id"])
    so = call(ep, key, secret, "listServiceOfferings")["serviceoffering"][0]["id"]
    template = call(ep, key, secret, "listTemplates", templatefilter="all")["template"][0]["id"]
    _, r = wait(ep, key, secret, call(ep, key, secret, "deployVirtualMachine", zoneid=zone,
                                      serviceofferingid=so, templateid=template, name="kit-vm"))
    vm = r["virtualmachine"]["id"]
    wait(ep, key, secret, call(ep, key, secret, "assignVirtualMachineToBackupOffering",
                               virtualmachineid=vm, backupofferingid=offerings[0]))
    job = None
    for _ in range(20):
        job, _ = wait(ep, key, secret, call(ep, key, secret, "createBackup", virtualmachineid=vm))
    call(ep, key, secret, "createBackupSchedule", virtualmachineid=vm, intervaltype="DAILY",
         schedule="00:01", timezone="UTC", maxbackups="5")
    print(f"VM={vm} JOB={job}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
