// The console's only script: live refresh of [data-live] sections, the webhook form's
// type/event selects, and checking filters and URLs as they are typed. No framework.
"use strict";

(function () {
  const meta = (name) => {
    const el = document.querySelector(`meta[name="${name}"]`);
    return el ? el.content : "";
  };
  const prefix = meta("console-prefix");

  // Live refresh: fetch this same page and swap the section in place.
  function live(section) {
    let seconds = Number(section.dataset.refresh || 0);
    const note = document.querySelector("[data-live-note]");
    if (!seconds) return;
    const tick = async () => {
      if (document.visibilityState !== "visible") {
        setTimeout(tick, seconds * 1000);
        return;
      }
      try {
        const response = await fetch(window.location.href, {
          credentials: "same-origin",
          headers: { Accept: "text/html" },
        });
        if (response.redirected && new URL(response.url).pathname === `${prefix}/login`) {
          if (note) note.textContent = "Your session ended: reload the page to log in again.";
          return;
        }
        if (response.ok) {
          const page = new DOMParser().parseFromString(await response.text(), "text/html");
          const fresh = page.getElementById(section.id);
          if (fresh) {
            const adopted = document.importNode(fresh, true);
            section.replaceWith(adopted);
            section = adopted;
            seconds = Number(adopted.dataset.refresh || 0);
            const freshNote = page.querySelector("[data-live-note]");
            if (note) note.textContent = freshNote ? freshNote.textContent : "";
          }
        }
      } catch (error) {
        if (note) note.textContent = "Could not refresh; trying again.";
      }
      if (seconds) setTimeout(tick, seconds * 1000);
    };
    setTimeout(tick, seconds * 1000);
  }

  // Webhook form: offer the types of the webhook's level and the events of its type.
  function catalogue(form) {
    const type = form.querySelector("#type");
    const event = form.querySelector("#event");
    const kapp = form.querySelector("#kapp");
    if (!type || !event) return;
    const sync = () => {
      const level = kapp && kapp.value.trim() ? "kapp" : "space";
      for (const group of type.querySelectorAll("optgroup")) {
        const other = group.dataset.level !== level;
        group.hidden = other;
        for (const option of group.querySelectorAll("option")) option.disabled = other;
      }
      if (type.selectedOptions[0] && type.selectedOptions[0].disabled) type.value = "";
      for (const option of event.querySelectorAll("option[data-type]")) {
        const other = option.dataset.type !== type.value;
        option.hidden = other;
        option.disabled = other;
        option.textContent = option.value;
      }
      if (event.selectedOptions[0] && event.selectedOptions[0].disabled) event.value = "";
    };
    type.addEventListener("change", sync);
    if (kapp) kapp.addEventListener("input", sync);
    sync();
  }

  // Filters and URLs, parsed by the router's own parser as they are typed.
  function checker(input) {
    const output = document.getElementById(`${input.id}-check`);
    if (!output) return;
    let timer = null;
    let sent = 0;
    const show = (result) => {
      output.replaceChildren();
      output.className = "check " + (result.ok ? "ok" : "bad");
      if (result.ok) {
        output.textContent = "✓ parses";
        return;
      }
      const message = document.createElement("span");
      message.className = "message";
      message.textContent = result.message || result.error || "not valid";
      output.append(message);
      if (result.excerpt !== undefined && result.caret) {
        const pre = document.createElement("pre");
        pre.className = "caret";
        pre.textContent = `${result.excerpt}\n${result.caret}`;
        output.append(pre);
      }
    };
    const check = async () => {
      const mine = ++sent;
      if (input.dataset.check === "filter" && !input.value.trim()) {
        show({ ok: true });
        return;
      }
      try {
        const response = await fetch(`${prefix}/check`, {
          method: "POST",
          credentials: "same-origin",
          headers: {
            "Content-Type": "application/json",
            Accept: "application/json",
            "X-CSRF-Token": meta("csrf-token"),
          },
          body: JSON.stringify({ kind: input.dataset.check, text: input.value }),
        });
        const result = await response.json();
        if (mine === sent) show(response.ok ? result : { ok: false, message: result.error });
      } catch (error) {
        if (mine === sent) show({ ok: false, message: "could not check just now" });
      }
    };
    input.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(check, 250);
    });
    if (input.value) check();
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("[data-live]").forEach(live);
    document.querySelectorAll("form.webhook").forEach(catalogue);
    document.querySelectorAll("[data-check]").forEach(checker);
  });
})();
