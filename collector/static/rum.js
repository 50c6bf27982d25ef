/* tierscope real-user monitoring. Plain JavaScript, no build step.
 *
 * <script src="https://collector.example/rum.js" data-key="tsr_..." async></script>
 *
 * Measures the page load (Navigation Timing), the Web Vitals LCP, INP, CLS, FCP
 * and TTFB by their W3C / web.dev definitions, in-page fetch and XHR calls
 * (adding a W3C traceparent to same-origin and allow-listed ones so the server's
 * trace joins them), and script errors; sends them in batches to /v1/rum.
 * Options are data- attributes of this script tag: key, endpoint, site, user,
 * page, propagate (extra origins, space separated). API: window.tierscope.
 */
(function (w, d) {
  'use strict';
  var perf = w.performance, me = d.currentScript;
  if (!perf || !perf.timeOrigin || !me || (w.tierscope && w.tierscope.v) || !w.crypto) return;
  var cfg = me.dataset, key = cfg.key;
  if (!key) return;
  var endpoint = (cfg.endpoint || new URL(me.src, location.href).origin) + '/v1/rum?key=' +
    encodeURIComponent(key);
  var propagateTo = (cfg.propagate || '').split(/[\s,]+/).filter(Boolean);
  var ofetch = w.fetch, queue = [], timer = 0, errorsLeft = 20, requestsLeft = 300;
  var pageView = hex(16), pageName = cfg.page, user = cfg.user, site = cfg.site;
  var action = null; // {name, until}: names the requests a click or the API starts

  function hex(bytes) {
    var a = crypto.getRandomValues(new Uint8Array(bytes)), s = '';
    for (var i = 0; i < a.length; i++) s += (a[i] < 16 ? '0' : '') + a[i].toString(16);
    return s;
  }
  // Milliseconds to 0.1, within the 0..1 h the collector accepts.
  function r(x) { return Math.round(Math.min(Math.max(0, x), 3600000) * 10) / 10; }
  function epoch(t) { return perf.timeOrigin + t; }

  // A session is a browser's visits with no 30-minute pause (shared by tabs).
  function session() {
    try {
      var s = (localStorage.getItem('tierscope.session') || '').split('.'), t = Date.now();
      if (!s[0] || t - +s[1] > 1800000) s[0] = hex(16);
      localStorage.setItem('tierscope.session', s[0] + '.' + t);
      return s[0];
    } catch (e) { return undefined; }
  }
  var sessionId = session();

  // The page's name: the API or data-page, else the path with ids collapsed, so
  // that /invoices/4711 and /invoices/4712 are one page.
  function page() {
    if (pageName) return pageName;
    var tag = d.documentElement.getAttribute('data-tierscope-page');
    if (tag) return tag;
    return location.pathname.split('/').map(function (p) {
      return /^\d+$|\d.*\d.*\d|^[0-9a-f-]{16,}$/i.test(p) ? '{id}' : p;
    }).join('/') || '/';
  }

  // -- sending -----------------------------------------------------------------
  function push(item) {
    if (queue.length >= 100) return;
    queue.push(item);
    if (queue.length >= 20) flush();
    else if (!timer) timer = setTimeout(flush, 1000);
  }
  function flush() {
    clearTimeout(timer);
    timer = 0;
    while (queue.length) {
      var body = JSON.stringify({v: 1, session: sessionId, user: user, site: site, items: queue.splice(0, 40)});
      if (!(navigator.sendBeacon && navigator.sendBeacon(endpoint, body)) && ofetch) {
        ofetch.call(w, endpoint, {method: 'POST', body: body, keepalive: true, credentials: 'omit',
          headers: {'content-type': 'text/plain'}}).catch(function () {});
      }
    }
  }

  // -- Web Vitals ----------------------------------------------------------------
  var nav = perf.getEntriesByType && perf.getEntriesByType('navigation')[0];
  var activation = (nav && nav.activationStart) || 0;
  var hiddenAt = d.visibilityState === 'hidden' && !d.prerendering ? 0 : Infinity;
  var vitals = {}, lcpObserver;
  var clsSession = 0, clsFirst = 0, clsLast = 0;
  var slowest = [], byInteraction = {}, interactions = 0;

  var observers = [];
  function observe(type, fn, extra) {
    try {
      var po = new PerformanceObserver(function (list) { list.getEntries().forEach(fn); });
      po.observe(Object.assign({type: type, buffered: true}, extra));
      observers.push([po, fn]);
      return po;
    } catch (e) { return null; }
  }
  // Entries the browser has queued but not yet delivered count too (at page hide).
  function drain() { observers.forEach(function (o) { o[0].takeRecords().forEach(o[1]); }); }
  if (nav) vitals.ttfb = r(nav.responseStart - activation);
  observe('paint', function (e) {
    if (e.name === 'first-contentful-paint' && e.startTime < hiddenAt) vitals.fcp = r(e.startTime - activation);
  });
  // LCP: the last candidate before the first input or the page being hidden.
  function onLcp(e) { if (e.startTime < hiddenAt) vitals.lcp = r(e.startTime - activation); }
  lcpObserver = observe('largest-contentful-paint', onLcp);
  function stopLcp() {
    if (!lcpObserver) return;
    lcpObserver.takeRecords().forEach(onLcp);
    lcpObserver.disconnect();
    lcpObserver = null;
  }
  ['keydown', 'click'].forEach(function (t) { addEventListener(t, stopLcp, {once: true, capture: true}); });
  // CLS: the largest burst of unexpected layout shifts (session windows: shifts
  // less than 1 s apart, at most 5 s in all).
  observe('layout-shift', function (e) {
    if (e.hadRecentInput) return;
    if (clsSession && e.startTime - clsLast < 1000 && e.startTime - clsFirst < 5000) clsSession += e.value;
    else { clsSession = e.value; clsFirst = e.startTime; }
    clsLast = e.startTime;
    if (!(vitals.cls >= clsSession)) vitals.cls = Math.round(clsSession * 1e4) / 1e4;
  });
  // INP: per interaction its longest event; the worst interaction, ignoring one
  // for every 50 (a high percentile on pages with many interactions).
  function onEvent(e) {
    if (!e.interactionId) return;
    var known = byInteraction[e.interactionId];
    if (!known) {
      interactions++;
      known = byInteraction[e.interactionId] = {d: 0};
      slowest.push(known);
    }
    known.d = Math.max(known.d, e.duration);
    slowest.sort(function (a, b) { return b.d - a.d; });
    slowest.length = Math.min(slowest.length, 10);
    var count = perf.interactionCount || interactions;
    var pick = slowest[Math.min(slowest.length - 1, Math.floor(count / 50))];
    if (pick) vitals.inp = pick.d;
  }
  observe('event', onEvent, {durationThreshold: 40});
  observe('first-input', onEvent);

  // -- the page load -----------------------------------------------------------
  function pageLoad(final) {
    if (!nav) return null;
    var trace;
    (nav.serverTiming || []).forEach(function (s) { if (s.name === 'traceparent') trace = s.description; });
    var end = nav.loadEventEnd || perf.now();
    var item = {type: 'page_load', id: pageView, start: perf.timeOrigin, name: page(), url: location.href,
      final: final, vitals: vitals, timing: {
        fetchStart: r(nav.fetchStart), requestStart: r(nav.requestStart), responseStart: r(nav.responseStart),
        responseEnd: r(nav.responseEnd), domInteractive: r(nav.domInteractive),
        domContentLoaded: r(nav.domContentLoadedEventEnd), loadEnd: r(nav.loadEventEnd), end: r(end)}};
    if (nav.responseStatus) item.status = nav.responseStatus;
    if (/^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/.test(trace || '')) item.traceparent = trace;
    return item;
  }
  function loaded() { setTimeout(function () { push(pageLoad(false)); }, 0); }
  if (d.readyState === 'complete') loaded(); else addEventListener('load', loaded);
  function hidden() {
    stopLcp();
    drain();
    if (hiddenAt === Infinity) hiddenAt = perf.now();
    pending.splice(0).forEach(function (q) { done(q, true); });
    var item = pageLoad(true);
    if (item) queue.push(item);
    flush();
  }
  addEventListener('visibilitychange', function () { if (d.visibilityState === 'hidden') hidden(); }, true);
  addEventListener('pagehide', hidden, true);

  // -- in-page requests --------------------------------------------------------
  var pending = [], used = typeof WeakSet === 'function' ? new WeakSet() : null;
  addEventListener('click', function (e) {
    var el = e.target && e.target.closest && e.target.closest('[data-tierscope-action]');
    if (el) action = {name: el.getAttribute('data-tierscope-action'), until: perf.now() + 1000};
  }, true);

  function start(method, url) {
    var u = new URL(url, location.href);
    if (u.href.indexOf(endpoint) === 0 || !requestsLeft) return null;
    requestsLeft--;
    var named = action && perf.now() <= action.until ? action.name : null;
    return {type: 'request', id: hex(16), page_view: pageView, method: (method || 'GET').toUpperCase(),
      url: u.href, name: named || (method || 'GET').toUpperCase() + ' ' + u.pathname, t0: perf.now(),
      traceparent: u.origin === location.origin || propagateTo.indexOf(u.origin) >= 0 ?
        '00-' + hex(16) + '-' + hex(8) + '-01' : undefined};
  }
  // The Resource Timing entry of a request is there once its body has arrived;
  // without one (no Timing-Allow-Origin, or not yet) the wall clock is used.
  function entryOf(q) {
    var list = perf.getEntriesByName(q.url, 'resource');
    for (var i = 0; i < list.length; i++) {
      var e = list[i];
      if (e.startTime >= q.t0 - 1 && !(used && used.has(e)) &&
          (e.initiatorType === 'fetch' || e.initiatorType === 'xmlhttprequest')) {
        if (used) used.add(e);
        return e;
      }
    }
    return null;
  }
  function done(q, now) {
    var e = entryOf(q);
    if (!e && !now && perf.now() - q.t0 < 10000) {
      if (pending.indexOf(q) < 0) pending.push(q);
      setTimeout(function () { if (pending.indexOf(q) >= 0) { pending.splice(pending.indexOf(q), 1); done(q); } }, 100);
      return;
    }
    var s = e ? e.startTime : q.t0, end = e ? e.responseEnd - s : (q.t1 || perf.now()) - q.t0;
    q.start = epoch(s);
    q.timing = e ? {fetchStart: r(e.fetchStart - s), requestStart: r(e.requestStart && e.requestStart - s),
      responseStart: r(e.responseStart && e.responseStart - s), responseEnd: r(end), end: r(end)} :
      {responseEnd: r(end), end: r(end)};
    delete q.t0;
    delete q.t1;
    if (q.traceparent === undefined) delete q.traceparent;
    push(q);
  }

  if (ofetch) {
    w.fetch = function (input, init) {
      var q = null;
      try {
        var isReq = typeof Request === 'function' && input instanceof Request;
        q = start((init && init.method) || (isReq && input.method), isReq ? input.url : String(input));
        if (q && q.traceparent) {
          var h = new Headers((init && init.headers) || (isReq && input.headers) || undefined);
          if (h.has('traceparent')) q.traceparent = h.get('traceparent'); else h.set('traceparent', q.traceparent);
          init = Object.assign({}, init, {headers: h});
        }
      } catch (e) { q = null; }
      var p = ofetch.call(this, input, init);
      if (q) {
        p.then(function (res) { q.status = res.status; q.t1 = perf.now(); done(q); },
          function () { q.status = 0; q.t1 = perf.now(); done(q); });
      }
      return p;
    };
  }
  var X = w.XMLHttpRequest && XMLHttpRequest.prototype;
  if (X) {
    var oopen = X.open, osend = X.send;
    X.open = function (method, url) {
      try { this._ts = start(method, url); } catch (e) { this._ts = null; }
      return oopen.apply(this, arguments);
    };
    X.send = function () {
      var q = this._ts, x = this;
      if (q) {
        q.t0 = perf.now();
        try { if (q.traceparent) x.setRequestHeader('traceparent', q.traceparent); } catch (e) { /* sent */ }
        x.addEventListener('loadend', function () { q.status = x.status; q.t1 = perf.now(); done(q); });
      }
      return osend.apply(this, arguments);
    };
  }

  // -- script errors -----------------------------------------------------------
  function error(message, source, stack) {
    if (errorsLeft-- <= 0) return;
    push({type: 'error', id: hex(16), page_view: pageView, time: Date.now(), page: page(),
      message: String(message || 'error').slice(0, 1024), source: source, stack: stack ? String(stack).slice(0, 8000) : undefined});
  }
  addEventListener('error', function (e) {
    if (e.target && e.target !== w) return; // a resource that failed to load, not a script error
    error(e.message, e.filename ? (e.filename + ':' + e.lineno + ':' + e.colno).slice(0, 2048) : undefined,
      e.error && e.error.stack);
  });
  addEventListener('unhandledrejection', function (e) {
    var why = e.reason;
    error('unhandled rejection: ' + (why && why.message ? why.message : why), undefined, why && why.stack);
  });

  w.tierscope = {
    v: 1,
    /** Names the requests started in the next second ("Post invoice"). */
    action: function (name) { action = {name: String(name).slice(0, 256), until: perf.now() + 1000}; },
    page: function (name) { pageName = String(name).slice(0, 256); },
    user: function (id) { user = id == null ? undefined : String(id).slice(0, 256); },
    site: function (name) { site = name == null ? undefined : String(name).slice(0, 128); },
    flush: flush,
    vitals: function () { return Object.assign({}, vitals); }
  };
})(window, document);
