// esim-notify console, API keys page: creates a key (POST /admin/keys,
// through Console.call, which sends the console's header) and shows it this
// once with a copy button. Revoking uses the page's data-method buttons
// (console.js). No inline script: the console's CSP allows none.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("key-form");
  if (!form) return;
  const $ = (id) => document.getElementById(id);

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const scopes = Array.from(form.querySelectorAll("input[name=scope]:checked")).map((c) => c.value);
    const networks = $("key-networks").value.split(",").map((s) => s.trim()).filter((s) => s);
    $("key-create").disabled = true;
    const r = await window.Console.call("POST", "/admin/keys", {
      name: $("key-name").value.trim(),
      scopes,
      networks,
    });
    $("key-create").disabled = false;
    if (!r.ok) {
      window.Console.flash((r.body && r.body.error) || ("failed with HTTP " + r.status), true);
      return;
    }
    $("key-text").textContent = r.body.key;
    $("key-shown").hidden = false;
    form.hidden = true;
    window.Console.flash("Key " + r.body.name + " created", false);
  });

  $("key-copy").addEventListener("click", async () => {
    const text = $("key-text").textContent;
    try {
      await navigator.clipboard.writeText(text);
      $("key-copied").textContent = "Copied";
    } catch (e) {
      // No clipboard (plain http on another host): select it for Ctrl+C.
      const range = document.createRange();
      range.selectNodeContents($("key-text"));
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      $("key-copied").textContent = "Selected: press Ctrl+C";
    }
  });
});
