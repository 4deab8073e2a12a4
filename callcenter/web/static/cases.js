// The case desk: complaints and bookings lists, a detail pane with the customer card, linked
// calls and the case timeline, and the actions of the ticket API (take, handover, status,
// notes). Plain JS, no dependencies. Data is rendered with textContent only.
(function () {
  "use strict";

  const boot = JSON.parse(document.getElementById("cases-boot").textContent);
  const S = boot.strings;
  const t = (key) => (key in S ? S[key] : key);
  const $ = (id) => document.getElementById(id);
  const PAGE = 50;

  const staff = new Map(boot.staff.map((u) => [u.id, u]));
  const dateFmt = new Intl.DateTimeFormat(boot.language, {
    timeZone: boot.timezone,
    year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
    hour12: false,
  });

  // ------------------------------------------------------------------ i18n
  for (const node of document.querySelectorAll("[data-t]")) node.textContent = t(node.dataset.t);
  $("tabs").setAttribute("aria-label", t("title"));
  $("user-name").textContent = boot.user.display_name;
  $("user-role").textContent = t("role_" + boot.user.role);
  $("logout-csrf").value = boot.csrf;

  // ------------------------------------------------------------------ helpers
  function el(tag, cls, value) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (value !== undefined) node.textContent = value;
    return node;
  }

  function shown(value) {
    return value === null || value === undefined || value === "" ? "—" : String(value);
  }

  function when(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    return isNaN(d.getTime()) ? String(iso) : dateFmt.format(d);
  }

  function who(id) {
    if (id === null || id === undefined) return t("system");
    const u = staff.get(id);
    return u ? u.name + (id === boot.user.id ? " (" + t("you") + ")" : "") : "#" + id;
  }

  function facts(dl, rows) {
    dl.textContent = "";
    for (const [key, value, cls] of rows) {
      dl.appendChild(el("dt", "", t(key)));
      dl.appendChild(el("dd", cls || "", shown(value)));
    }
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
      if (resp.status === 401) { window.location.assign("/login?next=/cases"); }
      if (!resp.ok) {
        const err = (data && data.error) || { code: String(resp.status), message: resp.statusText };
        err.status = resp.status;
        throw err;
      }
      return data;
    });
  }

  // An API error next to its form: the localised meaning of the code, the server's message,
  // and each field message (the field is marked aria-invalid).
  function showError(msg, err, form) {
    msg.className = "msg bad";
    msg.textContent = "";
    const known = "err_" + err.code in S ? t("err_" + err.code) : t("failed");
    msg.appendChild(el("strong", "", known));
    msg.appendChild(el("span", "code", " [" + (err.code || err.status || "error") + "] "));
    if (err.message) msg.appendChild(el("span", "", err.message));
    if (err.fields) {
      const ul = el("ul");
      for (const [field, text] of Object.entries(err.fields)) {
        ul.appendChild(el("li", "", field + ": " + text));
        const input = form && form.elements.namedItem(field);
        if (input && input.setAttribute) input.setAttribute("aria-invalid", "true");
      }
      msg.appendChild(ul);
    }
  }

  function showOk(msg, key) {
    msg.className = "msg ok";
    msg.textContent = t(key);
  }

  function clearMsg(form) {
    const msg = form.querySelector(".msg");
    msg.className = "msg";
    msg.textContent = "";
    for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
    return msg;
  }

  function customerCard(box, customerId) {
    box.textContent = "";
    box.className = "card";
    box.appendChild(el("p", "muted", t("loading")));
    return api("GET", "/api/v1/customers/" + customerId)
      .then((c) => {
        box.textContent = "";
        if (c.key_customer) box.className = "card key";
        const head = el("p", "cname", c.name + " #" + c.id);
        if (c.key_customer) head.appendChild(el("span", "badge key", t("keyCustomer")));
        if (c.provisional) head.appendChild(el("span", "badge muted", t("provisional")));
        box.appendChild(head);
        const dl = el("dl", "facts");
        const rows = [
          ["company", c.company],
          ["numbers", (c.numbers || []).map((n) => n.raw || n.normalised || "").join(", ")],
          ["creditGrade", c.credit_grade],
          ["customerLanguage", c.preferred_language],
          ["notes", c.notes],
        ];
        if (c.do_not_call) rows.push(["doNotCall", t("yes")]);
        facts(dl, rows);
        box.appendChild(dl);
      })
      .catch((err) => {
        box.textContent = "";
        box.appendChild(el("p", "bad", t("customerUnavailable") + " (" + (err.code || "") + ")"));
      });
  }

  function timeline(list, path) {
    list.textContent = "";
    return api("GET", path)
      .then((events) => {
        list.textContent = "";
        if (!events.length) list.appendChild(el("li", "muted", t("none")));
        for (const ev of events) {
          const li = el("li");
          const head = el("p", "tl-head");
          head.appendChild(el("time", "", when(ev.at)));
          head.appendChild(document.createTextNode(" · "));
          head.appendChild(el("b", "", who(ev.actor_user_id)));
          head.appendChild(document.createTextNode(" · "));
          head.appendChild(el("span", "tl-action", "act_" + ev.action in S ? t("act_" + ev.action) : ev.action));
          li.appendChild(head);
          const keys = Array.from(new Set(Object.keys(ev.before || {}).concat(Object.keys(ev.after || {}))));
          if (keys.length) {
            const changes = el("ul", "tl-changes");
            for (const key of keys) {
              const before = fieldValue(key, ev.before ? ev.before[key] : undefined);
              const after = fieldValue(key, ev.after ? ev.after[key] : undefined);
              if (before === after) continue;
              changes.appendChild(
                el("li", "", ("f_" + key in S ? t("f_" + key) : key) + ": " + before + " → " + after)
              );
            }
            li.appendChild(changes);
          }
          if (ev.note) li.appendChild(el("p", "tl-note pre", ev.note));
          list.appendChild(li);
        }
      })
      .catch((err) => list.appendChild(el("li", "bad", t("failed") + " (" + (err.code || "") + ")")));
  }

  function fieldValue(key, value) {
    if (value === undefined || value === null || value === "") return "—";
    if (key === "owner_id" || key === "created_by") return who(value);
    if (key === "customer_id") return "#" + value;
    if (key === "severity") return t("severity_" + value);
    if (key === "status") return "cstatus_" + value in S ? t("cstatus_" + value) : t("bstatus_" + value);
    if (Array.isArray(value)) return value.join(", ");
    if (typeof value === "string" && /^\d{4}-\d\d-\d\dT/.test(value)) return when(value);
    if (typeof value === "boolean") return t(value ? "yes" : "no");
    return typeof value === "object" ? JSON.stringify(value) : String(value);
  }

  // no status is preselected: a wrong default (cancel!) must not be one Enter away
  // a move with its own name (reopen, back from technical) is labelled by it
  function fillStatusSelect(select, options, prefix, from) {
    const keep = select.value; // a choice still allowed survives a refresh
    select.textContent = "";
    const none = el("option", "", t("chooseStatus"));
    none.value = "";
    select.appendChild(none);
    for (const status of options) {
      const move = "move_" + from + "_" + status;
      const opt = el("option", "", move in S ? t(move) : t(prefix + status));
      opt.value = status;
      select.appendChild(opt);
    }
    select.value = options.includes(keep) ? keep : "";
  }

  // ------------------------------------------------------------------ tabs
  const tabs = [$("tab-c"), $("tab-b")];
  function selectTab(tab, focus) {
    for (const other of tabs) {
      const on = other === tab;
      other.setAttribute("aria-selected", on ? "true" : "false");
      other.tabIndex = on ? 0 : -1;
      $(other.getAttribute("aria-controls")).hidden = !on;
    }
    if (focus) tab.focus();
    if (tab === tabs[1] && !bookings.loaded) bookings.load();
  }
  for (const tab of tabs) {
    tab.addEventListener("click", () => selectTab(tab, false));
    tab.addEventListener("keydown", (e) => {
      if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
        e.preventDefault();
        selectTab(tabs[(tabs.indexOf(tab) + 1) % tabs.length], true);
      }
    });
  }

  // ------------------------------------------------------------------ paging
  // Keyset paging: each page's `next` cursor leads on, the cursors of the pages before are kept
  // for "previous" (offsets repeat rows while new cases arrive on top of the list).
  // Keyset paging: `back` keeps the positions before each Next. While a page moved to is loading
  // both buttons are off (a second Next would push the same cursor again); a load that fails
  // goes back to where it was (`failed`), so Next or Previous can be tried again.
  class Pager {
    constructor(prefix) { this.prefix = prefix; this.reset(); }
    reset() {
      this.cursor = null; this.next = null; this.back = []; this.start = 0; this.shown = 0;
      this.before = null;
    }
    params() {
      const p = new URLSearchParams({ limit: String(PAGE) });
      if (this.cursor) p.set("cursor", this.cursor);
      return p;
    }
    move() {
      this.before = { cursor: this.cursor, next: this.next, back: this.back.slice(), start: this.start };
      this.buttons(true, true);
    }
    forward() {
      if (!this.next || this.before) return false;
      this.move();
      this.back.push([this.cursor, this.start]);
      this.cursor = this.next;
      this.next = null;
      this.start += this.shown;
      return true;
    }
    backward() {
      if (!this.back.length || this.before) return false;
      this.move();
      [this.cursor, this.start] = this.back.pop();
      return true;
    }
    failed() {
      if (this.before) Object.assign(this, this.before);
      this.before = null;
      this.buttons(this.back.length === 0, !this.next);
    }
    buttons(prevOff, nextOff) {
      $("prev-" + this.prefix).disabled = prevOff;
      $("next-" + this.prefix).disabled = nextOff;
    }
    show(page) {
      this.before = null;
      this.next = page.next || null;
      this.shown = page.items.length;
      const count = $("count-" + this.prefix);
      count.className = "muted";
      count.textContent = t("shown").replace("{from}", this.shown ? this.start + 1 : 0)
        .replace("{to}", this.start + this.shown).replace("{total}", page.total);
      this.buttons(this.back.length === 0, !this.next);
    }
  }

  // ------------------------------------------------------------------ complaints
  const complaints = {
    pager: new Pager("c"),
    current: null,
    rows: new Map(),

    query() {
      const f = $("filter-c").elements;
      const p = this.pager.params();
      if (f.scope.value === "mine") p.set("owner_id", String(boot.user.id));
      if (f.scope.value === "unowned") p.set("unowned", "true");
      if (f.status.value) p.set("status", f.status.value);
      if (f.overdue.checked) p.set("overdue", "true");
      if (f.q.value.trim()) p.set("q", f.q.value.trim());
      return p;
    },

    seq: 0,

    load() {
      const body = $("list-c").tBodies[0];
      const seq = ++this.seq;
      $("list-c").setAttribute("aria-busy", "true");
      return api("GET", "/api/v1/complaints?" + this.query())
        .then((page) => {
          if (seq !== this.seq) return; // a newer filter is on its way
          $("list-c").removeAttribute("aria-busy");
          body.textContent = "";
          this.rows.clear();
          for (const c of page.items) body.appendChild(this.row(c));
          if (!page.items.length) {
            const tr = el("tr");
            const td = el("td", "muted", t("noComplaints"));
            td.colSpan = 6;
            tr.appendChild(td);
            body.appendChild(tr);
          }
          this.pager.show(page);
        })
        .catch((err) => {
          if (seq !== this.seq) return;
          $("list-c").removeAttribute("aria-busy");
          this.pager.failed();
          showError($("count-c"), err, null);
        });
    },

    row(c) {
      const tr = el("tr", c.breached ? "breached" : "");
      tr.dataset.id = c.id;
      if (this.current && this.current.id === c.id) tr.classList.add("current");
      const idCell = el("td");
      const open = el("button", "rowlink", "#" + c.id);
      open.type = "button";
      open.setAttribute("aria-label", t("openComplaint") + " #" + c.id + (c.breached ? " — " + t("breached") : ""));
      open.addEventListener("click", () => this.open(c.id, true));
      idCell.appendChild(open);
      tr.appendChild(idCell);
      tr.appendChild(el("td", "", c.category));
      tr.appendChild(el("td", "sev-" + c.severity, t("severity_" + c.severity)));
      tr.appendChild(el("td", "", t("cstatus_" + c.status)));
      tr.appendChild(el("td", c.owner_id === null ? "muted" : "", c.owner_id === null ? t("unowned") : who(c.owner_id)));
      const due = el("td", c.breached ? "due bad" : "due", when(c.resolution_due));
      if (c.breached) due.appendChild(el("span", "badge bad", t("overdue")));
      tr.appendChild(due);
      this.rows.set(c.id, tr);
      return tr;
    },

    open(id, focus) {
      return api("GET", "/api/v1/complaints/" + id)
        .then((c) => {
          for (const form of ["status-c", "handover-c", "note-c"]) {
            clearMsg($(form));
            $(form).reset();
          }
          $("dc-msg").textContent = "";
          this.show(c, true);
          if (focus) $("detail-c").focus();
        })
        .catch((err) => showError($("count-c"), err, null));
    },

    show(c, withCustomer) {
      this.current = c;
      const pane = $("detail-c");
      pane.hidden = false;
      pane.classList.toggle("breached", c.breached);
      for (const [rid, tr] of this.rows) tr.classList.toggle("current", rid === c.id);
      $("dc-h").textContent = t("complaint") + " #" + c.id + " · " + c.category;
      $("dc-breach").hidden = !c.breached;
      const mine = c.owner_id === boot.user.id;
      facts($("dc-facts"), [
        ["status", t("cstatus_" + c.status)],
        ["colSeverity", t("severity_" + c.severity)],
        ["owner", c.owner_id === null ? t("unowned") : who(c.owner_id)],
        ["createdBy", who(c.created_by)],
        ["createdAt", when(c.created_at)],
        ["firstResponseDue", when(c.first_response_due), c.first_response_breached ? "bad" : ""],
        ["firstRespondedAt", when(c.first_responded_at)],
        ["resolutionDue", when(c.resolution_due), c.resolution_breached ? "bad" : ""],
        ["resolvedAt", when(c.resolved_at)],
        ["outcome", c.outcome],
        ["customerInformedAt", when(c.customer_informed_at)],
        ["closedAt", when(c.closed_at)],
        ["reopenCount", c.reopen_count],
      ]);
      $("dc-desc").textContent = c.description;
      const calls = $("dc-calls");
      calls.textContent = "";
      if (!c.calls.length) calls.appendChild(el("li", "muted", t("none")));
      for (const uid of c.calls) {
        const li = el("li", "", uid);
        calls.appendChild(li);
        api("GET", "/api/v1/calls/" + encodeURIComponent(uid))
          .then((call) => {
            li.textContent = when(call.started_at) + " · " + shown(call.caller_number) + " · " +
              shown(call.queue) + " · " + shown(call.agent) + " (" + uid + ")";
          })
          .catch(() => {});
      }
      // actions: take when unowned; status/handover/note for the owner (or a supervisor)
      const unowned = c.owner_id === null;
      $("take-box").hidden = !unowned || c.status === "closed";
      const acts = mine || boot.user.handler;
      const next = boot.complaint_transitions[c.status] || [];
      $("status-c").hidden = !acts || !next.length;
      fillStatusSelect($("status-c").elements.status, next, "cstatus_", c.status);
      this.statusExtras();
      $("handover-c").hidden = !acts || c.status === "closed";
      this.fillPicker(c);
      $("note-c").hidden = !acts;
      // "the customer was told" only once there is an outcome to tell
      $("note-c").querySelector("label.inline").hidden = !["resolved", "closed"].includes(c.status);
      if (withCustomer) customerCard($("dc-customer"), c.customer_id);
      timeline($("dc-timeline"), "/api/v1/complaints/" + c.id + "/timeline");
    },

    statusExtras() {
      const form = $("status-c");
      const target = form.elements.status.value;
      for (const label of form.querySelectorAll("[data-when]")) label.hidden = label.dataset.when !== target;
    },

    fillPicker(c) {
      const select = $("handover-c").elements.to_user_id;
      select.textContent = "";
      const none = el("option", "", t("choosePerson"));
      none.value = "";
      select.appendChild(none);
      for (const u of boot.staff) {
        if (!u.can_own || u.id === c.owner_id) continue;
        const opt = el("option", "", u.name + " · " + t("role_" + u.role) + (u.group ? " · " + t("group_" + u.group) : ""));
        opt.value = String(u.id);
        select.appendChild(opt);
      }
    },

    // run an action on the current complaint; show the answer next to `form`
    act(form, path, body, okKey) {
      const msg = form ? clearMsg(form) : $("dc-msg");
      if (!form) { msg.className = "msg"; msg.textContent = ""; }
      const id = this.current.id;
      return api("POST", "/api/v1/complaints/" + id + path, body)
        .then((c) => {
          if (form) form.reset();
          this.show(c, false);
          const target = form ? form.querySelector(".msg") : $("dc-msg");
          showOk(target, okKey);
          this.load();
        })
        .catch((err) => {
          showError(msg, err, form);
          // the complaint may have changed under us (someone took it first): show it as it is now
          if (err.status === 409 || err.status === 403) {
            const seen = this.current && this.current.updated_at;
            api("GET", "/api/v1/complaints/" + id)
              .then((c) => {
                if (c.updated_at === seen || !this.current || this.current.id !== id) return;
                this.show(c, false);
                this.load();
              })
              .catch(() => {});
          }
        });
    },
  };

  $("filter-c").addEventListener("submit", (e) => {
    e.preventDefault();
    complaints.pager.reset();
    complaints.load();
  });
  for (const name of ["scope", "status", "overdue"]) {
    $("filter-c").elements[name].addEventListener("change", () => {
      complaints.pager.reset();
      complaints.load();
    });
  }
  $("prev-c").addEventListener("click", () => { if (complaints.pager.backward()) complaints.load(); });
  $("next-c").addEventListener("click", () => { if (complaints.pager.forward()) complaints.load(); });
  $("dc-close").addEventListener("click", () => closePane("c"));

  $("btn-take").addEventListener("click", () => complaints.act(null, "/take", undefined, "taken"));

  $("status-c").elements.status.addEventListener("change", () => complaints.statusExtras());
  // a status must be chosen; checked here before anything is sent
  function statusChosen(form) {
    if (form.elements.status.value) return true;
    showError(clearMsg(form), { code: "validation_failed", message: "", fields: { status: t("needStatus") } }, form);
    form.elements.status.focus();
    return false;
  }

  $("status-c").addEventListener("submit", (e) => {
    e.preventDefault();
    if (!statusChosen(e.target)) return;
    const f = e.target.elements;
    const body = { status: f.status.value, note: f.note.value };
    if (f.status.value === "resolved" && f.outcome.value.trim()) body.outcome = f.outcome.value.trim();
    if (f.status.value === "closed") body.customer_informed = f.customer_informed.checked;
    complaints.act(e.target, "/status", body, "statusChanged");
  });

  $("handover-c").addEventListener("submit", (e) => {
    e.preventDefault();
    const form = e.target;
    const f = form.elements;
    const msg = clearMsg(form);
    const fields = {};
    if (!f.to_user_id.value) fields.to_user_id = t("needPerson");
    if (!f.reason.value.trim()) fields.reason = t("needReason");
    if (Object.keys(fields).length) {
      showError(msg, { code: "validation_failed", message: "", fields }, form);
      (f.to_user_id.value ? f.reason : f.to_user_id).focus();
      return;
    }
    complaints.act(form, "/handover", { to_user_id: Number(f.to_user_id.value), reason: f.reason.value }, "handedOver");
  });

  $("note-c").addEventListener("submit", (e) => {
    e.preventDefault();
    const f = e.target.elements;
    const body = { note: f.note.value, customer_informed: f.customer_informed.checked };
    complaints.act(e.target, "/notes", body, "noteAdded");
  });

  // ------------------------------------------------------------------ bookings
  const bookings = {
    pager: new Pager("b"),
    current: null,
    loaded: false,
    seq: 0,
    rows: new Map(),

    load() {
      this.loaded = true;
      const f = $("filter-b").elements;
      const p = this.pager.params();
      if (f.status.value) p.set("status", f.status.value);
      if (f.urgent.checked) p.set("urgent", "true");
      const body = $("list-b").tBodies[0];
      const seq = ++this.seq;
      $("list-b").setAttribute("aria-busy", "true");
      return api("GET", "/api/v1/bookings?" + p)
        .then((page) => {
          if (seq !== this.seq) return;
          $("list-b").removeAttribute("aria-busy");
          body.textContent = "";
          this.rows.clear();
          for (const b of page.items) body.appendChild(this.row(b));
          if (!page.items.length) {
            const tr = el("tr");
            const td = el("td", "muted", t("noBookings"));
            td.colSpan = 5;
            tr.appendChild(td);
            body.appendChild(tr);
          }
          this.pager.show(page);
        })
        .catch((err) => {
          if (seq !== this.seq) return;
          $("list-b").removeAttribute("aria-busy");
          this.pager.failed();
          showError($("count-b"), err, null);
        });
    },

    row(b) {
      const tr = el("tr", b.urgent ? "urgent" : "");
      tr.dataset.id = b.id;
      const idCell = el("td");
      const open = el("button", "rowlink", "#" + b.id);
      open.type = "button";
      open.setAttribute("aria-label", t("openBooking") + " #" + b.id + (b.urgent ? " — " + t("urgent") : ""));
      open.addEventListener("click", () => this.open(b.id, true));
      idCell.appendChild(open);
      tr.appendChild(idCell);
      tr.appendChild(el("td", "", b.item));
      tr.appendChild(el("td", "", when(b.scheduled_for)));
      tr.appendChild(el("td", "", t("bstatus_" + b.status)));
      const urgent = el("td");
      if (b.urgent) urgent.appendChild(el("span", "badge urgent", t("urgent")));
      tr.appendChild(urgent);
      this.rows.set(b.id, tr);
      return tr;
    },

    open(id, focus) {
      return api("GET", "/api/v1/bookings/" + id)
        .then((b) => {
          clearMsg($("status-b"));
          $("status-b").reset();
          this.show(b, true);
          if (focus) $("detail-b").focus();
        })
        .catch((err) => showError($("count-b"), err, null));
    },

    show(b, withCustomer) {
      this.current = b;
      $("detail-b").hidden = false;
      for (const [rid, tr] of this.rows) tr.classList.toggle("current", rid === b.id);
      $("db-h").textContent = t("booking") + " #" + b.id + " · " + b.item;
      $("db-urgent").hidden = !b.urgent;
      facts($("db-facts"), [
        ["status", t("bstatus_" + b.status)],
        ["item", b.item],
        ["scheduledFor", when(b.scheduled_for)],
        ["forWhom", b.for_whom],
        ["urgent", t(b.urgent ? "yes" : "no"), b.urgent ? "bad" : ""],
        ["notes", b.notes],
        ["call", b.call_uniqueid],
        ["createdBy", who(b.created_by)],
        ["createdAt", when(b.created_at)],
        ["updatedAt", when(b.updated_at)],
      ]);
      const next = boot.booking_transitions[b.status] || [];
      $("status-b").hidden = !next.length;
      fillStatusSelect($("status-b").elements.status, next, "bstatus_", b.status);
      if (withCustomer) customerCard($("db-customer"), b.customer_id);
      timeline($("db-timeline"), "/api/v1/bookings/" + b.id + "/timeline");
    },
  };

  $("filter-b").addEventListener("submit", (e) => { e.preventDefault(); bookings.pager.reset(); bookings.load(); });
  for (const name of ["status", "urgent"]) {
    $("filter-b").elements[name].addEventListener("change", () => { bookings.pager.reset(); bookings.load(); });
  }
  $("prev-b").addEventListener("click", () => { if (bookings.pager.backward()) bookings.load(); });
  $("next-b").addEventListener("click", () => { if (bookings.pager.forward()) bookings.load(); });
  $("db-close").addEventListener("click", () => closePane("b"));

  $("status-b").addEventListener("submit", (e) => {
    e.preventDefault();
    const form = e.target;
    if (!statusChosen(form)) return;
    const msg = clearMsg(form);
    const f = form.elements;
    api("POST", "/api/v1/bookings/" + bookings.current.id + "/status", { status: f.status.value, note: f.note.value })
      .then((b) => {
        form.reset();
        bookings.show(b, false);
        showOk(msg, "statusChanged");
        bookings.load();
      })
      .catch((err) => showError(msg, err, form));
  });

  // ------------------------------------------------------------------ keyboard
  // Esc closes the detail pane and puts focus back on its row in the list.
  function closePane(kind) {
    const desk = kind === "c" ? complaints : bookings;
    $(kind === "c" ? "detail-c" : "detail-b").hidden = true;
    const tr = desk.current && desk.rows.get(desk.current.id);
    desk.current = null;
    for (const row of desk.rows.values()) row.classList.remove("current");
    if (tr) tr.querySelector("button").focus();
    else $(kind === "c" ? "list-c" : "list-b").focus();
  }

  document.addEventListener("keydown", (e) => {
    if (e.key !== "Escape") return;
    const kind = $("panel-c").hidden ? "b" : "c";
    if (!$(kind === "c" ? "detail-c" : "detail-b").hidden) {
      e.preventDefault();
      closePane(kind);
    }
  });

  // ------------------------------------------------------------------ start
  // /cases#complaint-12 or #booking-7 opens that case (links from elsewhere)
  const wanted = /^#(complaint|booking)-(\d+)$/.exec(window.location.hash);
  complaints.load().then(() => {
    if (wanted && wanted[1] === "complaint") complaints.open(Number(wanted[2]), true);
  });
  if (wanted && wanted[1] === "booking") {
    selectTab(tabs[1], false);
    bookings.open(Number(wanted[2]), true);
  }
})();
