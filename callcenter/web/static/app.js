// The live page: fetches snapshots from the REST API and refreshes them whenever the server
// pushes a bus event over the WebSocket. No framework, no external resources.
"use strict";

(function () {
  const ALL = window.CALLCENTER_STRINGS;
  // The signed-in user's language wins (set on start-up from /api/v1/me), then the browser's.
  const browserLang = [navigator.language, (navigator.language || "").split("-")[0]].find((l) => l && ALL[l]);
  const T = Object.assign({}, ALL.en, ALL[browserLang] || {});
  let csrfToken = null;

  function toLogin() {
    location.href = "/login?next=" + encodeURIComponent(location.pathname);
  }

  const $ = (id) => document.getElementById(id);

  function fmtTime(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return isNaN(d) ? String(iso) : d.toLocaleTimeString();
  }
  function fmtSecs(s) {
    if (s === null || s === undefined || s === "") return "";
    const n = Math.round(Number(s));
    return n >= 60 ? Math.floor(n / 60) + ":" + String(n % 60).padStart(2, "0") : n + T.seconds;
  }
  function pick(obj, ...keys) {
    for (const k of keys) if (obj && obj[k] !== undefined && obj[k] !== null) return obj[k];
    return "";
  }
  function cell(text, cls) {
    const td = document.createElement("td");
    td.textContent = text === undefined || text === null ? "" : String(text);
    if (cls) td.className = cls;
    return td;
  }
  function fill(tableId, headers, rows) {
    const table = $(tableId);
    table.textContent = "";
    const head = table.createTHead().insertRow();
    for (const h of headers) {
      const th = document.createElement("th");
      th.textContent = T[h];
      head.appendChild(th);
    }
    const body = table.createTBody();
    if (!rows.length) {
      const tr = body.insertRow();
      const td = cell(T.none, "empty");
      td.colSpan = headers.length;
      tr.appendChild(td);
      return;
    }
    for (const cells of rows) {
      const tr = body.insertRow();
      for (const c of cells) tr.appendChild(c);
    }
  }

  function callState(c) {
    if (c.ended_at) return [T.stateEnded, ""];
    if (c.answered_at) return [T.stateTalking, "answered"];
    if (c.queue_joined_at) return [T.stateQueued, "waiting"];
    return [T.stateIvr, ""];
  }
  function callResult(c) {
    if (c.abandoned) return [T.resultAbandoned, "abandoned"];
    if (!c.ended_at) return [T.resultInProgress, "waiting"];
    if (c.answered_at) return [T.resultAnswered, "answered"];
    return [T.resultOther, ""];
  }
  function ivrKeys(c) {
    // the keys pressed: the tracked choice, else the keys in the IVR path
    const keys = (c.ivr_path || []).filter((step) => /^[0-9*#]$/.test(step));
    return keys.length ? keys.join(" › ") : pick(c, "ivr_choice");
  }
  function caller(c) {
    const num = pick(c, "caller_number");
    const name = pick(c, "caller_name");
    return name && name !== num ? num + " " + name : num;
  }

  async function getJSON(url) {
    const resp = await fetch(url, { headers: { Accept: "application/json" } });
    if (resp.status === 401) toLogin(); // the sign-in expired
    if (!resp.ok) throw new Error(url + ": " + resp.status);
    return resp.json();
  }

  async function refreshLive() {
    const data = await getJSON("/api/v1/calls/live");
    fill("live-calls", ["colStarted", "colCaller", "colState", "colQueue", "colAgent"],
      (data.items || []).map((c) => {
        const [state, cls] = callState(c);
        return [cell(fmtTime(c.started_at)), cell(caller(c)), cell(state, cls), cell(c.queue), cell(c.agent)];
      }));
  }
  async function refreshAgents() {
    const data = await getJSON("/api/v1/agents");
    fill("agents", ["colAgent", "colInterface", "colStatus", "colPaused", "colCallsTaken"],
      (data.items || []).map((a) => [
        cell(pick(a, "name", "member_name", "agent")),
        cell(pick(a, "interface", "agent_interface")),
        cell(pick(a, "state", "status")),
        cell(pick(a, "paused") === true ? T.yes : T.no),
        cell(pick(a, "calls_taken", "calls")),
      ]));
  }
  async function refreshQueues() {
    const data = await getJSON("/api/v1/queues");
    fill("queues", ["colQueue", "colWaiting", "colMembers", "colAvailable", "colLongest"],
      (data.items || []).map((q) => [
        cell(pick(q, "name", "queue")),
        cell(pick(q, "waiting", "calls")),
        cell(pick(q, "members")),
        cell(pick(q, "available")),
        cell(fmtSecs(pick(q, "longest_wait_seconds"))),
      ]));
  }
  async function refreshRecent() {
    const data = await getJSON("/api/v1/calls?limit=20");
    fill("recent-calls",
      ["colStarted", "colCaller", "colIvr", "colQueue", "colAgent", "colWait", "colTalk", "colResult", "colRecording"],
      (data.items || []).map((c) => {
        const [result, cls] = callResult(c);
        return [
          cell(fmtTime(c.started_at)), cell(caller(c)), cell(ivrKeys(c)), cell(c.queue), cell(c.agent),
          cell(fmtSecs(c.wait_seconds)), cell(fmtSecs(c.talk_seconds)), cell(result, cls),
          cell(c.recording_file ? c.recording_file.split("/").pop() : ""),
        ];
      }));
  }
  async function refreshSummary() {
    const s = await getJSON("/api/v1/calls/summary");
    const box = $("summary");
    box.textContent = "";
    const items = [
      [T.sumCalls, s.calls], [T.sumAnswered, s.answered], [T.sumAbandoned, s.abandoned],
      [T.sumWithinTarget, s.answered_within_target], [T.sumAvgWait, fmtSecs(s.avg_wait_seconds)],
    ];
    for (const [label, value] of items) {
      const div = document.createElement("div");
      const b = document.createElement("b");
      b.textContent = value === null || value === undefined ? "-" : String(value);
      div.appendChild(b);
      div.appendChild(document.createTextNode(label));
      box.appendChild(div);
    }
  }

  const refreshers = {
    calls: [refreshLive, refreshRecent, refreshSummary, refreshQueues],
    agents: [refreshAgents, refreshQueues],
    queues: [refreshQueues],
  };
  const pending = new Set();
  let timer = null;
  function schedule(fns) {
    for (const f of fns) pending.add(f);
    if (timer) return;
    // events come in bursts (a dozen per call): refresh at most a few times a second
    timer = setTimeout(async () => {
      timer = null;
      const fns = [...pending];
      pending.clear();
      await Promise.allSettled(fns.map((f) => f()));
    }, 250);
  }
  function refreshAll() {
    schedule([refreshLive, refreshAgents, refreshQueues, refreshRecent, refreshSummary]);
  }

  function setStatus(key, cls) {
    const el = $("status");
    el.textContent = T[key];
    el.className = cls;
  }

  let retry = 500;
  function connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(proto + "//" + location.host + "/ws");
    ws.onopen = () => {
      retry = 500;
      setStatus("connected", "live");
      refreshAll();
    };
    ws.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch (e) { return; }
      schedule(refreshers[msg.channel] || []);
    };
    ws.onclose = () => {
      setStatus("disconnected", "down");
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 10000);
    };
  }

  async function signOut() {
    const headers = csrfToken ? { "X-CSRF-Token": csrfToken } : {};
    await fetch("/api/v1/auth/logout", { method: "POST", headers }).catch(() => null);
    location.href = "/login";
  }

  async function start() {
    try {
      const me = await getJSON("/api/v1/me");
      csrfToken = me.csrf_token;
      Object.assign(T, ALL.en, ALL[me.language] || {});
      document.documentElement.lang = me.language;
    } catch (e) { /* not signed in: getJSON already went to the sign-in page */ }
    document.title = T.title;
    for (const el of document.querySelectorAll("[data-t]")) el.textContent = T[el.dataset.t];
    $("signout").addEventListener("click", signOut);
    setStatus("connecting", "");
    refreshAll();
    connect();
  }

  start();
})();
