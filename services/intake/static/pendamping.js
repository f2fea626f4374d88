/* The companion's page on a poor connection (issue 14): a report is kept on the phone
   (localStorage) the moment it is submitted and sent when there is a connection, again until
   the server has answered. Each kept report carries its own visit_id, so a report the server
   received but whose answer was lost is not filed twice (the server answers "replayed").
   Without this script the form is a plain post. */
(function () {
  "use strict";
  var KEY = "sinergi.kunjungan.antrian";
  var form = document.getElementById("visit-form");
  var box = document.getElementById("kirim");
  var statusEl = document.getElementById("kirim-status");
  var list = document.getElementById("antrian");
  var sending = false;
  var done = [];  // answers heard in this visit of the page: [{label, ok, message}]

  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/ui/sw.js", {scope: "/ui/pendamping"}).catch(function () {});
  }
  var logout = document.querySelector("form[action='/ui/keluar']");
  if (logout && window.caches) {  // the kept copy of the caseload goes with the login
    logout.addEventListener("submit", function () { caches.delete("sinergi-pendamping-v1"); });
  }
  if (!form) { return; }

  function newId() {  // a random (v4) UUID; crypto.randomUUID needs HTTPS, this does not
    var b = new Uint8Array(16);
    crypto.getRandomValues(b);
    b[6] = (b[6] & 15) | 64;
    b[8] = (b[8] & 63) | 128;
    var h = Array.prototype.map.call(b, function (x) { return (x + 256).toString(16).slice(1); }).join("");
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
  }
  function load() {
    try { return JSON.parse(localStorage.getItem(KEY) || "[]"); } catch (e) { return []; }
  }
  function save(q) { localStorage.setItem(KEY, JSON.stringify(q)); }
  function field(item, name) {
    for (var i = 0; i < item.fields.length; i++) { if (item.fields[i][0] === name) { return item.fields[i][1]; } }
    return "";
  }
  function row(nik) { return document.querySelector("#caseload li[data-nik='" + nik + "']"); }

  function render() {
    var q = load();
    list.textContent = "";
    q.forEach(function (item) {
      var li = document.createElement("li");
      li.className = "pending";
      li.textContent = item.label + ": tersimpan di ponsel, akan dikirim";
      list.appendChild(li);
      var r = row(field(item, "beneficiary").split("/")[0]);
      if (r) { r.className = "kept"; r.querySelector(".state").textContent = "Tersimpan di ponsel, akan dikirim"; }
      var opt = form.querySelector("option[value='" + field(item, "beneficiary") + "']");
      if (opt) { opt.disabled = true; }
    });
    done.forEach(function (d) {
      var li = document.createElement("li");
      li.className = d.ok ? "sent" : "refused";
      li.textContent = d.label + ": " + d.message;
      list.appendChild(li);
    });
    var who = form.querySelector("#v-who");
    if (who.selectedIndex >= 0 && who.options[who.selectedIndex].disabled) {
      // the one just kept is not offered again: on to the next one still due
      for (var i = 0; i < who.options.length; i++) { if (!who.options[i].disabled) { who.selectedIndex = i; break; } }
    }
    var count = document.querySelector("#ringkas strong");
    if (count) { count.textContent = String(document.querySelectorAll("#caseload li.done").length); }
    box.hidden = q.length === 0 && done.length === 0;
    if (q.length) {
      statusEl.textContent = q.length + " laporan tersimpan di ponsel, akan dikirim saat ada sambungan.";
    } else if (done.length) {
      statusEl.textContent = "Semua laporan sudah terkirim.";
    }
  }

  function flush() {
    if (sending || !load().length) { return Promise.resolve(); }
    sending = true;
    var item = load()[0];
    return fetch(form.action, {
      method: "POST", credentials: "same-origin", headers: {"Accept": "application/json"},
      body: new URLSearchParams(item.fields)
    }).then(function (resp) {
      return resp.json().catch(function () { return null; }).then(function (body) {
        if (resp.status === 401) {
          statusEl.textContent = "Sesi berakhir: masuk lagi. Laporan tetap tersimpan di ponsel.";
          return false;
        }
        if (!body || resp.status >= 500) { return false; }  // the server could not: try again later
        // answered: the report is filed (or refused for a reason a retry will not change)
        save(load().filter(function (x) { return x.id !== item.id; }));
        done.push({label: item.label, ok: body.ok, message: body.ok ? "terkirim" : body.message});
        var r = row(body.nik);
        if (r && body.ok) { r.className = "done"; r.querySelector(".state").textContent = "Dikunjungi " + body.visit_date; }
        if (r && !body.ok) {  // refused (e.g. already visited this month): the companion sees why
          r.className = "due";
          r.querySelector(".state").textContent = "Belum dikunjungi";
          var opt = form.querySelector("option[value='" + field(item, "beneficiary") + "']");
          if (opt) { opt.disabled = false; }
        }
        return true;
      });
    }, function () { return false; })  // no connection: it stays on the phone
      .then(function (more) {
        sending = false;
        render();
        if (more) { return flush(); }
      });
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var fields = [];
    new FormData(form).forEach(function (v, k) { fields.push([k, String(v)]); });
    var who = form.querySelector("#v-who");
    var label = who.options[who.selectedIndex].text + ", " + form.querySelector("#v-date").value;
    var q = load();
    q.push({id: form.elements.visit_id.value, fields: fields, label: label});
    save(q);
    var today = form.querySelector("#v-date").value;
    form.reset();
    form.elements.visit_id.value = newId();
    form.querySelector("#v-date").value = today;
    render();
    statusEl.focus();
    flush();
  });

  // the page may come from the phone's copy: never reuse the id written in it
  form.elements.visit_id.value = newId();
  statusEl.tabIndex = -1;
  window.addEventListener("online", flush);
  setInterval(flush, 30000);
  render();
  flush();
})();
