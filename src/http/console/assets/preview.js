// esim-notify console, templates page: re-renders the selected template
// from the files on disk as the sample data, locale or timezone change
// (POST /admin/preview/render), shows the HTML part in its own sandboxed
// document (GET /admin/preview/frame), reloads the sender, sends a test.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("preview");
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  const template = root.dataset.template;
  const vars = $("vars");
  const locale = $("locale");
  const timezone = $("timezone");
  const frame = $("frame");
  const frameWrap = $("frame-wrap");
  const state = $("render-state");
  let seq = 0;
  let timer = null;

  // --- width and colour switches (remembered across pages) ---
  function choose(attr, value) {
    document.querySelectorAll("button[data-" + attr + "]").forEach((b) => {
      b.setAttribute("aria-pressed", String(b.dataset[attr] === value));
    });
    if (attr === "width") {
      frameWrap.classList.toggle("mobile", value === "mobile");
      frameWrap.classList.toggle("desktop", value !== "mobile");
    } else {
      frameWrap.classList.toggle("dark", value === "dark");
      frameWrap.classList.toggle("light", value !== "dark");
    }
    try { localStorage.setItem("console-" + attr, value); } catch (e) { /* private mode */ }
  }
  ["width", "theme"].forEach((attr) => {
    document.querySelectorAll("button[data-" + attr + "]").forEach((b) => {
      b.addEventListener("click", () => choose(attr, b.dataset[attr]));
    });
    let saved = null;
    try { saved = localStorage.getItem("console-" + attr); } catch (e) { /* private mode */ }
    if (saved) choose(attr, saved);
  });

  // --- rendering ---
  function problemItem(p) {
    const li = document.createElement("li");
    const file = document.createElement("code");
    file.className = "file";
    file.textContent = p.file || "";
    li.appendChild(file);
    if (p.line) {
      const pos = document.createElement("span");
      pos.className = "pos";
      pos.textContent = "line " + p.line + (p.column ? ", column " + p.column : "");
      li.appendChild(document.createTextNode(" "));
      li.appendChild(pos);
    }
    const msg = document.createElement("span");
    msg.className = "msg";
    msg.textContent = p.message;
    li.appendChild(document.createTextNode(" "));
    li.appendChild(msg);
    return li;
  }

  function showProblems(list) {
    const ul = $("problems");
    ul.replaceChildren(...list.map(problemItem));
    ul.hidden = list.length === 0;
  }

  function showSender(a) {
    const note = $("sender-note");
    note.dataset.sender = a.sender;
    note.className = "note " + (a.sender === "same" ? "ok" : "warn");
    note.textContent = a.sender_note;
  }

  function frameUrl(v) {
    const q = new URLSearchParams({ template, locale: locale.value, timezone: timezone.value, vars: JSON.stringify(v) });
    return "/admin/preview/frame?" + q.toString();
  }

  function readVars() {
    try {
      const v = JSON.parse(vars.value);
      if (v === null || typeof v !== "object" || Array.isArray(v)) throw new Error("the sample must be a JSON object");
      vars.classList.remove("invalid");
      $("vars-status").textContent = "";
      return v;
    } catch (e) {
      vars.classList.add("invalid");
      $("vars-status").textContent = "Sample data: " + e.message;
      return null;
    }
  }

  async function render() {
    const v = readVars();
    if (v === null) return;
    const mine = ++seq;
    state.textContent = "rendering…";
    const r = await Console.call("POST", "/admin/preview/render", {
      template, locale: locale.value, timezone: timezone.value, vars: v,
    });
    if (mine !== seq) return; // a newer render is on its way
    if (!r.ok) {
      state.textContent = "";
      showProblems([{ file: "", message: (r.body && r.body.error) || ("HTTP " + r.status) }]);
      return;
    }
    const a = r.body;
    const subject = $("subject");
    if (a.subject !== null) {
      subject.textContent = a.subject;
      subject.classList.remove("missing");
    } else {
      subject.textContent = "cannot render: see the problems below";
      subject.classList.add("missing");
    }
    $("text").textContent = a.text !== null ? a.text : "";
    showProblems(a.problems || []);
    showSender(a);
    frame.src = frameUrl(v);
    $("tpl-locale").textContent = locale.value;
    state.textContent = "rendered " + new Date().toLocaleTimeString();
    root.dataset.rendered = String(mine);
  }

  function soon() {
    clearTimeout(timer);
    timer = setTimeout(render, 300);
  }

  // The selectors write the customer's locale and timezone into the sample,
  // where the template helpers read them.
  function syncCustomer() {
    const v = readVars();
    if (v === null) return;
    if (typeof v.customer !== "object" || v.customer === null) v.customer = {};
    v.customer.locale = locale.value;
    v.customer.timezone = timezone.value;
    vars.value = JSON.stringify(v, null, 2);
  }

  vars.addEventListener("input", soon);
  locale.addEventListener("change", () => { syncCustomer(); render(); });
  timezone.addEventListener("change", () => { syncCustomer(); render(); });
  $("reset-vars").addEventListener("click", () => {
    vars.value = vars.dataset.sample;
    syncCustomer();
    render();
  });

  // --- reload the sender ---
  $("reload-now").addEventListener("click", async (ev) => {
    const btn = ev.currentTarget;
    const out = $("reload-result");
    btn.disabled = true;
    out.className = "result";
    out.textContent = "reloading…";
    const r = await Console.call("POST", "/admin/reload");
    btn.disabled = false;
    if (r.ok) {
      out.className = "result ok";
      const later = (r.body.restart_needed || []).join("; ");
      out.textContent = "Taken: the sender now uses the files on disk." + (later ? " " + later + "." : "");
    } else {
      out.className = "result bad";
      const problems = (r.body && r.body.problems) || [];
      out.textContent = "Refused, the previous templates stay in force: " +
        (problems.length ? problems.join("; ") : (r.body && r.body.error) || ("HTTP " + r.status));
    }
    render();
  });

  // --- send me this one ---
  $("send-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const v = readVars();
    if (v === null) return;
    const out = $("send-result");
    const btn = ev.currentTarget.querySelector("button[type=submit]");
    btn.disabled = true;
    out.className = "result";
    out.textContent = "sending…";
    const r = await Console.call("POST", "/admin/preview/send", {
      template, locale: locale.value, timezone: timezone.value, vars: v, to: $("send-to").value,
    });
    btn.disabled = false;
    if (r.ok) {
      out.className = "result ok";
      out.textContent = "Sent to " + r.body.to + " via " + r.body.via + ".";
    } else {
      out.className = "result bad";
      out.textContent = (r.body && r.body.error) || ("failed with HTTP " + r.status);
    }
  });

  root.dataset.rendered = "0";
});
