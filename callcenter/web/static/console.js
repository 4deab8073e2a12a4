// The agent console: screen-pops over /ws/agent, state control, booking/complaint/disposition
// forms. Plain JS, no dependencies. Strings come from the page (boot JSON, per user language).
(function () {
  "use strict";

  const boot = JSON.parse(document.getElementById("console-boot").textContent);
  const S = boot.strings;
  const t = (key) => (key in S ? S[key] : key);
  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------------ i18n
  for (const node of document.querySelectorAll("[data-t]")) node.textContent = t(node.dataset.t);
  $("user-name").textContent = boot.user.display_name || boot.user.username;
  $("user-phone").textContent = boot.user.agent_interface || t("noPhone");

  // ------------------------------------------------------------------ state
  let current = null; // the pop shown (its data)
  let lastSeq = Number(sessionStorage.getItem("console.lastSeq") || "0");
  let epoch = sessionStorage.getItem("console.epoch") || "";
  let pending = [];
  let reconnected = false;
  let shownSeq = 0; // the pop in the middle column
  let shownReplay = false;

  function text(el, value) {
    el.textContent = value === null || value === undefined || value === "" ? "—" : String(value);
  }

  function api(method, path, body) {
    return fetch(path, {
      method,
      credentials: "same-origin",
      headers: Object.assign(
        { Accept: "application/json", "X-CSRF-Token": boot.csrf },
        body ? { "Content-Type": "application/json" } : {}
      ),
      body: body ? JSON.stringify(body) : undefined,
    }).then(async (resp) => {
      let data = null;
      try { data = await resp.json(); } catch (e) { data = null; }
      if (!resp.ok) {
        const err = (data && data.error) || { code: String(resp.status), message: resp.statusText };
        throw err;
      }
      return data;
    });
  }

  function errorText(err) {
    const fields = err.fields ? Object.entries(err.fields).map(([k, v]) => k + ": " + v).join("; ") : "";
    return t("failed") + " (" + (err.code || "error") + ") " + (err.message || "") + (fields ? " - " + fields : "");
  }

  // ------------------------------------------------------------------ agent state
  function showState(status, reason) {
    $("state-now").textContent = t("state_" + status);
    $("state-now").dataset.status = status;
    $("state-reason").textContent = reason ? "(" + reason + ")" : "";
    if (document.getElementById("state-form").contains(document.activeElement)) return; // choosing
    for (const radio of document.querySelectorAll("input[name=state]")) radio.checked = radio.value === status;
  }

  function showPending(list) {
    pending = list || [];
    $("pending").hidden = pending.length === 0;
    $("pending-list").textContent = pending.join(", ");
  }

  // The status itself comes from the WebSocket's state frames (what Asterisk reported, in
  // order); an HTTP answer may be older than a frame that already arrived.
  function applyStateOut(out, withStatus) {
    if (withStatus) showState(out.status, out.paused_reason);
    showPending(out.pending_dispositions);
  }

  function refreshState(withStatus) {
    return api("GET", "/api/v1/agent/state").then((out) => applyStateOut(out, withStatus)).catch(() => {});
  }

  function setState(state) {
    const reason = state === "paused" ? $("pause-reason").value : null;
    const msg = $("state-msg");
    msg.className = "";
    msg.textContent = "";
    return api("POST", "/api/v1/agent/state", { state, reason })
      .then((out) => {
        applyStateOut(out, false);
        msg.textContent = t("stateSaved");
      })
      .catch((err) => {
        msg.className = "bad";
        if (err.code === "disposition_required") {
          msg.textContent = t("dispositionRequired");
          refreshState();
          openForm("disposition");
        } else {
          msg.textContent = errorText(err);
        }
      });
  }

  $("state-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const chosen = document.querySelector("input[name=state]:checked");
    if (chosen) setState(chosen.value);
  });

  // ------------------------------------------------------------------ screen-pop
  function fmtSeconds(v) {
    return v === null || v === undefined ? "—" : Math.round(v) + " " + t("seconds");
  }

  function renderCustomer(c, pending) {
    const box = $("pop-customer");
    box.textContent = "";
    const div = document.createElement("div");
    div.className = "card" + (c && c.key_customer ? " key" : "");
    const h = document.createElement("h3");
    h.textContent = t("customerCard");
    div.appendChild(h);
    if (!c) {
      const p = document.createElement("p");
      p.textContent = t(pending ? "lookingUp" : "unknownCaller");
      div.appendChild(p);
    } else {
      const dl = document.createElement("dl");
      dl.className = "facts";
      const rows = [
        ["customerCard", c.name + (c.provisional ? " (" + t("provisional") + ")" : "") + " #" + c.id],
        ["company", c.company],
        ["tier", t("tier_" + c.tier)],
        ["creditGrade", c.credit_grade],
        ["customerLanguage", c.preferred_language],
        ["notes", c.notes],
      ];
      if (c.do_not_call) rows.push(["doNotCall", "✔"]);
      for (const [k, v] of rows) {
        const dt = document.createElement("dt");
        dt.textContent = t(k);
        const dd = document.createElement("dd");
        text(dd, v);
        dl.append(dt, dd);
      }
      div.appendChild(dl);
    }
    box.appendChild(div);
  }

  function renderPop(pop, replay) {
    current = pop;
    $("pop-empty").hidden = true;
    $("pop-card").hidden = false;
    const kind = $("pop-kind");
    kind.textContent = t("pop_" + pop.kind);
    kind.className = "badge " + pop.kind;
    $("pop-key").hidden = !pop.key_customer;
    $("pop-replay").hidden = !replay;
    text($("pop-number"), pop.caller_number);
    text($("pop-name"), pop.caller_name);
    text($("pop-queue"), pop.queue);
    $("pop-waited").textContent = fmtSeconds(pop.waited_seconds);
    text($("pop-choice"), pop.ivr_choice ? pop.ivr_choice + (pop.ivr_choice_label ? " → " + pop.ivr_choice_label : "") : null);
    text($("pop-path"), (pop.ivr_path || []).join(" → "));
    const digits = (pop.digits || []).map((d) => d.node + ": " + d.input);
    $("pop-digits").textContent = digits.length ? digits.join(", ") : t("noDigits");
    $("pop-incomplete").hidden = pop.complete !== false;
    renderCustomer(pop.customer, pop.pending);
    const ul = $("pop-history");
    ul.textContent = "";
    if (!pop.history || pop.history.length === 0) {
      const li = document.createElement("li");
      li.textContent = t("noHistory");
      ul.appendChild(li);
    } else {
      for (const h of pop.history) {
        const li = document.createElement("li");
        li.textContent = (h.at ? h.at.replace("T", " ").slice(0, 16) + " · " : "") + h.kind + " · " + h.summary;
        ul.appendChild(li);
      }
    }
    if (pop.kind === "answered" && pending.indexOf(pop.uniqueid) < 0) showPending(pending.concat([pop.uniqueid]));
    if (pop.kind === "finished") refreshState();
  }

  function addRecent(seq, pop) {
    const list = $("recent-list");
    let li = list.querySelector('li[data-seq="' + seq + '"]');
    if (!li) {
      li = document.createElement("li");
      li.dataset.seq = String(seq);
      list.insertBefore(li, list.firstChild);
      while (list.children.length > 20) list.removeChild(list.lastChild);
    }
    li.textContent = (pop.at || "").replace("T", " ").slice(0, 19) + " · " + t("pop_" + pop.kind) + " · " +
      (pop.caller_number || "?") + (pop.customer ? " · " + pop.customer.name : "");
  }

  function onFrame(frame) {
    if (frame.type === "hello") {
      if (frame.epoch !== epoch) { lastSeq = 0; epoch = frame.epoch; }
      reconnected = lastSeq > 0; // replays after this are pops missed while away
      sessionStorage.setItem("console.epoch", epoch);
      if (frame.state) showState(frame.state.status, frame.state.paused_reason);
      return;
    }
    if (frame.type === "state") {
      showState(frame.agent.status, frame.agent.paused_reason);
      return;
    }
    if (frame.type === "pop") {
      if (frame.seq <= lastSeq && !frame.replay) return; // already seen in this tab
      if (frame.seq > lastSeq) {
        lastSeq = frame.seq;
        sessionStorage.setItem("console.lastSeq", String(lastSeq));
      }
      shownSeq = frame.seq;
      shownReplay = !!frame.replay && reconnected;
      renderPop(frame.pop, shownReplay);
      addRecent(frame.seq, frame.pop);
      return;
    }
    if (frame.type === "pop.update") { // the customer lookup finished for a pop already shown
      if (frame.seq === shownSeq) renderPop(frame.pop, shownReplay);
      addRecent(frame.seq, frame.pop);
    }
  }

  // ------------------------------------------------------------------ WebSocket
  let backoff = 500;
  function connect() {
    const conn = $("conn");
    conn.textContent = t("connecting");
    conn.className = "";
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const q = epoch ? "?last_seq=" + lastSeq + "&epoch=" + encodeURIComponent(epoch) : "";
    const ws = new WebSocket(proto + "//" + location.host + "/ws/agent" + q);
    ws.onopen = () => {
      backoff = 500;
      conn.textContent = t("connected");
      conn.className = "live";
    };
    ws.onmessage = (ev) => {
      try { onFrame(JSON.parse(ev.data)); } catch (e) { console.error(e); }
    };
    ws.onclose = () => {
      conn.textContent = t("disconnected");
      conn.className = "down";
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 10000);
    };
  }

  // ------------------------------------------------------------------ forms
  const forms = {
    booking: $("booking-form"),
    complaint: $("complaint-form"),
    disposition: $("disposition-form"),
  };

  function callContext() {
    const pop = current || {};
    return {
      customer_id: pop.customer ? pop.customer.id : null,
      call_uniqueid: pop.uniqueid || (pending.length ? pending[pending.length - 1] : null),
      caller_number: pop.caller_number || "",
      caller_name: pop.caller_name || "",
    };
  }

  function openForm(name) {
    const form = forms[name];
    const ctx = callContext();
    if (name === "disposition" && pending.length) ctx.call_uniqueid = pending[0];
    for (const [k, f] of Object.entries(forms)) if (k !== name) f.hidden = true;
    form.dataset.customerId = ctx.customer_id === null ? "" : String(ctx.customer_id);
    form.dataset.callUniqueid = ctx.call_uniqueid || "";
    form.dataset.number = ctx.caller_number;
    form.dataset.name = ctx.caller_name;
    form.querySelector(".ctx").textContent =
      t("customerId") + ": " + (ctx.customer_id === null ? t("unknownCaller") : "#" + ctx.customer_id + " " + ((current && current.customer && current.customer.name) || "")) +
      " · " + t("callId") + ": " + (ctx.call_uniqueid || "—") + " · " + t("number") + ": " + (ctx.caller_number || "—");
    const msg = form.querySelector(".msg");
    msg.textContent = "";
    msg.className = "msg";
    if (name === "booking" && current) form.elements.namedItem("for_whom").value = (current.customer && current.customer.name) || current.caller_name || "";
    if (name === "disposition" && current && current.ivr_choice) {
      const guess = { bookings: "booking", complaints_queue: "complaint", technical: "technical" }[current.ivr_choice];
      if (guess) form.elements.namedItem("category").value = guess;
    }
    form.hidden = false;
    const first = form.querySelector("input:not([type=hidden]), select, textarea");
    if (first) first.focus();
  }

  function closeForms() {
    for (const f of Object.values(forms)) f.hidden = true;
    $("pop").focus();
  }

  function localToIso(value) {
    if (!value) return null;
    const d = new Date(value);
    return isNaN(d.getTime()) ? null : d.toISOString();
  }

  // An unknown caller gets a provisional customer record first (the agent completes it later).
  function ensureCustomer(ctx) {
    if (ctx.customer_id !== null) return Promise.resolve(ctx.customer_id);
    return api("POST", "/api/v1/customers/provisional", {
      number: ctx.caller_number || "",
      call_uniqueid: ctx.call_uniqueid || null,
      name: ctx.caller_name || null,
    }).then((out) => {
      const c = out.customer;
      if (current && current.caller_number === ctx.caller_number) {
        current.customer = { id: c.id, name: c.name, provisional: true, tier: c.tier || "normal", key_customer: false };
      }
      return c.id;
    });
  }

  function submitForm(name, form) {
    const ctx = {
      customer_id: form.dataset.customerId ? Number(form.dataset.customerId) : null,
      call_uniqueid: form.dataset.callUniqueid || null,
      caller_number: form.dataset.number || null,
      caller_name: form.dataset.name || null,
    };
    const el = (n) => form.elements.namedItem(n); // not form.elements.item: that is a method
    const msg = form.querySelector(".msg");
    let send;
    if (name === "booking" || name === "complaint") {
      send = ensureCustomer(ctx).then((customerId) => {
        form.dataset.customerId = String(customerId);
        if (name === "booking") {
          return api("POST", "/api/v1/bookings", {
            customer_id: customerId, call_uniqueid: ctx.call_uniqueid, item: el("item").value,
            scheduled_for: localToIso(el("scheduled_for").value), for_whom: el("for_whom").value,
            urgent: el("urgent").checked, notes: el("notes").value,
          });
        }
        return api("POST", "/api/v1/complaints", {
          customer_id: customerId, call_uniqueid: ctx.call_uniqueid, category: el("category").value,
          severity: el("severity").value, description: el("description").value,
        });
      });
    } else {
      if (!ctx.call_uniqueid) return Promise.resolve();
      send = api("POST", "/api/v1/calls/" + encodeURIComponent(ctx.call_uniqueid) + "/disposition", {
        category: el("category").value, outcome: el("outcome").value, note: el("note").value,
      });
    }
    return send
      .then((out) => {
        msg.className = "msg ok";
        msg.textContent = t("saved") + (out && out.id !== undefined ? " #" + out.id : "");
        form.dataset.savedId = out && out.id !== undefined ? String(out.id) : "";
        if (name === "disposition") {
          showPending(pending.filter((u) => u !== ctx.call_uniqueid));
          refreshState();
        } else {
          form.reset();
        }
      })
      .catch((err) => {
        msg.className = "msg bad";
        msg.textContent = errorText(err);
      });
  }

  for (const [name, form] of Object.entries(forms)) {
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      submitForm(name, form);
    });
    form.querySelector(".cancel").addEventListener("click", closeForms);
  }
  $("btn-booking").addEventListener("click", () => openForm("booking"));
  $("btn-complaint").addEventListener("click", () => openForm("complaint"));
  $("btn-disposition").addEventListener("click", () => openForm("disposition"));

  // ------------------------------------------------------------------ keyboard
  const shortcuts = {
    Digit1: () => setState("available"),
    Digit2: () => setState("paused"),
    Digit3: () => setState("wrap_up"),
    KeyB: () => openForm("booking"),
    KeyC: () => openForm("complaint"),
    KeyD: () => openForm("disposition"),
  };
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape") {
      if (Object.values(forms).some((f) => !f.hidden)) { e.preventDefault(); closeForms(); }
      return;
    }
    if (!e.altKey || e.ctrlKey || e.metaKey) return;
    const action = shortcuts[e.code];
    if (action) {
      e.preventDefault();
      action();
    }
  });

  refreshState(true);
  connect();
})();
