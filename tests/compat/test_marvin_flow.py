"""CloudStack Marvin-style B&R flow driven by the real `cs` client against a running bnr.

Mirrors apache/cloudstack test/integration/smoke/test_backup_recovery_dummy.py (4.22):
offering import/delete, the backup lifecycle, and creating an instance from a backup.
The server is started by conftest.py on a loopback port with a fresh data directory.
"""

import time

import pytest
from cs import CloudStackApiException


def provider_offerings(admin, zone_id):
    return admin.listBackupProviderOfferings(zoneid=zone_id)["backupoffering"]


def test_framework_is_enabled_and_provider_is_dummy(admin):
    enabled = admin.listConfigurations(name="backup.framework.enabled")["configuration"]
    assert any(c["name"] == "backup.framework.enabled" and c["value"] == "true" for c in enabled)
    providers = admin.listBackupProviders()["providers"]
    assert "dummy" in [p["name"] for p in providers]


def test_import_backup_offering(admin, zone):
    silver = provider_offerings(admin, zone["id"])[1]
    imported = admin.importBackupOffering(
        zoneid=zone["id"],
        externalid=silver["externalid"],
        name=silver["name"],
        description=silver["description"],
        allowuserdrivenbackups=True,
        fetch_result=True,
    )["backupoffering"]
    listed = admin.listBackupOfferings(zoneid=zone["id"])["backupoffering"]
    assert imported["id"] in [o["id"] for o in listed]

    admin.deleteBackupOffering(id=imported["id"])
    remaining = admin.listBackupOfferings(zoneid=zone["id"]).get("backupoffering", [])
    assert imported["id"] not in [o["id"] for o in remaining]


def test_vm_backup_lifecycle(user, vm, gold_offering):
    assert user.listBackups(virtualmachineid=vm["id"], listall=True) == {}

    user.assignVirtualMachineToBackupOffering(
        virtualmachineid=vm["id"], backupofferingid=gold_offering["id"], fetch_result=True
    )
    user.createBackup(virtualmachineid=vm["id"], fetch_result=True)
    backups = user.listBackups(virtualmachineid=vm["id"], listall=True)
    assert backups["count"] == 1
    backup = backups["backup"][0]
    assert backup["status"] == "BackedUp"
    assert backup["virtualmachineid"] == vm["id"]

    user.deleteBackup(id=backup["id"], fetch_result=True)
    assert user.listBackups(virtualmachineid=vm["id"], listall=True) == {}

    user.removeVirtualMachineFromBackupOffering(
        virtualmachineid=vm["id"], forced=True, fetch_result=True
    )


def test_vm_backup_create_vm_from_backup(user, vm, gold_offering, zone):
    user.assignVirtualMachineToBackupOffering(
        virtualmachineid=vm["id"], backupofferingid=gold_offering["id"], fetch_result=True
    )
    user.createBackup(virtualmachineid=vm["id"], name="backup1", fetch_result=True)
    user.createBackup(virtualmachineid=vm["id"], name="backup2", fetch_result=True)
    backups = user.listBackups(virtualmachineid=vm["id"], listall=True)["backup"]
    assert len(backups) == 2
    user.removeVirtualMachineFromBackupOffering(
        virtualmachineid=vm["id"], forced=True, fetch_result=True
    )
    backups = user.listBackups(virtualmachineid=vm["id"], listall=True)["backup"]
    assert len(backups) == 2

    name = f"vm-from-backup1-{int(time.time())}"
    created = user.createVMFromBackup(
        backupid=backups[0]["id"], zoneid=zone["id"], name=name, displayname=name, fetch_result=True
    )["virtualmachine"]
    assert created["name"] == name
    assert created["state"] == "Running"
    assert created["serviceofferingid"] == vm["serviceofferingid"]
    assert created["zoneid"] == zone["id"]
    volumes = user.listVolumes(virtualmachineid=created["id"], listall=True)["volume"]
    assert len(volumes) == 2

    for backup in backups:
        user.deleteBackup(id=backup["id"], fetch_result=True)
    assert user.listBackups(virtualmachineid=vm["id"], listall=True) == {}


def test_restore_requires_a_stopped_instance_then_succeeds(user, vm, gold_offering):
    user.assignVirtualMachineToBackupOffering(
        virtualmachineid=vm["id"], backupofferingid=gold_offering["id"], fetch_result=True
    )
    user.createBackup(virtualmachineid=vm["id"], fetch_result=True)
    backup = user.listBackups(virtualmachineid=vm["id"])["backup"][0]

    with pytest.raises(CloudStackApiException) as refused:
        user.restoreBackup(id=backup["id"], fetch_result=True)
    assert "stopped" in str(refused.value.error).lower()

    user.stopVirtualMachine(id=vm["id"], fetch_result=True)
    user.restoreBackup(id=backup["id"], fetch_result=True)
    restored = user.listVirtualMachines(id=vm["id"])["virtualmachine"][0]
    assert restored["state"] == "Stopped"


def test_errors_reach_the_client_with_cloudstack_codes(user, admin):
    with pytest.raises(CloudStackApiException) as missing:
        user.createBackup()
    assert missing.value.response.status_code == 431
    assert "virtualmachineid" in missing.value.error["errortext"]

    with pytest.raises(CloudStackApiException) as forbidden:
        user.importBackupOffering(
            zoneid="x", externalid="gold-policy", name="n", description="d",
            allowuserdrivenbackups=True,
        )
    assert forbidden.value.response.status_code == 401
