// esim-notify console: what every page shares. Plain JavaScript, no build step.
//
// Every state-changing call carries X-Esim-Notify-Console: the admin listener
// refuses a browser's POST/PUT/DELETE without it, so a form on another site
// cannot make this browser retry, cancel or pause anything.
"use strict";

window.Console = (function () {
  const HEADER = { "X-Esim-Notify-Console": "1" };

  // Calls the admin API; resolves to {ok, status, body} whatever the outcome.
  async function call(method, url, body) {
    const init = { method, headers: Object.assign({}, HEADER), credentials: "same-origin" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(url, init);
    } catch (e) {
      return { ok: false, status: 0, body: { error: "the console cannot reach esim-notify: " + e.message } };
    }
    let data = null;
    const text = await resp.text();
    try {
      data = text ? JSON.parse(text) : null;
    } catch (e) {
      data = { error: text };
    }
    return { ok: resp.ok, status: resp.status, body: data };
  }

  function flash(message, bad) {
    const el = document.getElementById("flash");
    if (!el) return;
    el.textContent = message;
    el.classList.toggle("bad", !!bad);
    el.hidden = false;
    clearTimeout(flash.timer);
    flash.timer = setTimeout(() => { el.hidden = true; }, bad ? 12000 : 6000);
  }

  // Buttons with data-method/data-url: confirm, call, then reload the page
  // and say what happened (the message survives the reload).
  function wireActions() {
    document.querySelectorAll("button[data-method][data-url]").forEach((btn) => {
      btn.addEventListener("click", async () => {
        const question = btn.dataset.confirm;
        if (question && !window.confirm(question)) return;
        btn.disabled = true;
        const body = btn.dataset.body ? JSON.parse(btn.dataset.body) : undefined;
        const r = await call(btn.dataset.method, btn.dataset.url, body);
        if (r.ok) {
          let done = btn.dataset.done || "Done";
          if (r.body && r.body.lifted_suppression) {
            done += " (the automatic suppression of its address was lifted)";
          }
          if (r.body && r.body.notice !== undefined && r.body.recipient) {
            done += ": notice " + r.body.notice + " to " + r.body.recipient;
          }
          sessionStorage.setItem("console-flash", done);
          if (btn.dataset.then) window.location.assign(btn.dataset.then);
          else window.location.reload();
        } else {
          btn.disabled = false;
          flash((r.body && r.body.error) || ("failed with HTTP " + r.status), true);
        }
      });
    });
    // Forms with data-api-method/data-api-url: their filled fields as a JSON
    // body to the admin API (an empty field is left out), then the page again
    // with what the answer says it replaced.
    document.querySelectorAll("form[data-api-method][data-api-url]").forEach((form) => {
      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        const body = {};
        new FormData(form).forEach((v, k) => {
          if (typeof v === "string" && v.trim() !== "") body[k] = v.trim();
        });
        const submit = form.querySelector("[type=submit]");
        if (submit) submit.disabled = true;
        const r = await call(form.dataset.apiMethod, form.dataset.apiUrl, body);
        if (r.ok) {
          let done = form.dataset.done || "Done";
          const replaced = (r.body && r.body.replaced) || [];
          if (replaced.length) {
            done += "; replaced: " + replaced.map((x) => x.identifier + " " + x.value + " was " + x.email).join(", ");
          } else {
            done += "; it replaced no other address";
          }
          sessionStorage.setItem("console-flash", done);
          window.location.reload();
        } else {
          if (submit) submit.disabled = false;
          flash((r.body && r.body.error) || ("failed with HTTP " + r.status), true);
        }
      });
    });
    const pending = sessionStorage.getItem("console-flash");
    if (pending) {
      sessionStorage.removeItem("console-flash");
      flash(pending, false);
    }
  }

  document.addEventListener("DOMContentLoaded", wireActions);
  return { call, flash };
})();
