"""The web console in a real headless Chromium: the seed's B&R flows as root and as a plain user,
refusals showing the API's text, account isolation, a zone hot swap and the operator's view.
Screenshots of every flow go to target/console-screenshots/."""

import hashlib
import uuid
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from cs import CloudStackApiException
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

from conftest import BROWSER_TZ, DESKTOP, PHONE, SCREENSHOTS, TARGET, deploy, make_user, wait_until


class Console:
    def __init__(self, driver, server):
        self.d = driver
        self.url = server["url"]

    def login(self, username, password):
        d = self.d
        d.get(self.url)
        d.delete_all_cookies()
        d.execute_script("sessionStorage.clear()")
        d.get(self.url)
        user = self.wait("the login form", lambda: self.first("input[name=username]"))
        user.send_keys(username)
        # Keyboard only: Tab to the password, Enter submits.
        user.send_keys(Keys.TAB)
        active = d.switch_to.active_element
        assert active.get_attribute("name") == "password"
        active.send_keys(password, Keys.ENTER)
        self.wait("the session", lambda: username in self.first("#who").text if self.first("#who") else False)

    def wait(self, what, check, timeout=60):
        def probe(_):
            try:
                return check()
            except (StaleElementReferenceException, AttributeError):
                # The page re-rendered under us, or the element is not there yet.
                return False
        return WebDriverWait(self.d, timeout, poll_frequency=0.05).until(probe, message=f"waiting for {what}")

    def first(self, css, within=None):
        found = (within or self.d).find_elements(By.CSS_SELECTOR, css)
        return found[0] if found else None

    def go(self, view):
        self.d.get(f"{self.url}#/{view}")
        self.wait(f"the {view} view", lambda: self.first("main h1"))

    def settled(self):
        """Waits until no part of the page is still loading."""
        self.wait("the page to load", lambda: "Loading…" not in self.main_text())

    def nav(self):
        return [a.text for a in self.d.find_elements(By.CSS_SELECTOR, "#nav a")]

    def main_text(self):
        return self.first("main").text

    def buttons(self, label, within=None):
        return [b for b in (within or self.d).find_elements(By.TAG_NAME, "button")
                if b.text.strip() == label and b.is_displayed()]

    def click(self, label, within=None, row=None):
        """Clicks the button `label` (inside `within`, or inside the table row containing `row`),
        finding it again if the page re-renders in between."""
        def attempt():
            scope = within
            if row is not None:
                scope = next((tr for tr in self.d.find_elements(By.CSS_SELECTOR, "main tbody tr") if row in tr.text), None)
                if scope is None:
                    return False
            button = (self.buttons(label, scope) or [None])[0]
            if button is None:
                return False
            button.click()
            return True
        self.wait(f"button {label!r}", attempt)

    def row(self, text):
        """The table row containing `text`."""
        def find():
            for tr in self.d.find_elements(By.CSS_SELECTOR, "main tbody tr"):
                if text in tr.text:
                    return tr
            return None
        return self.wait(f"a row with {text!r}", find)

    def clear_tasks(self):
        self.d.execute_script("document.getElementById('tasks').replaceChildren()")

    def tasks_finished(self, count=1):
        """Waits until `count` operations have ended; returns their (class, text) pairs."""
        def ended():
            rows = self.d.find_elements(By.CSS_SELECTOR, "#tasks .task")
            done = [r for r in rows if "running" not in r.get_attribute("class")]
            return done if len(done) >= count and len(done) == len(rows) else False
        return [(r.get_attribute("class"), r.text) for r in self.wait("operations to end", ended)]

    def expect_ok(self, count=1):
        results = self.tasks_finished(count)
        assert all("ok" in cls for cls, _ in results), results
        self.clear_tasks()

    def confirm(self, ok_label):
        dialog = self.wait("the dialog", lambda: self.first("dialog[open]"))
        text = dialog.text
        self.click(ok_label, dialog)
        return text

    def message(self, kind, containing=""):
        """The text of the first `kind` message (ok/error) on the page that contains `containing`."""
        def find():
            texts = [m.text for m in self.d.find_elements(By.CSS_SELECTOR, f"main .msg.{kind}")]
            return next((t for t in texts if containing in t), None)
        return self.wait(f"a {kind} message with {containing!r}", find)

    def shot(self, name, phone=False):
        """A screenshot of the whole page (capped at 4000 px tall) at 1280 px or phone width."""
        width, height = PHONE if phone else DESKTOP
        self.d.set_window_size(width, height)
        full = self.d.execute_script("return document.documentElement.scrollHeight")
        self.d.set_window_size(width, min(max(height, full + 140), 4000))
        self.d.save_screenshot(str(SCREENSHOTS / f"{name}{'-phone' if phone else ''}.png"))
        self.d.set_window_size(*DESKTOP)


@pytest.fixture()
def console(browser, server):
    return Console(browser, server)


def enable_zone(admin, name, provider="dummy"):
    zone = admin.createZone(name=name)["zone"]
    admin.updateConfiguration(name="backup.framework.enabled", value="true", zoneid=zone["id"])
    admin.updateConfiguration(name="backup.framework.provider.plugin", value=provider, zoneid=zone["id"])
    return zone


def scripted_setting(admin, key):
    """The scripted test double's setting ending in `key` (its full name comes from the provider)."""
    provider = admin.listBackupProviders(name="scripted")["providers"][0]
    return next(x["name"] for x in provider["settings"] if x["name"].endswith(f".{key}"))


def policy_description(admin, zone, index):
    return admin.listBackupProviderOfferings(zoneid=zone["id"])["backupoffering"][index - 1]["description"]


def import_offering(admin, zone, index=0, name=None):
    policy = admin.listBackupProviderOfferings(zoneid=zone["id"])["backupoffering"][index]
    return admin.importBackupOffering(
        zoneid=zone["id"], externalid=policy["externalid"], name=name or policy["name"],
        description=policy["description"], allowuserdrivenbackups=True, fetch_result=True,
    )["backupoffering"]


@pytest.fixture(scope="session")
def user_offering(admin, zone):
    return import_offering(admin, zone, 0, "Gold for users")


def test_the_first_start_password_is_printed_once_and_logs_the_admin_in(server, console):
    printed = (server["data_dir"] / "stdout.log").read_text()
    assert printed.count(server["password"]) == 1
    assert server["url"] in printed
    console.login("admin", server["password"])
    assert {"Operations", "Instances", "Backups", "Backup offerings", "Settings"} <= set(console.nav())
    console.shot("login-admin")


def test_a_wrong_password_shows_the_api_error_text(server, console):
    console.d.get(server["url"])
    console.d.execute_script("sessionStorage.clear()")
    console.d.get(server["url"])
    user = console.wait("the login form", lambda: console.first("input[name=username]"))
    user.send_keys("admin")
    console.first("input[name=password]").send_keys("not-the-password", Keys.ENTER)
    text = console.wait("the error", lambda: console.first(".login .msg.error")).text
    assert "Failed to authenticate user admin" in text
    console.shot("login-refused")


def test_root_imports_lists_and_deletes_offerings(admin, server, console):
    zone = enable_zone(admin, f"import-{uuid.uuid4().hex[:6]}")
    console.login("admin", server["password"])
    console.go("offerings")
    for index, name in [(1, "Gold (console)"), (2, "Silver (console)")]:
        Select(console.first("select[name=zoneid]")).select_by_visible_text(zone["name"])
        policy = console.wait("the provider's policies", lambda: (
            (el := console.first("select[name=externalid]")).is_enabled() and len(el.find_elements(By.TAG_NAME, "option")) > 2 and el))
        Select(policy).select_by_index(index)
        field = console.first("input[name=name]")
        field.clear()
        field.send_keys(name)
        assert console.first("input[name=description]").get_attribute("value") == policy_description(admin, zone, index)
        console.click("Import Backup Offering")
        console.expect_ok()
        console.row(name)
    console.shot("offerings-imported")
    console.shot("offerings-imported", phone=True)
    listed = {o["name"]: o for o in admin.listBackupOfferings(zoneid=zone["id"])["backupoffering"]}
    assert {"Gold (console)", "Silver (console)"} <= set(listed)
    assert listed["Gold (console)"]["allowuserdrivenbackups"] is True

    console.click("Delete", row="Silver (console)")
    assert "Silver (console)" in console.confirm("Delete")
    console.wait("the row to go", lambda: not any(
        "Silver (console)" in tr.text for tr in console.d.find_elements(By.CSS_SELECTOR, "main tbody tr")))
    remaining = [o["name"] for o in admin.listBackupOfferings(zoneid=zone["id"]).get("backupoffering", [])]
    assert remaining == ["Gold (console)"]
    console.shot("offerings-deleted")


def test_a_user_backs_up_schedules_restores_and_deletes(admin, server, zone, user_offering, console):
    alice = make_user(admin, server, "alice")
    vm = deploy(alice["cs"], admin, zone, f"web-{uuid.uuid4().hex[:6]}")
    spare = deploy(alice["cs"], admin, zone, f"spare-{uuid.uuid4().hex[:6]}")
    console.login(alice["name"], alice["password"])
    nav = console.nav()
    assert "Operations" not in nav and "Settings" not in nav
    console.go("instances")
    console.wait("the instance's link", lambda: (
        console.d.find_elements(By.LINK_TEXT, vm["name"]) or [None])[0]).click()
    console.wait("the instance page", lambda: vm["name"] in console.first("main h1").text)

    # Assign to the offering.
    Select(console.wait("the offerings", lambda: (
        (el := console.first("select[name=backupofferingid]")) and "Gold for users" in el.text and el)
    )).select_by_visible_text("Gold for users")
    console.click("Assign")
    console.expect_ok()
    console.wait("the assignment", lambda: "Assigned to" in console.main_text())
    console.shot("instance-assigned")

    # Create Backup.
    console.click("Create Backup")
    console.expect_ok()
    console.row("BackedUp")
    console.shot("instance-backed-up")
    console.shot("instance-backed-up", phone=True)

    # Backup Schedule: daily 02:30 Berlin time, keep 5.
    Select(console.first("select[name=intervaltype]")).select_by_value("DAILY")
    console.d.execute_script("arguments[0].value = '02:30'", console.first("input[name=time]"))
    Select(console.first("select[name=timezone]")).select_by_value("Europe/Berlin")
    keep = console.first("input[name=maxbackups]")
    keep.clear()
    keep.send_keys("5")
    console.click("Configure")
    assert console.message("ok", "Schedule saved. Next run: ")
    schedule = alice["cs"].listBackupSchedule(virtualmachineid=vm["id"])["backupschedule"][0]
    assert (schedule["schedule"], schedule["timezone"], schedule["maxbackups"]) == ("30:02", "Europe/Berlin", 5)
    row = console.row("Europe/Berlin")
    assert "30:02" in row.text and console.first(".nextrun", row).text
    tz = console.d.execute_script("return Intl.DateTimeFormat().resolvedOptions().timeZone")
    assert tz == BROWSER_TZ and f"Next run ({tz})" in console.main_text()
    next_run = datetime.strptime(schedule["nextrun"], "%Y-%m-%dT%H:%M:%S%z").astimezone(ZoneInfo(tz))
    shown = " ".join(console.first(".nextrun", row).text.split())
    assert shown == f"{next_run:%b} {next_run.day}, {next_run.year}, {next_run:%-I:%M %p}"
    console.shot("instance-schedule")

    # Restore: the instance runs, so the console offers to stop it first.
    console.click("Restore", row="BackedUp")
    assert "must be stopped" in console.confirm("Stop and restore")
    console.expect_ok(2)
    state = alice["cs"].listVirtualMachines(id=vm["id"])["virtualmachine"][0]["state"]
    assert state == "Stopped"
    console.wait("the stopped state", lambda: "Stopped" in console.first("main h1").text)
    console.shot("instance-restored")

    # Restore one volume and attach it to the spare instance.
    before = len(alice["cs"].listVolumes(virtualmachineid=spare["id"]).get("volume", []))
    console.click("Restore volume", row="BackedUp")
    dialog = console.wait("the dialog", lambda: console.first("dialog[open]"))
    Select(console.first("select[name=virtualmachineid]", dialog)).select_by_visible_text(f"{spare['name']} (Running)")
    console.shot("instance-restore-volume")
    console.click("Restore and attach", dialog)
    console.expect_ok()
    assert console.message("ok", "Volume restored and attached.")
    after = len(alice["cs"].listVolumes(virtualmachineid=spare["id"]).get("volume", []))
    assert after == before + 1

    # Create an instance from the backup.
    console.click("New instance", row="BackedUp")
    dialog = console.wait("the dialog", lambda: console.first("dialog[open]"))
    name = console.first("input[name=name]", dialog)
    name.clear()
    name.send_keys(f"{vm['name']}-copy")
    console.click("Create instance", dialog)
    console.expect_ok()
    assert console.message("ok", f"Created instance {vm['name']}-copy.")
    names = [v["name"] for v in alice["cs"].listVirtualMachines()["virtualmachine"]]
    assert f"{vm['name']}-copy" in names

    # Delete the backup.
    console.click("Delete", row="BackedUp")
    console.confirm("Delete")
    console.expect_ok()
    console.wait("the empty list", lambda: "No backups of this instance." in console.main_text())
    assert alice["cs"].listBackups(virtualmachineid=vm["id"]) == {}

    # Remove from the offering, forced explained.
    assert "Without “forced”" in console.main_text()
    console.first("input[name=forced]").click()
    console.click("Remove from offering")
    console.expect_ok()
    console.wait("the removal", lambda: "no backup offering" in console.main_text())
    assert "backupofferingid" not in alice["cs"].listVirtualMachines(id=vm["id"])["virtualmachine"][0]
    console.shot("instance-removed")
    console.shot("instance-removed", phone=True)


def test_a_refused_action_shows_the_api_error_text(admin, server, zone, console):
    offering = import_offering(admin, zone, 1, f"Busy {uuid.uuid4().hex[:4]}")
    owner = make_user(admin, server, "carol")
    vm = deploy(owner["cs"], admin, zone, f"busy-{uuid.uuid4().hex[:6]}")
    owner["cs"].assignVirtualMachineToBackupOffering(
        virtualmachineid=vm["id"], backupofferingid=offering["id"], fetch_result=True)
    with pytest.raises(CloudStackApiException) as refused:
        admin.deleteBackupOffering(id=offering["id"])
    expected = refused.value.error["errortext"]

    console.login("admin", server["password"])
    console.go("offerings")
    console.click("Delete", row=offering["name"])
    console.confirm("Delete")
    shown = console.wait("the error", lambda: console.first(".msg.error", console.row(offering["name"]))).text
    assert shown == expected
    console.shot("refused-delete-offering")
    owner["cs"].removeVirtualMachineFromBackupOffering(virtualmachineid=vm["id"], forced=True, fetch_result=True)


def test_a_user_never_sees_another_accounts_backups(admin, server, zone, user_offering, console):
    users = {}
    for who in ("dora", "erik"):
        u = make_user(admin, server, who)
        vm = deploy(u["cs"], admin, zone, f"{who}-{uuid.uuid4().hex[:6]}")
        u["cs"].assignVirtualMachineToBackupOffering(
            virtualmachineid=vm["id"], backupofferingid=user_offering["id"], fetch_result=True)
        u["cs"].createBackup(virtualmachineid=vm["id"], fetch_result=True)
        users[who] = (u, vm)
    dora, dora_vm = users["dora"]
    _, erik_vm = users["erik"]
    console.login(dora["name"], dora["password"])
    console.go("backups")
    console.row(dora_vm["name"])
    assert erik_vm["name"] not in console.main_text()
    console.shot("user-backups")
    console.go("instances")
    console.row(dora_vm["name"])
    assert erik_vm["name"] not in console.main_text()
    # Nothing the API would refuse a user is offered.
    console.go("offerings")
    console.row(user_offering["name"])
    assert not console.buttons("Delete") and not console.buttons("Import Backup Offering")
    console.shot("user-offerings")


def test_a_zone_hot_swap_made_in_the_console_shows_in_list_configurations(admin, server, console):
    zone = enable_zone(admin, f"swap-{uuid.uuid4().hex[:6]}")
    console.login("admin", server["password"])
    console.go("settings")
    Select(console.first("select[name=scope]")).select_by_visible_text(f"Zone {zone['name']}")
    console.settled()
    provider = console.wait("the zone's provider", lambda: (
        (el := console.first("select[name='backup.framework.provider.plugin']"))
        and Select(el).first_selected_option.get_attribute("value") == "dummy" and el))
    Select(provider).select_by_value("scripted")
    setting = provider.find_element(By.XPATH, "ancestor::div[@class='setting']")
    console.click("Save", setting)
    dialog = console.wait("the confirmation", lambda: console.first("dialog[open]"))
    console.wait("the summary", lambda: "offering(s)" in dialog.text)
    text = dialog.text
    assert f"Zone {zone['name']}" in text and "dummy" in text and "scripted 1.0.0" in text
    console.shot("settings-hot-swap-confirm")
    console.click("Swap provider", dialog)
    assert console.message("ok", "Saved: backup.framework.provider.plugin = scripted")
    values = [c["value"] for c in admin.listConfigurations(
        name="backup.framework.provider.plugin", zoneid=zone["id"])["configuration"]
        if c["name"] == "backup.framework.provider.plugin"]
    assert values == ["scripted"]
    console.shot("settings-hot-swapped")
    console.shot("settings-hot-swapped", phone=True)


def test_the_operators_view_shows_zones_providers_and_charts(admin, server, zone, console):
    # A sync pass over every zone (the loop runs one per `backup.framework.sync.interval`).
    interval = admin.listConfigurations(name="backup.framework.sync.interval")["configuration"][0]["value"]
    admin.updateConfiguration(name="backup.framework.sync.interval", value="1")
    try:
        passes = wait_until("a sync pass over zone1", lambda: [
            p for p in admin.listBackupSyncStatus(zoneid=zone["id"]).get("backupsyncstatus", [])
            if p["result"] == "ok"])
    finally:
        admin.updateConfiguration(name="backup.framework.sync.interval", value=interval)
    console.login("admin", server["password"])
    console.go("operations")
    zones = console.row("zone1")
    console.wait("the zone's health", lambda: "loaded" in zones.text)
    assert "dummy" in zones.text
    last_sync = zones.find_element(By.CSS_SELECTOR, "td.last-sync")
    assert last_sync.find_element(By.CSS_SELECTOR, ".badge.ok").text == "ok"
    assert passes[0]["provider"] == "dummy"
    dummy = next(TARGET.joinpath("providers").glob("*dummy*.wasm"))
    digest = hashlib.sha256(dummy.read_bytes()).hexdigest()
    console.wait("the provider's digest", lambda: digest in console.main_text())
    api = {p["name"]: p for p in admin.listBackupProviders()["providers"]}
    assert api["dummy"]["sha256"] == digest and api["dummy"]["witversion"]
    console.wait("three charts", lambda: len(console.d.find_elements(By.CSS_SELECTOR, "svg.chart")) == 3)
    assert not console.d.find_elements(By.CSS_SELECTOR, ".chart-card .msg.error")
    # Earlier tests made backups today: the per-day chart's data table counts them.
    today = console.d.execute_script(
        "const card = [...document.querySelectorAll('.chart-card')][1];"
        "return [...card.querySelectorAll('tbody tr:last-child td')].map((td) => td.textContent);")
    succeeded, _failed = (int(n) for n in today)
    assert succeeded >= 1
    console.shot("operations")
    console.shot("operations", phone=True)


def test_provider_settings_are_edited_per_zone_and_failures_link_to_their_events(admin, server, console):
    zone = enable_zone(admin, f"fail-{uuid.uuid4().hex[:6]}", provider="scripted")
    offering = import_offering(admin, zone, 0, f"Scripted {uuid.uuid4().hex[:4]}")
    vm = deploy(admin, admin, zone, f"doomed-{uuid.uuid4().hex[:6]}")
    admin.assignVirtualMachineToBackupOffering(
        virtualmachineid=vm["id"], backupofferingid=offering["id"], fetch_result=True)

    # The provider's own setting, for this zone only, through the console.
    console.login("admin", server["password"])
    console.go("settings")
    Select(console.first("select[name=scope]")).select_by_visible_text(f"Zone {zone['name']}")
    console.settled()
    mode_name = scripted_setting(admin, "mode")
    mode = console.wait("the provider's setting", lambda: console.first(f"input[name='{mode_name}']"))
    mode.clear()
    mode.send_keys("fail")
    console.click("Save", mode.find_element(By.XPATH, "ancestor::div[@class='setting']"))
    assert console.message("ok", f"Saved: {mode_name} = fail")
    values = [c["value"] for c in admin.listConfigurations(name=mode_name, zoneid=zone["id"])["configuration"]
              if c["name"] == mode_name]
    assert values == ["fail"]
    console.shot("settings-provider-own")

    with pytest.raises(CloudStackApiException) as failed:
        admin.createBackup(virtualmachineid=vm["id"], fetch_result=True)
    reason = failed.value.error["errortext"]

    console.go("operations")
    link = console.wait("the failure group", lambda: next(
        (a for a in console.d.find_elements(By.CSS_SELECTOR, "main li a")
         if "BACKUP.CREATE" in a.text and reason in a.find_element(By.XPATH, "..").text), None))
    group = link.find_element(By.XPATH, "..").text
    # Grouped by provider and reason: the event names the provider that failed.
    assert link.find_element(By.XPATH, "../strong").text == "scripted", group
    events = admin.listEvents(type="BACKUP.CREATE", level="ERROR", listall=True)["event"]
    assert any(e.get("provider") == "scripted" and reason in e["description"] for e in events), events
    console.shot("operations-failures")
    link.click()
    console.wait("the events", lambda: console.first("main h1").text == "Events")
    row = console.row(vm["name"])
    assert "ERROR" in row.text and "BACKUP.CREATE" in row.text
    console.shot("events-failures")


def test_a_providers_secret_setting_is_masked_and_write_only(admin, server, console):
    name = "backup.plugin.veeam.password"
    secret = f"s3cret-{uuid.uuid4().hex}"
    console.login("admin", server["password"])
    console.go("settings")
    Select(console.first("select[name=scope]")).select_by_visible_text("Zone zone1")
    console.settled()
    field = console.wait("the secret setting", lambda: console.first(f"input[name='{name}']"))
    assert field.get_attribute("type") == "password"
    assert field.get_attribute("value") == ""
    # Saving nothing is refused: the current value is never shown, so it cannot be "kept".
    console.click("Save", field.find_element(By.XPATH, "ancestor::div[@class='setting']"))
    assert console.message("error", "the current one is never shown")
    field.send_keys(secret)
    console.click("Save", field.find_element(By.XPATH, "ancestor::div[@class='setting']"))
    assert console.message("ok", f"Saved: {name} = (hidden)")
    # Stored (the API masks it) and never shown again, not even after a reload.
    zone1 = admin.listZones(name="zone1")["zone"][0]["id"]
    values = [c["value"] for c in admin.listConfigurations(name=name, zoneid=zone1)["configuration"]
              if c["name"] == name]
    assert values == ["*****"], values
    console.go("settings")
    Select(console.first("select[name=scope]")).select_by_visible_text("Zone zone1")
    console.settled()
    field = console.wait("the secret setting again", lambda: console.first(f"input[name='{name}']"))
    assert field.get_attribute("type") == "password"
    assert field.get_attribute("value") == ""
    assert "set, hidden" in field.get_attribute("placeholder")
    assert secret not in console.d.page_source
    console.shot("settings-secret")


def test_operations_in_flight_show_their_command_and_age(admin, server, console):
    zone = enable_zone(admin, f"slow-{uuid.uuid4().hex[:6]}", provider="scripted")
    offering = import_offering(admin, zone, 0, f"Slow {uuid.uuid4().hex[:4]}")
    vm = deploy(admin, admin, zone, f"slow-{uuid.uuid4().hex[:6]}")
    admin.assignVirtualMachineToBackupOffering(
        virtualmachineid=vm["id"], backupofferingid=offering["id"], fetch_result=True)
    # The provider keeps every operation pending for ten minutes: the backup's job stays in flight.
    admin.updateConfiguration(name=scripted_setting(admin, "op-seconds"), value="600", zoneid=zone["id"])
    started = admin.createBackup(virtualmachineid=vm["id"])
    job = admin.queryAsyncJobResult(jobid=started["jobid"])
    assert job["jobstatus"] == 0

    console.login("admin", server["password"])
    console.go("operations")
    item = console.wait("the job in flight", lambda: next(
        (li for li in console.d.find_elements(By.CSS_SELECTOR, "main li") if "createBackup" in li.text), None))
    assert "running for" in item.text and " s" in item.text
    console.shot("operations-in-flight")
