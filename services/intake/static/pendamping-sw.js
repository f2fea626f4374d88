/* The companion's page offline (issue 14): the page, its stylesheet and its script are kept
   on the phone. The page is asked from the network first (the caseload changes) and the kept
   copy answers when there is no connection; the stylesheet and script are served from the
   copy and refreshed behind it. Reports are not handled here: pendamping.js keeps them. */
var CACHE = "sinergi-pendamping-v1";
var PAGE = "/ui/pendamping";
var ASSETS = ["/ui/kit/sinergi.css", "/ui/static/lapangan.css", "/ui/static/pendamping.js"];

function keep(request, response) {
  var copy = response.clone();
  return caches.open(CACHE).then(function (c) { return c.put(request, copy); });
}

self.addEventListener("install", function (ev) {
  ev.waitUntil(Promise.all([PAGE].concat(ASSETS).map(function (url) {
    return fetch(url, {credentials: "same-origin"}).then(function (resp) {
      // not the login page in place of the caseload
      if (resp.ok && !resp.redirected) { return keep(url, resp); }
    }).catch(function () {});
  })).then(function () { return self.skipWaiting(); }));
});

self.addEventListener("activate", function (ev) {
  ev.waitUntil(caches.keys().then(function (keys) {
    return Promise.all(keys.filter(function (k) { return k !== CACHE; }).map(function (k) { return caches.delete(k); }));
  }).then(function () { return self.clients.claim(); }));
});

self.addEventListener("fetch", function (ev) {
  var req = ev.request;
  var url = new URL(req.url);
  if (req.method !== "GET" || url.origin !== self.location.origin) { return; }
  if (url.pathname === PAGE) {
    ev.respondWith(fetch(req).then(function (resp) {
      // a message (?pesan=) belongs to that moment: keep only the plain page
      if (resp.ok && !resp.redirected && !url.search) { keep(PAGE, resp); }
      return resp;
    }).catch(function () {
      return caches.match(PAGE).then(function (hit) {
        return hit || new Response("Tidak ada sambungan dan belum ada salinan halaman di ponsel.",
                                   {status: 503, headers: {"Content-Type": "text/plain; charset=utf-8"}});
      });
    }));
    return;
  }
  if (ASSETS.indexOf(url.pathname) >= 0) {
    ev.respondWith(caches.match(url.pathname).then(function (hit) {
      var fresh = fetch(req).then(function (resp) {
        if (resp.ok) { keep(url.pathname, resp); }
        return resp;
      });
      if (hit) { fresh.catch(function () {}); return hit; }
      return fresh;
    }));
  }
});
