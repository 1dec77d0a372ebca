// bnr console: a client of the public CloudStack API at /client/api (same origin).
// It logs in with `login`, keeps the session key in sessionStorage (the tab's lifetime, like
// CloudStack's UI keeps it for the browser session) and sends `sessionkey` with every call.
// What it offers follows `listApis`: a button is shown only when its command is callable.

const API = '/client/api';
const PAGE_SIZE = 20;
const POLL_FIRST_MS = 200;
const POLL_MAX_MS = 2000;
const JOB_WAIT_LIMIT_MS = 30 * 60 * 1000;
const SESSION_STORE = 'bnr.session';
const DAY_MS = 86400000;

const S = { key: null, user: null, apis: new Set(), zones: [] };

class ApiError extends Error {
  constructor(code, text) {
    super(text);
    this.code = code;
  }
}

// ---------------------------------------------------------------- API

async function api(command, params = {}) {
  const body = new URLSearchParams();
  body.set('command', command);
  body.set('response', 'json');
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') body.set(k, String(v));
  }
  if (S.key) body.set('sessionkey', S.key);
  let resp;
  try {
    resp = await fetch(API, { method: 'POST', body, credentials: 'same-origin' });
  } catch (e) {
    throw new ApiError(0, `The server cannot be reached (${e.message})`);
  }
  let data = null;
  try {
    data = await resp.json();
  } catch {
    data = null;
  }
  const inner = (data && Object.values(data)[0]) || {};
  if (!resp.ok || inner.errorcode) {
    const text = inner.errortext || resp.headers.get('X-Description') || `HTTP ${resp.status}`;
    if (resp.status === 401 && command !== 'login' && /verify user credentials/.test(text)) {
      sessionEnded('Your session has ended. Please log in again.');
    }
    throw new ApiError(inner.errorcode || resp.status, text);
  }
  return inner;
}

const can = (command) => S.apis.has(command);
const isAdmin = () => S.user && S.user.type === '1';
const listAll = () => (isAdmin() || (S.user && S.user.type === '2') ? { listall: true } : {});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Starts an async command and follows it in the operations panel until it ends.
async function runJob(label, command, params) {
  const task = Tasks.add(label);
  try {
    const started = await api(command, params);
    const jobid = started.jobid;
    const began = Date.now();
    let wait = POLL_FIRST_MS;
    while (Date.now() - began < JOB_WAIT_LIMIT_MS) {
      const job = await api('queryAsyncJobResult', { jobid });
      if (job.jobstatus === 1) {
        task.done();
        return job.jobresult || {};
      }
      if (job.jobstatus === 2) {
        const text = (job.jobresult && job.jobresult.errortext) || `failed with code ${job.jobresultcode}`;
        throw new ApiError(job.jobresultcode, text);
      }
      task.progress(Date.now() - began);
      await sleep(wait);
      wait = Math.min(wait * 2, POLL_MAX_MS);
    }
    throw new ApiError(0, 'Still running after 30 minutes; see Operations for its state');
  } catch (e) {
    task.failed(e.message);
    throw e;
  }
}

// ---------------------------------------------------------------- DOM helpers

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'value') el.value = v;
    else if (k === 'checked') el.checked = !!v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : String(kid));
  }
  return el;
}

let idCounter = 0;
const uid = (p) => `${p}-${++idCounter}`;

// A labelled control: <label for> + the control (+ an optional hint read by screen readers).
function field(label, control, hint) {
  if (!control.id) control.id = uid('f');
  const parts = [h('label', { for: control.id }, label), control];
  if (hint) {
    const hid = uid('hint');
    control.setAttribute('aria-describedby', hid);
    parts.push(h('p', { class: 'hint', id: hid }, hint));
  }
  return h('div', { class: 'field' }, parts);
}

function select(name, options, value) {
  return h('select', { name },
    options.map(([v, t]) => h('option', { value: v, selected: v === value }, t)));
}

function message(kind, text) {
  return h('p', { class: `msg ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text);
}

// Runs `action` for a button; shows the API's error text next to it when it fails.
function act(button, out, action) {
  button.addEventListener('click', async (ev) => {
    ev.preventDefault();
    out.replaceChildren();
    button.disabled = true;
    try {
      const note = await action();
      if (note) out.append(message('ok', note));
    } catch (e) {
      out.append(message('error', e.message));
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

function parseDate(s) {
  if (!s) return null;
  const d = new Date(String(s).replace(/([+-]\d\d)(\d\d)$/, '$1:$2'));
  return Number.isNaN(d.getTime()) ? null : d;
}

const userZone = () => Intl.DateTimeFormat().resolvedOptions().timeZone;
function fmtDate(s) {
  const d = parseDate(s);
  return d ? d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' }) : '';
}
function fmtBytes(n) {
  if (n === undefined || n === null || n === '') return '';
  let v = Number(n);
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
}
function fmtAge(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${Math.round(s / 3600)} h`;
}
const isoDay = (d) => d.toISOString().slice(0, 10);
const apiDateTime = (d) => d.toISOString().slice(0, 19).replace('T', ' ');

function section(title, ...kids) {
  const id = uid('sec');
  return h('section', { class: 'card', 'aria-labelledby': id }, h('h2', { id }, title), kids);
}

// A table over a list command that pages with `page`/`pagesize`; `count` is the total.
function pagedTable({ command, params, itemKey, columns, caption, empty }) {
  const wrap = h('div', { class: 'paged' });
  let page = 1;
  let generation = 0;
  const load = async () => {
    const mine = ++generation;
    wrap.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
    let res;
    try {
      res = await api(command, { ...params, page, pagesize: PAGE_SIZE });
    } catch (e) {
      if (mine === generation) wrap.replaceChildren(message('error', e.message));
      return;
    }
    if (mine !== generation) return; // a newer page was asked for meanwhile
    const items = res[itemKey] || [];
    const total = res.count || 0;
    const pages = Math.max(1, Math.ceil(total / PAGE_SIZE));
    if (!items.length) {
      wrap.replaceChildren(h('p', { class: 'muted' }, empty || 'Nothing here yet.'));
      return;
    }
    const table = h('table', {},
      h('caption', {}, caption),
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, c.title)))),
      h('tbody', {}, items.map((it) => h('tr', {}, columns.map((c) => h('td', { 'data-label': c.title }, c.cell(it)))))));
    const prev = h('button', { type: 'button', disabled: page <= 1 }, 'Previous');
    const next = h('button', { type: 'button', disabled: page >= pages }, 'Next');
    prev.onclick = () => { page--; load(); };
    next.onclick = () => { page++; load(); };
    wrap.replaceChildren(h('div', { class: 'scroll' }, table),
      h('nav', { class: 'pager', 'aria-label': `${caption} pages` }, prev,
        h('span', {}, `Page ${page} of ${pages} · ${total} in all`), next));
  };
  wrap.reload = load;
  load();
  return wrap;
}

// A modal confirmation; resolves true when confirmed. `body` explains what will happen.
function confirmDialog(title, body, okLabel, extra) {
  const dlg = document.getElementById('dialog');
  return new Promise((resolve) => {
    const ok = h('button', { type: 'submit', class: 'primary', value: 'ok' }, okLabel);
    const cancel = h('button', { type: 'button' }, 'Cancel');
    const form = h('form', { method: 'dialog' }, h('h2', {}, title), body, extra || null,
      h('div', { class: 'row' }, ok, cancel));
    cancel.onclick = () => dlg.close('cancel');
    dlg.replaceChildren(form);
    dlg.onclose = () => resolve(dlg.returnValue === 'ok');
    dlg.returnValue = '';
    dlg.showModal();
    ok.focus();
  });
}

// ---------------------------------------------------------------- operations panel

const Tasks = {
  add(label) {
    const panel = document.getElementById('tasks');
    const status = h('span', { class: 'state' }, 'started');
    const close = h('button', { type: 'button', class: 'link', 'aria-label': `Dismiss ${label}` }, '×');
    const row = h('div', { class: 'task running' }, h('strong', {}, label), ' ', status, close);
    close.onclick = () => row.remove();
    panel.prepend(row);
    return {
      progress(ms) { status.textContent = `running for ${fmtAge(ms)}…`; },
      done() { row.className = 'task ok'; status.textContent = 'succeeded'; },
      failed(text) { row.className = 'task error'; status.textContent = `failed: ${text}`; },
    };
  },
};

// ---------------------------------------------------------------- session

function sessionEnded(text) {
  S.key = null;
  S.user = null;
  sessionStorage.removeItem(SESSION_STORE);
  showLogin(text);
}

async function startSession(login) {
  S.key = login.sessionkey;
  S.user = login;
  sessionStorage.setItem(SESSION_STORE, JSON.stringify(login));
  const apis = await api('listApis');
  S.apis = new Set((apis.api || []).map((a) => a.name));
  const zones = await api('listZones');
  S.zones = zones.zone || [];
  renderChrome();
  route();
}

function showLogin(note) {
  document.getElementById('nav').replaceChildren();
  document.getElementById('who').replaceChildren();
  const user = h('input', { name: 'username', autocomplete: 'username', required: true });
  const pass = h('input', { name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const domain = h('input', { name: 'domain', value: '/', autocomplete: 'off' });
  const out = h('div', {}, note ? message('error', note) : null);
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Log in');
  const form = h('form', { class: 'card login', 'aria-labelledby': 'login-title' },
    h('h1', { id: 'login-title' }, 'Log in to bnr'),
    field('User name', user), field('Password', pass),
    field('Domain', domain, 'The domain path, / for ROOT.'), submit, out);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    out.replaceChildren();
    submit.disabled = true;
    try {
      const login = await api('login', { username: user.value, password: pass.value, domain: domain.value });
      await startSession(login);
    } catch (e) {
      out.append(message('error', e.message));
    } finally {
      submit.disabled = false;
    }
  });
  main().replaceChildren(form);
  user.focus();
}

// ---------------------------------------------------------------- chrome and routing

const VIEWS = [
  { path: 'operations', title: 'Operations', needs: 'listBackupProviders', view: viewOperations },
  { path: 'instances', title: 'Instances', needs: 'listVirtualMachines', view: viewInstances },
  { path: 'backups', title: 'Backups', needs: 'listBackups', view: viewBackups },
  { path: 'offerings', title: 'Backup offerings', needs: 'listBackupOfferings', view: viewOfferings },
  { path: 'settings', title: 'Settings', needs: 'updateConfiguration', view: viewSettings },
  { path: 'events', title: 'Events', needs: 'listEvents', view: viewEvents },
];

const main = () => document.getElementById('main');

function renderChrome() {
  const nav = document.getElementById('nav');
  nav.replaceChildren(h('ul', {}, VIEWS.filter((v) => can(v.needs))
    .map((v) => h('li', {}, h('a', { href: `#/${v.path}`, 'data-view': v.path }, v.title)))));
  const logout = h('button', { type: 'button', class: 'link' }, 'Log out');
  logout.onclick = async () => {
    try { await api('logout'); } catch { /* the session is dropped either way */ }
    sessionEnded();
  };
  document.getElementById('who').replaceChildren(
    h('span', {}, `${S.user.username} (${S.user.account})`), ' ', logout);
}

function route() {
  if (!S.key) return;
  const [, name = '', arg = ''] = location.hash.split('/');
  const [path, query] = name.split('?');
  const params = new URLSearchParams(query || location.hash.split('?')[1] || '');
  for (const a of document.querySelectorAll('#nav a')) {
    a.toggleAttribute('aria-current', a.dataset.view === path || (path === 'instance' && a.dataset.view === 'instances'));
  }
  const target = main();
  target.replaceChildren();
  if (path === 'instance' && arg) {
    viewInstance(target, decodeURIComponent(arg.split('?')[0]));
  } else {
    const v = VIEWS.find((x) => x.path === path && can(x.needs)) || VIEWS.find((x) => can(x.needs));
    if (!v) {
      target.append(message('error', 'Your account may not use any part of this console.'));
      return;
    }
    document.title = `${v.title} · bnr`;
    v.view(target, params);
  }
  target.focus({ preventScroll: true });
}

// ---------------------------------------------------------------- instances

function instanceLink(id, name) {
  return id ? h('a', { href: `#/instance/${encodeURIComponent(id)}` }, name || id) : name || '';
}

function viewInstances(el) {
  el.append(h('h1', {}, 'Instances'));
  el.append(pagedTable({
    command: 'listVirtualMachines', params: listAll(), itemKey: 'virtualmachine', caption: 'Instances',
    empty: 'No instances.',
    columns: [
      { title: 'Name', cell: (v) => instanceLink(v.id, v.displayname || v.name) },
      { title: 'State', cell: (v) => h('span', { class: `badge ${v.state}` }, v.state) },
      { title: 'Zone', cell: (v) => v.zonename },
      { title: 'Backup offering', cell: (v) => v.backupofferingname || '—' },
      { title: 'Account', cell: (v) => v.account },
    ],
  }));
}

async function viewInstance(el, id) {
  el.append(h('p', {}, h('a', { href: '#/instances' }, '← Instances')));
  let vm;
  try {
    vm = ((await api('listVirtualMachines', { id, ...listAll() })).virtualmachine || [])[0];
  } catch (e) {
    el.append(message('error', e.message));
    return;
  }
  if (!vm) {
    el.append(message('error', 'No such instance, or it is not yours.'));
    return;
  }
  document.title = `${vm.name} · bnr`;
  const refresh = () => route();
  const out = h('div', { class: 'out' });
  const actions = h('div', { class: 'row' });
  if (vm.state === 'Stopped' && can('startVirtualMachine')) {
    actions.append(act(h('button', { type: 'button' }, 'Start'), out, async () => {
      await runJob(`Start ${vm.name}`, 'startVirtualMachine', { id: vm.id });
      refresh();
    }));
  }
  if (vm.state === 'Running' && can('stopVirtualMachine')) {
    actions.append(act(h('button', { type: 'button' }, 'Stop'), out, async () => {
      await runJob(`Stop ${vm.name}`, 'stopVirtualMachine', { id: vm.id });
      refresh();
    }));
  }
  el.append(h('h1', {}, vm.displayname || vm.name, ' ', h('span', { class: `badge ${vm.state}` }, vm.state)),
    h('p', { class: 'muted' }, `Zone ${vm.zonename} · account ${vm.account} · `,
      vm.backupofferingname ? `backup offering ${vm.backupofferingname}` : 'no backup offering'),
    actions, out);

  // Ad-hoc backups and schedules of a user are refused when the offering does not allow them.
  let userDriven = isAdmin();
  if (vm.backupofferingid && !userDriven) {
    const offering = ((await api('listBackupOfferings', { id: vm.backupofferingid }).catch(() => ({}))).backupoffering || [])[0];
    userDriven = !!(offering && offering.allowuserdrivenbackups);
  }
  el.append(offeringSection(vm, refresh));
  el.append(backupsSection(vm, refresh, userDriven));
  if (vm.backupofferingid && can('listBackupSchedule')) el.append(scheduleSection(vm, userDriven));
}

function offeringSection(vm, refresh) {
  const out = h('div', { class: 'out' });
  const sec = section('Backup offering');
  if (vm.backupofferingid) {
    sec.append(h('p', {}, 'Assigned to ', h('strong', {}, vm.backupofferingname), '.'));
    if (can('removeVirtualMachineFromBackupOffering')) {
      const forced = h('input', { type: 'checkbox', name: 'forced' });
      sec.append(h('div', { class: 'check' }, forced,
        h('label', { for: forced.id = uid('forced') }, 'Forced')),
      h('p', { class: 'hint' }, 'Without “forced” the removal is refused while the instance still has backups. ' +
        'With it the instance leaves the offering anyway; its schedules are deleted, and with some providers ' +
        'its backups are deleted on the provider too.'));
      sec.append(act(h('button', { type: 'button' }, 'Remove from offering'), out, async () => {
        await runJob(`Remove ${vm.name} from ${vm.backupofferingname}`, 'removeVirtualMachineFromBackupOffering',
          { virtualmachineid: vm.id, forced: forced.checked ? 'true' : undefined });
        refresh();
      }));
    }
  } else if (can('assignVirtualMachineToBackupOffering')) {
    const choice = h('select', { name: 'backupofferingid' }, h('option', { value: '' }, 'Loading…'));
    api('listBackupOfferings', { zoneid: vm.zoneid, pagesize: 500 }).then((r) => {
      const list = r.backupoffering || [];
      choice.replaceChildren(...(list.length ? list.map((o) => h('option', { value: o.id }, o.name))
        : [h('option', { value: '' }, 'No offering in this zone')]));
    }, (e) => out.append(message('error', e.message)));
    sec.append(field('Offering', choice), act(h('button', { type: 'button', class: 'primary' }, 'Assign'), out, async () => {
      await runJob(`Assign ${vm.name}`, 'assignVirtualMachineToBackupOffering',
        { virtualmachineid: vm.id, backupofferingid: choice.value });
      refresh();
    }));
  } else {
    sec.append(h('p', { class: 'muted' }, 'No backup offering.'));
  }
  sec.append(out);
  return sec;
}

function backupsSection(vm, refresh, userDriven) {
  const out = h('div', { class: 'out' });
  const sec = section('Backups');
  let table;
  if (vm.backupofferingid && userDriven && can('createBackup')) {
    sec.append(act(h('button', { type: 'button', class: 'primary' }, 'Create Backup'), out, async () => {
      await runJob(`Back up ${vm.name}`, 'createBackup', { virtualmachineid: vm.id });
      table.reload();
      return 'Backup created.';
    }));
  }
  sec.append(out);
  table = pagedTable({
    command: 'listBackups', params: { virtualmachineid: vm.id, ...listAll() }, itemKey: 'backup',
    caption: `Backups of ${vm.name}`, empty: 'No backups of this instance.',
    columns: backupColumns(false, (b, cellOut) => backupActions(vm, b, cellOut, refresh)),
  });
  sec.append(table);
  return sec;
}

function backupColumns(withInstance, actions) {
  const cols = [
    { title: 'Created', cell: (b) => fmtDate(b.created) },
    { title: 'State', cell: (b) => h('span', { class: `badge ${b.status}` }, b.status) },
    { title: 'Size', cell: (b) => fmtBytes(b.size) },
    { title: 'Protected', cell: (b) => fmtBytes(b.virtualsize) },
    { title: 'Type', cell: (b) => b.type || '' },
  ];
  if (withInstance) {
    cols.unshift({ title: 'Instance', cell: (b) => instanceLink(b.virtualmachineid, b.virtualmachinename) });
    cols.push({ title: 'Account', cell: (b) => b.account });
  }
  if (actions) {
    cols.push({ title: 'Actions', cell: (b) => { const o = h('div', { class: 'out' }); return [actions(b, o), o]; } });
  }
  return cols;
}

function backupActions(vm, b, out, refresh) {
  const row = h('div', { class: 'row actions' });
  const label = `${vm.name} ${fmtDate(b.created)}`;
  if (can('restoreBackup')) {
    row.append(act(h('button', { type: 'button' }, 'Restore'), out, async () => {
      const current = ((await api('listVirtualMachines', { id: vm.id, ...listAll() })).virtualmachine || [])[0] || vm;
      if (!['Stopped', 'Destroyed'].includes(current.state)) {
        const stop = can('stopVirtualMachine');
        const ok = await confirmDialog('The instance must be stopped',
          h('p', {}, `${vm.name} is ${current.state}. A restore replaces its disks and needs the instance stopped.` +
            (stop ? ' Stop it now and then restore?' : '')),
          stop ? 'Stop and restore' : 'Close');
        if (!ok || !stop) return null;
        await runJob(`Stop ${vm.name}`, 'stopVirtualMachine', { id: vm.id });
      } else {
        const ok = await confirmDialog('Restore this backup?',
          h('p', {}, `The disks of ${vm.name} are replaced with the backup of ${fmtDate(b.created)}.`), 'Restore');
        if (!ok) return null;
      }
      await runJob(`Restore ${label}`, 'restoreBackup', { id: b.id });
      refresh();
      return 'Restored.';
    }));
  }
  if (can('restoreVolumeFromBackupAndAttachToVM')) {
    row.append(act(h('button', { type: 'button' }, 'Restore volume'), out, () => restoreVolume(vm, b)));
  }
  if (can('createVMFromBackup')) {
    row.append(act(h('button', { type: 'button' }, 'New instance'), out, async () => {
      const name = h('input', { name: 'name', value: `${vm.name}-restored`, maxlength: 63 });
      const ok = await confirmDialog('Create an instance from this backup',
        h('p', {}, `A new instance in ${vm.zonename} gets the disks of the backup of ${fmtDate(b.created)}.`),
        'Create instance', field('Name', name));
      if (!ok) return null;
      const res = await runJob(`New instance from ${label}`, 'createVMFromBackup',
        { backupid: b.id, zoneid: vm.zoneid, name: name.value });
      const created = res.virtualmachine;
      return created ? `Created instance ${created.name}.` : 'Created.';
    }));
  }
  if (can('deleteBackup')) {
    row.append(act(h('button', { type: 'button', class: 'danger' }, 'Delete'), out, async () => {
      const ok = await confirmDialog('Delete this backup?',
        h('p', {}, `The backup of ${vm.name} taken ${fmtDate(b.created)} is deleted on the provider.`), 'Delete');
      if (!ok) return null;
      await runJob(`Delete backup ${label}`, 'deleteBackup', { id: b.id });
      refresh();
      return 'Deleted.';
    }));
  }
  return row;
}

async function restoreVolume(vm, b) {
  let volumes = [];
  try {
    volumes = JSON.parse(b.volumes || '[]');
  } catch {
    volumes = [];
  }
  const vol = select('volumeid', volumes.map((v) => [v.uuid, `${v.type} ${fmtBytes(v.size)} (${v.uuid.slice(0, 8)})`]));
  const target = h('select', { name: 'virtualmachineid' });
  const vms = (await api('listVirtualMachines', { zoneid: vm.zoneid, pagesize: 200, ...listAll() })).virtualmachine || [];
  target.replaceChildren(...vms.map((v) => h('option', { value: v.id, selected: v.id === vm.id }, `${v.name} (${v.state})`)));
  const ok = await confirmDialog('Restore one volume',
    h('p', {}, 'The volume is restored from the backup as a new volume and attached to the chosen instance.'),
    'Restore and attach', [field('Volume', vol), field('Attach to instance', target)]);
  if (!ok) return null;
  await runJob(`Restore volume of ${vm.name}`, 'restoreVolumeFromBackupAndAttachToVM',
    { backupid: b.id, volumeid: vol.value, virtualmachineid: target.value });
  return 'Volume restored and attached.';
}

const WEEKDAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];

function scheduleSection(vm, userDriven) {
  const sec = section('Backup schedule');
  const list = h('div');
  const out = h('div', { class: 'out' });
  const loadList = async () => {
    list.replaceChildren();
    let items = [];
    try {
      items = (await api('listBackupSchedule', { virtualmachineid: vm.id, ...listAll() })).backupschedule || [];
    } catch (e) {
      list.append(message('error', e.message));
      return;
    }
    if (!items.length) {
      list.append(h('p', { class: 'muted' }, 'No schedule.'));
      return;
    }
    list.append(h('div', { class: 'scroll' }, h('table', {}, h('caption', {}, 'Schedules'),
      h('thead', {}, h('tr', {}, ['Interval', 'Schedule', 'Time zone', 'Max backups', `Next run (${userZone()})`, '']
        .map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, items.map((s) => {
        const cellOut = h('div', { class: 'out' });
        const del = userDriven && can('deleteBackupSchedule') ? act(h('button', { type: 'button', class: 'danger' }, 'Delete'), cellOut, async () => {
          await api('deleteBackupSchedule', { id: s.id });
          loadList();
        }) : null;
        return h('tr', {}, h('td', { 'data-label': 'Interval' }, s.intervaltype), h('td', { 'data-label': 'Schedule' }, s.schedule),
          h('td', { 'data-label': 'Time zone' }, s.timezone), h('td', { 'data-label': 'Max backups' }, s.maxbackups ?? ''),
          h('td', { 'data-label': 'Next run', class: 'nextrun' }, fmtDate(s.nextrun)), h('td', {}, del, cellOut));
      })))));
  };
  if (userDriven && can('createBackupSchedule')) {
    const interval = select('intervaltype', [['HOURLY', 'Hourly'], ['DAILY', 'Daily'], ['WEEKLY', 'Weekly'], ['MONTHLY', 'Monthly']], 'DAILY');
    const time = h('input', { type: 'time', name: 'time', value: '02:30', required: true });
    const minute = h('input', { type: 'number', name: 'minute', min: 0, max: 59, value: 0 });
    const weekday = select('weekday', WEEKDAYS.map((d, i) => [String(i + 1), d]), '1');
    const monthday = h('input', { type: 'number', name: 'monthday', min: 1, max: 28, value: 1 });
    const zones = typeof Intl.supportedValuesOf === 'function' ? Intl.supportedValuesOf('timeZone') : [userZone()];
    if (!zones.includes('UTC')) zones.unshift('UTC');
    const tz = select('timezone', zones.map((z) => [z, z]), userZone());
    const keep = h('input', { type: 'number', name: 'maxbackups', min: 1, max: 1000, value: 7 });
    const fMinute = field('Minute past the hour', minute);
    const fTime = field('Time', time);
    const fWeekday = field('Day of week', weekday);
    const fMonthday = field('Day of month', monthday, '1 to 28, so every month has it.');
    const show = () => {
      const t = interval.value;
      fMinute.hidden = t !== 'HOURLY';
      fTime.hidden = t === 'HOURLY';
      fWeekday.hidden = t !== 'WEEKLY';
      fMonthday.hidden = t !== 'MONTHLY';
    };
    interval.onchange = show;
    show();
    const configure = act(h('button', { type: 'button', class: 'primary' }, 'Configure'), out, async () => {
      const [hh, mm] = (time.value || '00:00').split(':');
      const t = interval.value;
      const schedule = t === 'HOURLY' ? String(minute.value)
        : t === 'DAILY' ? `${mm}:${hh}`
          : t === 'WEEKLY' ? `${mm}:${hh}:${weekday.value}` : `${mm}:${hh}:${monthday.value}`;
      const s = (await api('createBackupSchedule', {
        virtualmachineid: vm.id, intervaltype: t, schedule, timezone: tz.value, maxbackups: keep.value,
      })).backupschedule;
      loadList();
      return `Schedule saved. Next run: ${fmtDate(s && s.nextrun)} (${userZone()}).`;
    });
    sec.append(h('form', { class: 'grid', onsubmit: (e) => e.preventDefault() },
      field('Interval', interval), fMinute, fTime, fWeekday, fMonthday,
      field('Time zone', tz, 'The schedule runs at this time in this zone.'),
      field('Max backups', keep, 'Older scheduled backups beyond this number are deleted.')),
    h('div', { class: 'row' }, configure), out);
  }
  sec.append(list);
  loadList();
  return sec;
}

// ---------------------------------------------------------------- backups

function viewBackups(el) {
  el.append(h('h1', {}, 'Backups'));
  el.append(pagedTable({
    command: 'listBackups', params: listAll(), itemKey: 'backup', caption: 'Backups',
    empty: 'No backups.', columns: backupColumns(true, null),
  }));
}

// ---------------------------------------------------------------- offerings

function viewOfferings(el) {
  el.append(h('h1', {}, 'Backup offerings'));
  let table;
  if (can('importBackupOffering') && can('listBackupProviderOfferings')) {
    el.append(importForm(() => table.reload()));
  }
  const del = can('deleteBackupOffering');
  table = pagedTable({
    command: 'listBackupOfferings', params: {}, itemKey: 'backupoffering', caption: 'Backup offerings',
    empty: 'No backup offerings. Import one of the provider’s policies.',
    columns: [
      { title: 'Name', cell: (o) => o.name },
      { title: 'Description', cell: (o) => o.description },
      { title: 'Zone', cell: (o) => o.zonename },
      { title: 'Provider', cell: (o) => o.provider },
      { title: 'External ID', cell: (o) => h('code', {}, o.externalid) },
      { title: 'User backups', cell: (o) => (o.allowuserdrivenbackups ? 'allowed' : 'no') },
      ...(del ? [{
        title: 'Actions', cell: (o) => {
          const out = h('div', { class: 'out' });
          return [act(h('button', { type: 'button', class: 'danger' }, 'Delete'), out, async () => {
            const ok = await confirmDialog('Delete this offering?', h('p', {}, `Offering ${o.name} in ${o.zonename} is deleted.`), 'Delete');
            if (!ok) return null;
            await api('deleteBackupOffering', { id: o.id });
            table.reload();
            return null;
          }), out];
        },
      }] : []),
    ],
  });
  el.append(section('Offerings', table));
}

function importForm(done) {
  const out = h('div', { class: 'out' });
  const zone = select('zoneid', [['', 'Choose a zone'], ...S.zones.map((z) => [z.id, z.name])], '');
  const policy = h('select', { name: 'externalid', disabled: true }, h('option', { value: '' }, 'Choose a zone first'));
  const name = h('input', { name: 'name', required: true, maxlength: 255 });
  const desc = h('input', { name: 'description', required: true, maxlength: 255 });
  const userDriven = h('input', { type: 'checkbox', name: 'allowuserdrivenbackups', checked: true });
  let policies = [];
  zone.onchange = async () => {
    policy.disabled = true;
    policy.replaceChildren(h('option', { value: '' }, 'Loading…'));
    out.replaceChildren();
    if (!zone.value) return;
    try {
      policies = (await api('listBackupProviderOfferings', { zoneid: zone.value })).backupoffering || [];
      policy.replaceChildren(h('option', { value: '' }, policies.length ? 'Choose a policy' : 'The provider has no policies'),
        ...policies.map((p) => h('option', { value: p.externalid }, `${p.name} (${p.externalid})`)));
      policy.disabled = !policies.length;
    } catch (e) {
      policy.replaceChildren(h('option', { value: '' }, 'Unavailable'));
      out.append(message('error', e.message));
    }
  };
  // The policy's name and description are suggested until the user types their own.
  for (const input of [name, desc]) input.addEventListener('input', () => { input.dataset.edited = '1'; });
  policy.onchange = () => {
    const p = policies.find((x) => x.externalid === policy.value);
    if (p) {
      if (!name.dataset.edited) name.value = p.name;
      if (!desc.dataset.edited) desc.value = p.description || p.name;
    }
  };
  const submit = act(h('button', { type: 'button', class: 'primary' }, 'Import Backup Offering'), out, async () => {
    const res = await runJob(`Import offering ${name.value}`, 'importBackupOffering', {
      zoneid: zone.value, externalid: policy.value, name: name.value, description: desc.value,
      allowuserdrivenbackups: userDriven.checked ? 'true' : 'false',
    });
    done();
    for (const input of [name, desc]) { input.value = ''; delete input.dataset.edited; }
    return `Imported ${(res.backupoffering && res.backupoffering.name) || name.value}.`;
  });
  return section('Import Backup Offering',
    h('form', { class: 'grid', onsubmit: (e) => e.preventDefault() },
      field('Zone', zone), field('External ID (provider policy)', policy), field('Name', name), field('Description', desc),
      h('div', { class: 'check' }, userDriven, h('label', { for: userDriven.id = uid('ud') }, 'Allow user-driven backups'))),
    h('p', { class: 'hint' }, 'With user-driven backups, users may create ad-hoc backups and their own schedules.'),
    h('div', { class: 'row' }, submit), out);
}

// ---------------------------------------------------------------- settings

const BNR_SETTINGS = ['backup.framework.enabled', 'backup.framework.provider.plugin', 'backup.framework.sync.interval'];
const PROVIDER_SETTING = 'backup.framework.provider.plugin';

async function viewSettings(el, params) {
  el.append(h('h1', {}, 'Backup & Recovery settings'));
  const scope = select('scope', [['', 'Global'], ...S.zones.map((z) => [z.id, `Zone ${z.name}`])], params.get('zoneid') || '');
  const body = h('div');
  el.append(field('Scope', scope, 'Zone values override the global value for that zone.'), body);
  let providers = [];
  if (can('listBackupProviders')) {
    try { providers = (await api('listBackupProviders')).providers || []; } catch { providers = []; }
  }
  let generation = 0;
  const load = async () => {
    // A newer load (the scope changed again) wins over one still in flight.
    const mine = ++generation;
    body.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
    const zoneid = scope.value || undefined;
    let configs;
    try {
      // Every setting of the scope (a few dozen): the B&R ones and the providers' own.
      const ownNames = new Set(providers.flatMap((p) => (p.settings || []).map((x) => x.name)));
      configs = ((await api('listConfigurations', { zoneid, pagesize: 500 })).configuration || [])
        .filter((c) => c.name.startsWith('backup.') || ownNames.has(c.name));
    } catch (e) {
      if (mine === generation) body.replaceChildren(message('error', e.message));
      return;
    }
    if (mine !== generation) return;
    const byName = new Map(configs.map((c) => [c.name, c]));
    const general = BNR_SETTINGS.map((n) => byName.get(n)).filter(Boolean);
    const other = configs.filter((c) => !BNR_SETTINGS.includes(c.name) && !providers.some((p) => (p.settings || []).some((s) => s.name === c.name)));
    body.replaceChildren(section('Backup framework', general.map((c) => settingRow(c, zoneid, providers))));
    for (const p of providers) {
      const own = (p.settings || []).map((s) => byName.get(s.name) || { name: s.name, description: s.description, value: '', secret: s.secret });
      body.append(section(`Provider ${p.name} ${p.version || ''}`,
        own.length ? own.map((c) => settingRow(c, zoneid, providers, (p.settings || []).find((s) => s.name === c.name)))
          : h('p', { class: 'muted' }, 'This provider has no settings of its own.')));
    }
    if (other.length) body.append(section('Other backup settings', other.map((c) => settingRow(c, zoneid, providers))));
  };
  scope.onchange = load;
  load();
}

function settingRow(c, zoneid, providers, decl) {
  const secret = (decl && decl.secret) || c.value === '*****';
  const out = h('div', { class: 'out' });
  let input;
  if (c.name === PROVIDER_SETTING && providers.length) {
    input = select(c.name, [['', '(none)'], ...providers.map((p) => [p.name, `${p.name} ${p.version || ''}`])], c.value || '');
  } else if (c.type === 'Boolean' || c.value === 'true' || c.value === 'false') {
    input = select(c.name, [['true', 'true'], ['false', 'false']], c.value);
  } else if (secret) {
    input = h('input', { type: 'password', name: c.name, autocomplete: 'new-password', placeholder: c.value ? 'set, hidden (type to replace)' : 'not set' });
  } else {
    input = h('input', { name: c.name, value: c.value || '' });
  }
  const save = act(h('button', { type: 'button' }, 'Save'), out, async () => {
    if (secret && !input.value) throw new ApiError(0, 'Type the new value first; the current one is never shown.');
    if (c.name === PROVIDER_SETTING && input.value !== (c.value || '')) {
      const ok = await confirmDialog('Swap the provider?', await swapSummary(zoneid, c.value, input.value, providers), 'Swap provider');
      if (!ok) return null;
    }
    const res = (await api('updateConfiguration', { name: c.name, value: input.value, zoneid })).configuration || {};
    c.value = res.value;
    if (secret) input.value = '';
    return `Saved: ${c.name} = ${secret ? '(hidden)' : res.value}`;
  });
  return h('div', { class: 'setting' }, field(c.name, input, c.description), h('div', { class: 'row' }, save), out);
}

// What a hot swap changes in a zone: provider and version, capabilities, existing offerings.
async function swapSummary(zoneid, from, to, providers) {
  const a = providers.find((p) => p.name === from) || { capabilities: [] };
  const b = providers.find((p) => p.name === to) || { capabilities: [] };
  const zone = S.zones.find((z) => z.id === zoneid);
  const gained = (b.capabilities || []).filter((c) => !(a.capabilities || []).includes(c));
  const lost = (a.capabilities || []).filter((c) => !(b.capabilities || []).includes(c));
  let offerings = [];
  try {
    offerings = ((await api('listBackupOfferings', { zoneid, pagesize: 500 })).backupoffering || []).filter((o) => o.provider === from);
  } catch { offerings = []; }
  return h('div', {},
    h('p', {}, zone ? `Zone ${zone.name}: ` : 'Every zone without its own value: ',
      h('strong', {}, `${from || '(none)'} ${a.version || ''}`), ' → ', h('strong', {}, `${to || '(none)'} ${b.version || ''}`)),
    h('ul', {},
      h('li', {}, 'Calls that already started finish on the current provider; new calls go to the new one.'),
      h('li', {}, `Capabilities gained: ${gained.join(', ') || 'none'}; lost: ${lost.join(', ') || 'none'}.`),
      h('li', {}, `${offerings.length} offering(s) of ${from || 'the current provider'} exist in this zone: `,
        offerings.map((o) => o.name).join(', ') || '—')));
}

// ---------------------------------------------------------------- events

function viewEvents(el, params) {
  el.append(h('h1', {}, 'Events'));
  const filter = {};
  for (const k of ['type', 'level', 'startdate']) if (params.get(k)) filter[k] = params.get(k);
  if (Object.keys(filter).length) el.append(h('p', { class: 'muted' }, `Filtered: ${Object.entries(filter).map(([k, v]) => `${k}=${v}`).join(', ')}`));
  el.append(pagedTable({
    command: 'listEvents', params: { ...filter, ...listAll() }, itemKey: 'event', caption: 'Events', empty: 'No events.',
    columns: [
      { title: 'When', cell: (e) => fmtDate(e.created) },
      { title: 'Level', cell: (e) => h('span', { class: `badge ${e.level}` }, e.level) },
      { title: 'Type', cell: (e) => e.type },
      { title: 'Description', cell: (e) => e.description },
      { title: 'Account', cell: (e) => e.account },
    ],
  }));
}

// ---------------------------------------------------------------- operations (admins)

async function viewOperations(el) {
  el.append(h('h1', {}, 'Operations'));
  const zonesSec = section('Zones');
  const providersSec = section('Installed providers');
  const jobsSec = section('Operations in flight');
  const failSec = section('Failures in the last 24 h');
  const charts = h('div', { class: 'charts' });
  el.append(zonesSec, providersSec, jobsSec, failSec, charts);
  const providers = (await api('listBackupProviders').catch(() => ({}))).providers || [];
  fillZones(zonesSec, providers);
  fillProviders(providersSec, providers);
  fillJobs(jobsSec);
  fillFailures(failSec);
  if (can('listBackupUsageRecords')) charts.append(storageChart());
  if (can('listEvents')) charts.append(backupsPerDayChart());
  if (can('listBackupSchedule')) charts.append(nextRunsChart());
}

async function fillZones(sec, providers) {
  const stats = can('listBackupStorageStats') ? ((await api('listBackupStorageStats').catch(() => ({}))).backupstoragestats || []) : [];
  const syncs = can('listBackupSyncStatus') ? ((await api('listBackupSyncStatus').catch(() => ({}))).backupsyncstatus || []) : [];
  const rows = [];
  for (const z of S.zones) {
    const conf = (await api('listConfigurations', { name: 'backup.framework', zoneid: z.id }).catch(() => ({}))).configuration || [];
    const val = (n) => (conf.find((c) => c.name === n) || {}).value;
    const name = val(PROVIDER_SETTING);
    const p = providers.find((x) => x.name === name);
    const st = stats.find((s) => s.zoneid === z.id);
    const sync = syncs.find((s) => s.zoneid === z.id);
    const enabled = val('backup.framework.enabled') === 'true';
    const health = !enabled ? ['off', 'B&R disabled'] : p ? ['ok', 'loaded'] : ['error', name ? 'not installed' : 'no provider'];
    rows.push(h('tr', {},
      h('td', { 'data-label': 'Zone' }, z.name),
      h('td', { 'data-label': 'Provider' }, name || '—'),
      h('td', { 'data-label': 'Version' }, p ? p.version : ''),
      h('td', { 'data-label': 'Health' }, h('span', { class: `badge ${health[0]}` }, health[1])),
      h('td', { 'data-label': 'Last sync', class: 'last-sync' },
        sync ? h('span', { class: `badge ${sync.result === 'ok' ? 'ok' : 'error'}` }, sync.result === 'ok' ? 'ok' : `failed${sync.failuresinarow > 1 ? ` ×${sync.failuresinarow}` : ''}`) : '',
        sync ? ` ${fmtDate(sync.lastsync)}${sync.error ? ` — ${sync.error}` : ''}` : 'not yet',
        st ? h('div', { class: 'muted' }, `${fmtBytes(st.usedbytes)} of ${fmtBytes(st.totalbytes)} used (${st.provider}, ${fmtDate(st.collected)})`) : ''),
      h('td', {}, can('updateConfiguration') ? h('a', { href: `#/settings?zoneid=${z.id}` }, 'Settings') : '')));
  }
  sec.append(h('div', { class: 'scroll' }, h('table', {}, h('caption', {}, 'Zones'),
    h('thead', {}, h('tr', {}, ['Zone', 'Provider', 'Version', 'Health', 'Last sync', ''].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, rows))));
}

function fillProviders(sec, providers) {
  if (!providers.length) {
    sec.append(h('p', { class: 'muted' }, 'No provider is installed.'));
    return;
  }
  for (const p of providers) {
    const grants = (p.zones || []).map((z) => `${z.zonename}: ${[...(z.httpgrants || []), ...(z.execgrants || []).map((x) => `exec ${x}`)].join(', ') || 'nothing'}`);
    sec.append(h('dl', { class: 'provider' },
      h('dt', {}, 'Name'), h('dd', {}, h('strong', {}, p.name), ` — ${p.description}`),
      h('dt', {}, 'Version'), h('dd', {}, p.version || ''),
      h('dt', {}, 'WIT version'), h('dd', {}, p.witversion || ''),
      h('dt', {}, 'sha256'), h('dd', {}, h('code', { class: 'hash' }, p.sha256 || '')),
      h('dt', {}, 'Capabilities'), h('dd', {}, [...(p.capabilities || []), `delete: ${p.deletegranularity}`].join(', ')),
      h('dt', {}, 'Needs'), h('dd', {}, (p.needs || []).join(', ') || 'nothing'),
      h('dt', {}, 'Grants'), h('dd', {}, grants.join('; ') || 'serves no zone')));
  }
}

async function fillJobs(sec) {
  const since = apiDateTime(new Date(Date.now() - DAY_MS));
  let jobs = [];
  try {
    jobs = ((await api('listAsyncJobs', { startdate: since, pagesize: 500, ...listAll() })).asyncjobs || []).filter((j) => j.jobstatus === 0);
  } catch (e) {
    sec.append(message('error', e.message));
    return;
  }
  if (!jobs.length) {
    sec.append(h('p', { class: 'muted' }, 'Nothing is running.'));
    return;
  }
  const now = Date.now();
  sec.append(h('ul', { class: 'plain' }, jobs.map((j) => {
    const age = now - (parseDate(j.created) || new Date()).getTime();
    return h('li', {}, h('strong', {}, j.cmd), ` ${j.jobinstancetype || ''} ${j.jobinstanceid ? j.jobinstanceid.slice(0, 8) : ''} · running for ${fmtAge(age)}`);
  })));
}

async function fillFailures(sec) {
  if (!can('listEvents')) return;
  const since = apiDateTime(new Date(Date.now() - DAY_MS));
  let events = [];
  try {
    events = (await api('listEvents', { level: 'ERROR', startdate: since, pagesize: 500, ...listAll() })).event || [];
  } catch (e) {
    sec.append(message('error', e.message));
    return;
  }
  if (!events.length) {
    sec.append(h('p', { class: 'muted' }, 'No failures.'));
    return;
  }
  const groups = new Map();
  for (const e of events) {
    // "Backup <uuid> of VM <name> failed: <reason>": group by the reason, ids masked otherwise.
    const text = e.description || '';
    const at = text.indexOf('failed: ');
    const reason = at >= 0 ? text.slice(at + 8) : text.replace(/[0-9a-f]{8}-[0-9a-f-]{27}/g, '…');
    // Grouped by provider (events of a provider's failures name it) and reason.
    const provider = e.provider || '';
    const key = `${provider}\u0000${e.type}\u0000${reason}`;
    const g = groups.get(key) || { provider, type: e.type, reason, n: 0 };
    g.n++;
    groups.set(key, g);
  }
  sec.append(h('ul', { class: 'plain failures' }, [...groups.values()].sort((a, b) => b.n - a.n).map((g) =>
    h('li', {}, h('strong', { class: 'provider' }, g.provider || 'bnr'), ': ',
      h('a', { href: `#/events?type=${encodeURIComponent(g.type)}&level=ERROR&startdate=${encodeURIComponent(since)}` },
        `${g.n} × ${g.type}`), ` — ${g.reason}`))));
}

// ---------------------------------------------------------------- charts (inline SVG)

const SVG = 'http://www.w3.org/2000/svg';
function s(tag, attrs, ...kids) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const kid of kids.flat()) if (kid !== null && kid !== undefined) el.append(kid instanceof Node ? kid : String(kid));
  return el;
}
const COLORS = ['#1d4f91', '#c2410c', '#15803d', '#7c3aed', '#0e7490', '#b91c1c'];

// A bar chart of `series` (name → values) over `labels`; stacked when more than one series.
function barChart(title, labels, series, unit) {
  const W = 560, H = 220, L = 56, B = 40, T = 10;
  const names = Object.keys(series);
  const totals = labels.map((_, i) => names.reduce((a, n) => a + (series[n][i] || 0), 0));
  const max = Math.max(1, ...totals);
  const bw = (W - L - 10) / labels.length;
  const y = (v) => H - B - ((H - B - T) * v) / max;
  const bars = [];
  labels.forEach((lab, i) => {
    let base = 0;
    names.forEach((n, k) => {
      const v = series[n][i] || 0;
      if (v > 0) {
        bars.push(s('rect', { x: L + i * bw + 2, y: y(base + v), width: Math.max(1, bw - 4), height: y(base) - y(base + v), fill: COLORS[k % COLORS.length] },
          s('title', {}, `${lab} ${n}: ${unit(v)}`)));
      }
      base += v;
    });
  });
  const step = Math.max(1, Math.ceil(labels.length / 8));
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title, class: 'chart' },
    s('line', { x1: L, y1: H - B, x2: W - 10, y2: H - B, stroke: 'currentColor' }),
    s('text', { x: L - 6, y: T + 8, 'text-anchor': 'end', class: 'axis' }, unit(max)),
    s('text', { x: L - 6, y: H - B, 'text-anchor': 'end', class: 'axis' }, '0'),
    bars,
    labels.map((lab, i) => (i % step ? null : s('text', { x: L + i * bw + bw / 2, y: H - B + 16, 'text-anchor': 'middle', class: 'axis' }, lab))));
  const legend = h('ul', { class: 'legend' }, names.map((n, k) => h('li', {}, h('span', { class: 'swatch', style: null, 'data-color': k }), n)));
  // The table is the chart's text equivalent.
  const table = h('details', {}, h('summary', {}, 'Data'), h('table', {},
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, ''), names.map((n) => h('th', { scope: 'col' }, n)))),
    h('tbody', {}, labels.map((lab, i) => h('tr', {}, h('th', { scope: 'row' }, lab), names.map((n) => h('td', {}, unit(series[n][i] || 0))))))));
  return [svg, legend, table];
}

function chartCard(title, build) {
  const sec = section(title, h('p', { class: 'muted' }, 'Loading…'));
  build().then((kids) => { sec.lastChild.replaceWith(h('div', {}, kids)); },
    (e) => { sec.lastChild.replaceWith(message('error', e.message)); });
  sec.classList.add('chart-card');
  return sec;
}

function lastDays(n) {
  const days = [];
  const today = new Date();
  for (let i = n - 1; i >= 0; i--) days.push(new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate() - i)));
  return days;
}

function storageChart() {
  return chartCard('Backup storage per zone (last 7 days, UTC)', async () => {
    const days = lastDays(7);
    const series = {};
    for (const [i, d] of days.entries()) {
      const next = new Date(d.getTime() + DAY_MS);
      const recs = (await api('listBackupUsageRecords', {
        startdate: `${isoDay(d)} 00:00:00`, enddate: `${isoDay(next)} 00:00:00`, pagesize: 500,
      })).backupusagerecord || [];
      for (const r of recs) {
        const zone = (S.zones.find((z) => z.id === r.zoneid) || { name: r.zoneid }).name;
        series[zone] = series[zone] || days.map(() => 0);
        series[zone][i] += Number(r.size || 0);
      }
    }
    if (!Object.keys(series).length) series['no usage yet'] = days.map(() => 0);
    return barChart('Backup storage per zone', days.map((d) => isoDay(d).slice(5)), series, fmtBytes);
  });
}

function backupsPerDayChart() {
  return chartCard('Backups succeeded and failed per day (last 7 days, UTC)', async () => {
    const days = lastDays(7);
    const ok = days.map(() => 0);
    const failed = days.map(() => 0);
    const res = await api('listEvents', { type: 'BACKUP.CREATE', startdate: `${isoDay(days[0])} 00:00:00`, pagesize: 500, ...listAll() });
    for (const e of res.event || []) {
      const d = parseDate(e.created);
      const i = d ? days.findIndex((x) => isoDay(x) === isoDay(d)) : -1;
      if (i < 0) continue;
      if (e.level === 'ERROR') failed[i]++;
      else ok[i]++;
    }
    return barChart('Backups per day', days.map((d) => isoDay(d).slice(5)), { succeeded: ok, failed }, (v) => String(Math.round(v)));
  });
}

function nextRunsChart() {
  return chartCard(`Scheduled runs in the next 24 h (${userZone()})`, async () => {
    const now = Date.now();
    const counts = Array.from({ length: 24 }, () => 0);
    const res = await api('listBackupSchedule', { pagesize: 500, ...listAll() });
    for (const sch of res.backupschedule || []) {
      const first = parseDate(sch.nextrun);
      if (!first) continue;
      const every = sch.intervaltype === 'HOURLY' ? 3600000 : null;
      for (let t = first.getTime(); t < now + DAY_MS; t += every || Infinity) {
        const slot = Math.floor((t - now) / 3600000);
        if (slot >= 0 && slot < 24) counts[slot]++;
        if (!every) break;
      }
    }
    const labels = counts.map((_, i) => new Date(now + i * 3600000).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' }));
    return barChart('Scheduled runs per hour', labels, { runs: counts }, (v) => String(Math.round(v)));
  });
}

// ---------------------------------------------------------------- start

window.addEventListener('hashchange', route);
window.addEventListener('DOMContentLoaded', async () => {
  const saved = sessionStorage.getItem(SESSION_STORE);
  if (saved) {
    try {
      await startSession(JSON.parse(saved));
      return;
    } catch {
      sessionStorage.removeItem(SESSION_STORE);
      S.key = null;
    }
  }
  showLogin();
});
